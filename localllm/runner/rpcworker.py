"""A llama.cpp RPC worker: `python -I -m localllm.runner.rpcworker [--host H] [--port P] [--device D] ...`.

What `localllm worker` runs (the CLI execs this module: llama.cpp lives under runner/ only). It serves this
machine's devices to daemons whose LOCALLLM_RPC_SERVERS name it, as llama.cpp's `rpc-server` does, through
the RPC backend of the llama.cpp that llama-cpp-python built (`rpc.start_server`). It serves one daemon's
model at a time, and runs until it is stopped (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import sys
from pathlib import Path

from ..config.values import is_loopback_name

DEFAULT_PORT = 50052  # rpc-server's

WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
WARNING: Host ('{host}') is not a loopback address.
         Never expose the RPC server to an open network!
         This is an experimental feature and is not secure!
         (llama.cpp's RPC protocol has no authentication and no encryption: whoever reaches
         this port can run computations on this machine and read what it holds. Bind it to
         a private network that only your localllm daemons share.)
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="localllm worker", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--device", action="append", default=[], help="device to serve (repeat, or comma-separate)")
    p.add_argument("--cache", default=None, help="directory of the local tensor cache (none by default)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: half the cores, as rpc-server)")
    return p


def _line_buffered_stdout() -> None:
    """llama.cpp prints its server's lines with printf: make C's stdout line-buffered so they show at once."""
    try:
        libc = ctypes.CDLL(None)
        stdout = ctypes.c_void_p.in_dll(libc, "stdout")
        libc.setvbuf(stdout, None, 1, 0)  # _IOLBF
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"localllm worker: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    if args.threads < 0:
        print("localllm worker: --threads must be 0 or more", file=sys.stderr)
        return 2
    from . import rpc

    if not rpc.supported():
        print(
            "localllm worker: this llama.cpp was built without its RPC backend; reinstall localllm with "
            "./install.sh (it builds llama.cpp with -DGGML_RPC=on)",
            file=sys.stderr,
        )
        return 1
    names = [n.strip() for item in args.device for n in item.split(",") if n.strip()]
    try:
        devices = rpc.serving_devices(names)
    except rpc.RpcError as exc:
        print(f"localllm worker: {exc}", file=sys.stderr)
        return 2
    if not devices:
        print("localllm worker: no devices found", file=sys.stderr)
        return 1
    cache = None
    if args.cache:
        path = Path(args.cache).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"localllm worker: cannot create the cache directory {path}: {exc}", file=sys.stderr)
            return 1
        cache = str(path)
    if not is_loopback_name(args.host):
        print(WARNING.format(host=args.host), file=sys.stderr, flush=True)
    threads = args.threads or max(1, (len(__import__("os").sched_getaffinity(0)) or 2) // 2)
    host = f"[{args.host}]" if ":" in args.host else args.host
    endpoint = f"{host}:{args.port}"
    print(
        f"localllm worker: serving {', '.join(f'{d.name} ({d.description})' for d in devices)} on {endpoint}; "
        f"point a daemon at it with LOCALLLM_RPC_SERVERS={endpoint}",
        file=sys.stderr,
        flush=True,
    )
    _line_buffered_stdout()
    # The server runs in C until the process ends: let SIGINT end it at once, as it does rpc-server.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    rpc.start_server(endpoint, cache, threads, devices)
    print(f"localllm worker: the RPC server could not listen on {endpoint} (see above)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
