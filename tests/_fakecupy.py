"""A fake ``cupy`` for testing array-namespace dispatch without a GPU.

Importing this module registers ``sys.modules["fakecupy"]``: a module exposing, through
numpy, the cupy-compatible functions the tasks use, and whose arrays
(:class:`FakeArray`) behave like cupy's where it matters for dispatch bugs:

- ``type(array).__module__ == "fakecupy"``, so ``array_namespace`` returns the fake module;
- numpy functions and ufuncs refuse them (``np.sum(array)``, ``np.add(array, 1)``,
  ``numpy_array * array`` raise TypeError), as does implicit host conversion
  (``np.asarray(array)`` raises TypeError, like cupy's); ``.get()`` and
  ``fakecupy.asnumpy`` are the explicit ways to the host;
- the fake module's functions refuse numpy arrays (like cupy, which never mixes host and
  device arrays), except ``asarray``/``array`` which move host data to the "device";
- reductions return 0-d arrays, not numpy scalars.

``FakeArray`` wraps a numpy array rather than subclassing ``numpy.ndarray``: numpy never
calls ``__array__`` on an ndarray subclass (``np.asarray`` returns it as is), so a
subclass could not refuse implicit host conversion, and ``to_numpy`` would take it for a
numpy array. Only functions listed in ``FUNCTIONS`` exist on the module, all of which cupy
also provides: a task that calls anything else fails here as it would on a GPU.

Usage::

    from _fakecupy import fakecupy          # or the ``fakecupy`` fixture of tests/conftest.py
    device = fakecupy.asarray(host)         # a FakeArray
    host_again = fakecupy.asnumpy(device)
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["FUNCTIONS", "FakeArray", "asarray", "asnumpy", "fakecupy"]

MODULE_NAME = "fakecupy"

#: numpy functions exposed by the fake module (all exist in cupy with numpy's semantics).
FUNCTIONS = (
    "add subtract multiply divide true_divide floor_divide negative remainder mod fmax fmin "
    "greater greater_equal less less_equal equal not_equal bitwise_and bitwise_or bitwise_not invert "
    "abs absolute all allclose any arange arccos arcsin arctan arctan2 argmax argmin argsort around "
    "broadcast_arrays broadcast_to ceil clip concatenate copy cos count_nonzero cumsum deg2rad diff dot "
    "einsum empty empty_like exp expand_dims flatnonzero floor full full_like hypot isclose isfinite isinf "
    "isnan linspace log log10 logical_and logical_not logical_or logical_xor matmul max maximum mean median "
    "meshgrid min minimum moveaxis nanmax nanmean nanmedian nanmin nanstd nansum nanvar nonzero ones "
    "ones_like pad percentile power prod quantile rad2deg ravel repeat reshape round searchsorted sign sin sort "
    "sqrt square squeeze stack std sum swapaxes take take_along_axis tan tensordot tile transpose unique "
    "var where zeros zeros_like"
).split()

_CONSTANTS = (
    "nan inf pi e newaxis float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64 "
    "bool_ intp complex64 complex128 dtype finfo iinfo"
).split()

#: ndarray methods that cupy arrays also have.
_METHODS = frozenset(
    "all any argmax argmin argsort astype clip copy cumsum dot fill flatten item max mean min nonzero prod "
    "ravel repeat reshape round sort squeeze std sum swapaxes take tolist transpose var".split()
)


def _refuse(what: str) -> TypeError:
    return TypeError(f"{what} on a fakecupy array: call the array's namespace (xp = array_namespace(...)) instead")


def _unwrap(value: Any, *, allow_host: bool = False) -> Any:
    if isinstance(value, FakeArray):
        return value._data
    if isinstance(value, np.ndarray) and not allow_host and value.ndim > 0:
        raise TypeError(
            f"a numpy array of shape {value.shape} was mixed with fakecupy arrays; move it with fakecupy.asarray"
        )
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(item, allow_host=allow_host) for item in value)
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return FakeArray(value)
    if isinstance(value, np.generic):
        return FakeArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(item) for item in value)
    if isinstance(value, list):
        return [_wrap(item) for item in value]
    return value


def _wrap_function(function: Callable[..., Any], *, allow_host: bool = False) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_unwrap(arg, allow_host=allow_host) for arg in args)
        kwargs = {key: _unwrap(value, allow_host=allow_host) for key, value in kwargs.items()}
        return _wrap(function(*args, **kwargs))

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = f"fakecupy.{function.__name__}: numpy's, on fakecupy arrays."
    return wrapper


def _operator(name: str) -> Callable[..., Any]:
    def method(self: FakeArray, *others: Any) -> Any:
        result = getattr(self._data, name)(*(_unwrap(other) for other in others))
        if result is NotImplemented:
            return result
        if name.startswith("__i") and name not in ("__invert__", "__index__"):
            return self
        return _wrap(result)

    method.__name__ = name
    return method


class FakeArray:
    """A device array of the fake module (wraps a numpy array; see the module docstring)."""

    __slots__ = ("_data",)
    __array_priority__ = 1000

    def __init__(self, data: np.ndarray) -> None:
        self._data = data

    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    nbytes = property(lambda self: self._data.nbytes)
    itemsize = property(lambda self: self._data.itemsize)
    T = property(lambda self: FakeArray(self._data.T))

    def get(self) -> np.ndarray:
        """Copy to host memory, like ``cupy.ndarray.get``."""
        return self._data.copy()

    def __getattr__(self, name: str) -> Any:
        if name in _METHODS:
            method = getattr(self._data, name)
            return _wrap_function(method)
        raise AttributeError(f"'FakeArray' object has no attribute {name!r}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed; use .get() or fakecupy.asnumpy()")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise _refuse(f"numpy.{func.__name__} was called")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        raise _refuse(f"numpy ufunc {ufunc.__name__}.{method} was called")

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._data[_unwrap(key, allow_host=True)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[_unwrap(key, allow_host=True)] = _unwrap(value)

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[Any]:
        return (_wrap(row) for row in self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def __float__(self) -> float:
        return float(self._data)

    def __int__(self) -> int:
        return int(self._data)

    def __repr__(self) -> str:
        return f"fakecupy.{self._data!r}"


for _name in "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift lt le gt ge eq ne".split():
    for _form in (f"__{_name}__", f"__r{_name}__", f"__i{_name}__"):
        if hasattr(np.ndarray, _form):
            setattr(FakeArray, _form, _operator(_form))
for _form in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(FakeArray, _form, _operator(_form))
FakeArray.__module__ = MODULE_NAME


def asarray(value: Any, dtype: Any = None) -> FakeArray:
    """Move host data (or a fake array) to the fake device, like ``cupy.asarray``."""
    return FakeArray(np.asarray(_unwrap(value, allow_host=True), dtype=dtype))


def array(value: Any, dtype: Any = None, copy: bool = True) -> FakeArray:
    """Copy host data (or a fake array) to the fake device, like ``cupy.array``."""
    return FakeArray(np.array(_unwrap(value, allow_host=True), dtype=dtype, copy=copy))


def asnumpy(value: Any) -> np.ndarray:
    """Copy to host memory, like ``cupy.asnumpy``."""
    if isinstance(value, FakeArray):
        return value.get()
    return np.asarray(value)


def _build_module() -> types.ModuleType:
    module = types.ModuleType(MODULE_NAME, "Fake cupy: numpy underneath, cupy's dispatch rules on top.")
    for name in FUNCTIONS:
        setattr(module, name, _wrap_function(getattr(np, name)))
    for name in _CONSTANTS:
        setattr(module, name, getattr(np, name))
    module.ndarray = FakeArray
    module.asarray = asarray
    module.array = array
    module.asnumpy = asnumpy
    module.FakeArray = FakeArray
    return module


if MODULE_NAME in sys.modules:  # imported again under another name: share one fake module
    fakecupy = sys.modules[MODULE_NAME]
    FakeArray = fakecupy.FakeArray  # type: ignore[misc]  # noqa: F811
    asarray, array, asnumpy = fakecupy.asarray, fakecupy.array, fakecupy.asnumpy
else:
    fakecupy = sys.modules[MODULE_NAME] = _build_module()
