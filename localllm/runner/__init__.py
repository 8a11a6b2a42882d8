"""The model runner: a child process per loaded model (`main`, `engine`) and the daemon's handle on it
(`process`). Importing this package does not import llama_cpp; only `engine` does."""
