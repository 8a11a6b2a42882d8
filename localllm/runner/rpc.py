"""llama.cpp's RPC backend, reached through ggml's backend registry in the libraries llama-cpp-python ships.

llama-cpp-python binds only `llama_supports_rpc()`; the rest is ggml's C API, called here with ctypes: the
"RPC" backend's proc addresses `ggml_backend_rpc_add_server` (a server's devices, registered with
`ggml_backend_register` so that llama.cpp's model loader uses them) and `ggml_backend_rpc_start_server` (the
worker side, what llama.cpp's `rpc-server` runs), and each device's name, description and free memory.

Runs inside a runner or worker process only (it loads llama.cpp). A call into ggml that meets a server
which is not there aborts the process (llama.cpp's RPC client treats a lost server as fatal), so endpoints
are probed over TCP first (`reachable`).
"""

from __future__ import annotations

import ctypes
import socket
from dataclasses import dataclass
from typing import Any

import llama_cpp
from llama_cpp import llama_cpp as _bindings

from ..config.values import split_endpoint

# ggml's functions are looked up through libllama's handle, so they are those of the libggml it was linked
# with (libggml.so.0): the wheel ships copies of each library under several names (libggml.so too), and a
# copy loaded separately would have a registry of its own that llama.cpp never sees.
_lib: Any = _bindings._lib
_vp = ctypes.c_void_p
_size = ctypes.c_size_t


def _bind(name: str, restype: Any, *argtypes: Any) -> Any:
    return ctypes.CFUNCTYPE(restype, *argtypes)((name, _lib))


_reg_by_name = _bind("ggml_backend_reg_by_name", _vp, ctypes.c_char_p)
_reg_proc = _bind("ggml_backend_reg_get_proc_address", _vp, _vp, ctypes.c_char_p)
_reg_name = _bind("ggml_backend_reg_name", ctypes.c_char_p, _vp)
_reg_dev_count = _bind("ggml_backend_reg_dev_count", _size, _vp)
_reg_dev_get = _bind("ggml_backend_reg_dev_get", _vp, _vp, _size)
_register = _bind("ggml_backend_register", None, _vp)
_dev_count = _bind("ggml_backend_dev_count", _size)
_dev_get = _bind("ggml_backend_dev_get", _vp, _size)
_dev_by_name = _bind("ggml_backend_dev_by_name", _vp, ctypes.c_char_p)
_dev_name = _bind("ggml_backend_dev_name", ctypes.c_char_p, _vp)
_dev_description = _bind("ggml_backend_dev_description", ctypes.c_char_p, _vp)
_dev_memory = _bind("ggml_backend_dev_memory", None, _vp, ctypes.POINTER(_size), ctypes.POINTER(_size))
_dev_type = _bind("ggml_backend_dev_type", ctypes.c_int, _vp)
_dev_reg = _bind("ggml_backend_dev_backend_reg", _vp, _vp)

# enum ggml_backend_dev_type
DEVICE_CPU, DEVICE_GPU, DEVICE_IGPU, DEVICE_ACCEL = 0, 1, 2, 3

_ADD_SERVER = ctypes.CFUNCTYPE(_vp, ctypes.c_char_p)
_START_SERVER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, _size, _size, ctypes.POINTER(_vp))


class RpcError(Exception):
    """The RPC backend is missing from this build, or a server could not be added."""


@dataclass(frozen=True)
class Device:
    """A ggml device: `name` (RPC0, CPU, CUDA0 ...), `description` (an RPC device's: its server's address),
    `index` (its place among its server's devices) and its memory in bytes when it was asked."""

    handle: int
    name: str
    description: str
    kind: int
    free: int
    total: int
    endpoint: str = ""  # an RPC device's server, "" for a device of this machine
    index: int = 0


def supported() -> bool:
    """Whether this llama.cpp was built with its RPC backend (-DGGML_RPC=on)."""
    return bool(llama_cpp.llama_supports_rpc())


def _rpc_reg() -> int:
    if not supported():
        raise RpcError("this llama.cpp was built without its RPC backend: reinstall with ./install.sh")
    reg = _reg_by_name(b"RPC")
    if not reg:
        raise RpcError("llama.cpp's RPC backend is not registered")
    return int(reg)


def _proc(name: str) -> int:
    addr = _reg_proc(_rpc_reg(), name.encode())
    if not addr:
        raise RpcError(f"llama.cpp's RPC backend has no {name}")
    return int(addr)


def device(handle: int, endpoint: str = "", index: int = 0) -> Device:
    free, total = _size(0), _size(0)
    _dev_memory(handle, ctypes.byref(free), ctypes.byref(total))
    return Device(
        handle,
        (_dev_name(handle) or b"").decode(),
        (_dev_description(handle) or b"").decode(),
        int(_dev_type(handle)),
        int(free.value),
        int(total.value),
        endpoint,
        index,
    )


def devices() -> list[Device]:
    """Every device registered now (this machine's and RPC servers' added so far)."""
    out = []
    for i in range(int(_dev_count())):
        handle = int(_dev_get(i))
        reg = _dev_reg(handle)
        rpc = bool(reg) and (_reg_name(reg) or b"") == b"RPC"
        out.append(device(handle, (_dev_description(handle) or b"").decode() if rpc else ""))
    return out


def local_gpu() -> bool:
    """Whether this machine has a GPU llama.cpp can offload to (llama_supports_gpu_offload() also says yes
    for a mere RPC backend)."""
    return any(d.kind in (DEVICE_GPU, DEVICE_IGPU) and not d.endpoint for d in devices())


def reachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """None if a server listens at `endpoint` (host:port), else why not."""
    host, port = split_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def add_server(endpoint: str) -> list[Device]:
    """Register the devices of the RPC server at `endpoint` (llama.cpp's model loader then splits layers onto
    them, as `--rpc` does); it must be `reachable` (ggml aborts the process on a server it cannot reach)."""
    add = _ADD_SERVER(_proc("ggml_backend_rpc_add_server"))
    reg = add(endpoint.encode())
    if not reg:
        raise RpcError(f"the RPC server at {endpoint} offers no devices")
    _register(reg)
    return [device(int(_reg_dev_get(reg, i)), endpoint, i) for i in range(int(_reg_dev_count(reg)))]


def by_name(name: str) -> Device | None:
    handle = _dev_by_name(name.encode())
    return device(int(handle)) if handle else None


def serving_devices(names: list[str]) -> list[Device]:
    """The devices a worker offers: those named, else this machine's GPUs, else its CPU (as rpc-server)."""
    if names:
        found = []
        for name in names:
            dev = by_name(name)
            if dev is None:
                known = ", ".join(d.name for d in devices() if not d.endpoint)
                raise RpcError(f"unknown device {name!r} (this machine has: {known})")
            found.append(dev)
        return found
    local = [d for d in devices() if not d.endpoint]
    gpus = [d for d in local if d.kind not in (DEVICE_CPU, DEVICE_ACCEL)]
    return gpus or [d for d in local if d.kind == DEVICE_CPU][:1]


def start_server(endpoint: str, cache_dir: str | None, threads: int, serve: list[Device]) -> None:
    """Serve `serve` at `endpoint` until the process ends (returns only when the server could not start)."""
    start = _START_SERVER(_proc("ggml_backend_rpc_start_server"))
    handles = (_vp * len(serve))(*(d.handle for d in serve))
    start(endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, len(serve), handles)
