"""Setting the fields of llama.cpp's parameter structs (ctypes), by name, refusing a name the binding lacks.

A ctypes `Structure` takes any attribute: `params.use_mmap = False` on a struct that has no `use_mmap` field
(llama.cpp replaced it with `load_mode`) sets a Python attribute and changes nothing in C. Every parameter
the runner sets goes through `set_fields`, so a field renamed or dropped by a new llama-cpp-python fails the
load loudly (every e2e test that loads a model) instead of being ignored.
"""

from __future__ import annotations

import ctypes
from typing import Any


def field_names(struct: type[ctypes.Structure]) -> frozenset[str]:
    return frozenset(name for name, *_ in struct._fields_)


def set_fields(params: ctypes.Structure, **values: Any) -> None:
    """Set `values` on `params`; AttributeError naming the field when the struct has no such field."""
    unknown = sorted(set(values) - field_names(type(params)))
    if unknown:
        raise AttributeError(f"llama.cpp's {type(params).__name__} has no field {unknown[0]!r} in this build")
    for name, value in values.items():
        setattr(params, name, value)
