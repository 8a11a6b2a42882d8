"""How localllm starts Python children of its own: model runners, render workers, RPC probes, and the RPC server
`localllm worker` becomes. One command line for all of them, here at the bottom of the layers so that each
starter (runner/, chat/, cli/) uses it.

`python -m module` puts the working directory first on `sys.path`: a `json.py` or `random.py` in the directory
where `localllm serve` was started would be imported by every runner in place of the standard library's, and a
daemon started inside a checkout would run the checkout's `localllm/` in its runners instead of the installed
one. So children run in isolated mode (`-I`): neither the working directory nor the script's is on `sys.path`,
the `PYTHON*` variables (`PYTHONPATH`, `PYTHONSTARTUP`, `PYTHONHOME`...) are ignored, and so is the user's
site-packages. The working directory itself is kept (a relative `LOCALLLM_MODELS` or `LOCALLLM_CACHE_DIR` still
means what it meant to the daemon); it just no longer decides what Python imports.
"""

from __future__ import annotations

import os
import sys

ISOLATED = "-I"
# CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi, which the scheduler reads each GPU's memory
# from (and CUDA_VISIBLE_DEVICES's indices are matched against), numbers them by PCI bus.
CUDA_ORDER = ("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def python_command(module: str, *args: str) -> list[str]:
    """The command line that runs `module` of this installation in a child Python, isolated (see above)."""
    return [sys.executable, ISOLATED, "-m", module, *args]


def llama_environment() -> dict[str, str]:
    """The environment of a child that loads llama.cpp (a runner, `localllm worker`): this one, with CUDA told to
    number the GPUs as nvidia-smi does, so that `main_gpu`, `CUDA_VISIBLE_DEVICES` and the memory the scheduler
    reads for each GPU all mean the same GPU. A CUDA_DEVICE_ORDER already set is kept."""
    env = dict(os.environ)
    env.setdefault(*CUDA_ORDER)
    return env
