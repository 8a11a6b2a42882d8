"""The model runner: a child process per loaded model (`main`, `engine`), the daemon's handle on it (`process`),
and the typed boundary between the two (`protocol`, naming what `loadspec`, `requests`, `events` and `wire`
hold). Importing this package does not import llama_cpp; only `engine`, `sampler` and `rpc` do."""
