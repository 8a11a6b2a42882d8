"""Who may use the daemon, and what each may spend: `keysfile` (API keys and apps, as `localllm keys` writes
them), `tokens` (apps' signed access tokens), `authenticator` (the daemon's checks of a request's
credential), `principal` (who the current request comes from: the owner of what it keeps), `quota` (daily
token counts, reserved before a generation)."""
