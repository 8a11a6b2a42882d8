"""The `localllm` command line: a client of the daemon over HTTP (installed as `localllm_cli`)."""

from __future__ import annotations
