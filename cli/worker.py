"""`localllm worker`: serve this machine's devices to daemons as a llama.cpp RPC worker.

The worker is llama.cpp's RPC server, run by `localllm.runner.rpcworker` (llama.cpp is loaded under
runner/ only): this command replaces itself with that module (exec), so signals reach the server directly.
"""

from __future__ import annotations

import os
import sys

import click

from localllm.domain.child import llama_environment, python_command

DEFAULT_PORT = 50052


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="TCP port.")
@click.option(
    "--device",
    "devices",
    multiple=True,
    metavar="NAME",
    help="Device to serve, e.g. CUDA0 or CPU (repeat it; default: the GPUs, else the CPU).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory where the worker keeps the tensors it receives, so a model loads faster the next time.",
)
@click.option("--threads", type=click.IntRange(0, 1024), default=0, help="CPU threads (0: half the cores).")
def worker(host: str, port: int, devices: tuple[str, ...], cache: str | None, threads: int) -> None:
    """Serve this machine's CPU or GPUs to localllm daemons (llama.cpp's RPC server).

    A daemon started with LOCALLLM_RPC_SERVERS=HOST:PORT,... splits each model's layers across the
    workers it names. The RPC protocol has no authentication: keep workers on loopback or a private
    network that only your daemons reach.
    """
    argv = python_command("localllm.runner.rpcworker", "--host", host, "--port", str(port))
    for device in devices:
        argv += ["--device", device]
    if cache:
        argv += ["--cache", cache]
    if threads:
        argv += ["--threads", str(threads)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, llama_environment())
