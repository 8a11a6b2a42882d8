"""runner/cstruct.py: a parameter a ctypes struct lacks is refused, not silently set on the Python object."""

from __future__ import annotations

import ctypes

import pytest

from localllm.runner.cstruct import field_names, set_fields


class Params(ctypes.Structure):
    _fields_ = [("n_gpu_layers", ctypes.c_int32), ("load_mode", ctypes.c_int)]


def test_a_known_field_is_set_in_the_struct() -> None:
    params = Params()
    set_fields(params, load_mode=0, n_gpu_layers=3)
    assert (params.load_mode, params.n_gpu_layers) == (0, 3)
    assert field_names(Params) == {"n_gpu_layers", "load_mode"}


def test_a_field_the_struct_lacks_is_refused_and_nothing_is_set() -> None:
    params = Params()
    params.stray = 1  # what a plain assignment does: a Python attribute, nothing in C
    with pytest.raises(AttributeError, match="Params has no field 'use_mmap'"):
        set_fields(params, n_gpu_layers=5, use_mmap=False)
    assert not hasattr(params, "use_mmap") and params.n_gpu_layers == 0, "nothing was set"
