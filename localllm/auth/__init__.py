"""Who may use the daemon: API keys, signed access tokens and quotas."""
