"""What the daemon tells its operator: structured logs and Prometheus metrics."""
