"""GPU use by the units: the cupy namespace, the errors that mean "use the CPU", the fallback.

cupy is imported only inside :func:`gpu_namespace`, on the worker that runs a GPU unit.
A unit that fails on the GPU with an expected error is recomputed on the CPU with the same
code (the same task functions, on numpy), and the fallback is logged and reported.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from ..errors import GpuUnavailableError
from ..messages import msg

__all__ = ["GPU_ERRORS", "gpu_error_types", "gpu_namespace", "run_with_gpu_fallback"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors a GPU attempt may raise that mean "run it on the CPU instead": no cupy, no device,
#: host memory; :func:`gpu_error_types` adds the module's own out-of-memory, CUDA, cuBLAS
#: and compiler errors. A plain ``RuntimeError`` (or any other exception) is a bug and
#: propagates rather than becoming a silent CPU rerun.
GPU_ERRORS: tuple[type[BaseException], ...] = (ImportError, MemoryError, GpuUnavailableError)

# Error classes of a cupy-like module, looked up lazily as attribute paths on the module.
_MODULE_ERROR_PATHS = (
    "cuda.memory.OutOfMemoryError",
    "cuda.runtime.CUDARuntimeError",
    "cuda.driver.CUDADriverError",
    "cuda.compiler.CompileException",
    "cuda.cublas.CUBLASError",
    "cuda.nvrtc.NVRTCError",
    "OutOfMemoryError",
)


def gpu_error_types(xp_gpu: ModuleType | None) -> tuple[type[BaseException], ...]:
    """Return :data:`GPU_ERRORS` plus the error classes ``xp_gpu`` defines (cupy's OOM, CUDA errors).

    The module's classes are looked up when called, never at import time, and missing ones
    are skipped, so any cupy version (or a test double) works.
    """
    found: list[type[BaseException]] = list(GPU_ERRORS)
    if xp_gpu is None:
        return tuple(found)
    for path in _MODULE_ERROR_PATHS:
        target: Any = xp_gpu
        for name in path.split("."):
            try:
                target = getattr(target, name)
            except (AttributeError, ImportError):
                target = None
                break
        if isinstance(target, type) and issubclass(target, BaseException) and target not in found:
            found.append(target)
    return tuple(found)


def gpu_namespace() -> ModuleType:
    """Import cupy and check that a device is usable.

    Raises
    ------
    GpuUnavailableError
        When cupy is not installed or no CUDA device answers.
    """
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as err:
        raise GpuUnavailableError(
            f"cupy is not installed on this worker ({err}); install zemosaic-dask[gpu] (CUDA 12) or "
            "zemosaic-dask[gpu-cuda13]"
        ) from err
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise GpuUnavailableError("cupy found no CUDA device on this worker")
    except gpu_error_types(cupy) as err:
        raise GpuUnavailableError(f"no usable CUDA device on this worker: {err}") from err
    return cupy


def run_with_gpu_fallback(
    unit: str, work: Callable[[ModuleType], T], *, use_gpu: bool, namespace: Callable[[], ModuleType] | None = None
) -> tuple[T, str | None]:
    """Run ``work(xp)`` on the GPU when asked, else (or after a GPU failure) on the CPU.

    Parameters
    ----------
    unit : str
        Name of the unit, for the log and the report (``stack-region-0-1``).
    work : callable
        The unit's computation, given the array namespace to use.
    use_gpu : bool
        Whether the plan routes this unit to a GPU.
    namespace : callable, optional
        Returns the GPU namespace (default :func:`gpu_namespace`).

    Returns
    -------
    result
        What ``work`` returned.
    fallback : str or None
        Why the unit ran on the CPU although the GPU was asked for; None otherwise.
    """
    if not use_gpu:
        return work(np), None
    get = namespace or gpu_namespace
    xp: ModuleType | None = None
    try:
        xp = get()
        return work(xp), None
    except gpu_error_types(xp) as err:
        reason = f"{type(err).__name__}: {err}"
        log.warning(msg("gpu_fallback", unit=unit, reason=reason))
    return work(np), reason
