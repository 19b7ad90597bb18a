"""Array-module dispatch: one implementation for numpy (CPU) and cupy (GPU).

Task functions call :func:`array_namespace` on their inputs and use only the returned
module, so the same code runs on the CPU in every test and on a GPU worker with cupy.
cupy is never imported here: an array whose type comes from cupy brings its own module.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["array_namespace", "is_numpy_namespace", "to_numpy"]


def array_namespace(*arrays: Any) -> ModuleType:
    """Return the array module (numpy, cupy, ...) that owns the given arrays.

    Parameters
    ----------
    *arrays : array-like
        Arrays of one namespace; Python scalars and None are ignored.

    Returns
    -------
    module
        ``numpy`` for numpy arrays, the array's own top-level module otherwise
        (``cupy`` for cupy arrays, a fake module in dispatch tests).

    Raises
    ------
    TypeError
        When arrays from different namespaces are mixed.
    """
    found: ModuleType | None = None
    for array in arrays:
        if array is None or isinstance(array, (int, float, complex, bool)):
            continue
        module = _module_of(array)
        if found is None:
            found = module
        elif module is not found:
            raise TypeError(
                f"arrays from different namespaces ({found.__name__} and {module.__name__}) were mixed; "
                "move them to one device first"
            )
    return found if found is not None else np


def _module_of(array: Any) -> ModuleType:
    kind = type(array)
    if kind is np.ndarray or isinstance(array, np.generic):
        return np
    top = kind.__module__.split(".")[0]
    if top not in sys.modules:
        namespace = getattr(array, "__array_namespace__", None)
        if namespace is not None:
            return namespace()
    module = sys.modules.get(top)
    if module is None and isinstance(array, np.ndarray):
        return np
    if module is None:
        raise TypeError(f"unsupported array type {type(array).__name__}")
    return module


def is_numpy_namespace(xp: ModuleType) -> bool:
    """Return True when ``xp`` is numpy itself."""
    return xp is np


def to_numpy(array: Any) -> np.ndarray:
    """Copy an array to host memory as numpy (a no-op for numpy input)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if callable(get):
        return np.asarray(get())
    return np.asarray(array)
