"""Ask one RPC worker how much memory it has: `python -I -m localllm.runner.rpcprobe host:port`.

Prints one JSON line: {"free": bytes, "total": bytes, "devices": n} over the worker's devices, or
{"error": why}. Run by `workers.probe` in the daemon (which never loads llama.cpp itself).
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever llama.cpp prints goes to stderr, not into the answer
    from . import rpc

    endpoint = args[0]
    if not rpc.supported():
        answer: dict[str, object] = {"error": "this llama.cpp was built without its RPC backend"}
    elif (why := rpc.reachable(endpoint)) is not None:
        answer = {"error": why}
    else:
        try:
            devices = rpc.add_server(endpoint)
        except rpc.RpcError as exc:
            answer = {"error": str(exc)}
        else:
            answer = {
                "free": sum(d.free for d in devices),
                "total": sum(d.total for d in devices),
                "devices": len(devices),
            }
    out.write(json.dumps(answer) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
