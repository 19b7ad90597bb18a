"""One backend for all channels of the two-pass coverage renormalisation.

ZeMosaic once computed some colour channels of its coverage renormalisation on the GPU and
the others on the CPU after a partial GPU failure; the channels then disagreed and the
mosaic took a colour cast. :func:`run_channels_on_one_backend` makes that impossible: every
channel is computed on the GPU, and if any channel fails there (an expected GPU error or a
non-finite result where the CPU gives a finite one) the whole GPU attempt is dropped, one
warning is logged, and every channel is recomputed on the CPU.

Whether the GPU may be used at all is decided by the assembly plan:
:func:`zemosaic_dask.plans.assembly.two_pass_use_gpu` returns ``requested and plan.use_gpu``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..messages import msg
from ..tasks.namespace import to_numpy
from .gpu import GPU_ERRORS, gpu_error_types

__all__ = ["GPU_ERRORS", "ChannelRun", "gpu_error_types", "run_channels_on_one_backend"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelRun:
    """Results of :func:`run_channels_on_one_backend`.

    Attributes
    ----------
    results : list of numpy.ndarray
        One host array per channel, in input order, all from the same backend.
    gpu_all : bool
        True when every channel was computed on the GPU.
    fallback_reason : str or None
        Why the GPU attempt was abandoned (None when it was not tried or succeeded).
    """

    results: list[np.ndarray]
    gpu_all: bool
    fallback_reason: str | None


class _GpuAttemptFailed(Exception):
    """Internal: the GPU attempt is abandoned; carries the reason and any CPU result computed."""

    def __init__(self, reason: str, cpu_results: dict[int, np.ndarray]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cpu_results = cpu_results


def run_channels_on_one_backend(
    channels: Sequence[Any],
    gpu_fn: Callable[[Any], Any],
    cpu_fn: Callable[[np.ndarray], np.ndarray],
    *,
    use_gpu: bool,
    xp_gpu: ModuleType | None,
    unit: str = "two-pass coverage",
    nonfinite_allowed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ChannelRun:
    """Compute every channel on the GPU, or every channel on the CPU: never a mix.

    Parameters
    ----------
    channels : sequence of numpy.ndarray
        Host arrays, one per channel.
    gpu_fn : callable
        Computes one channel from a device array (an array of ``xp_gpu``) and returns a
        device array.
    cpu_fn : callable
        The same computation on a numpy array.
    use_gpu : bool
        Try the GPU first (already ``requested and plan.use_gpu``; see
        :func:`zemosaic_dask.plans.assembly.two_pass_use_gpu`).
    xp_gpu : module or None
        The GPU array module (cupy); None imports ``cupy`` lazily when ``use_gpu`` is True.
    unit : str
        What is computed, for the fallback warning.
    nonfinite_allowed : callable, optional
        Given a host channel, returns the boolean mask (result's shape) where a non-finite
        result is legitimate (for :func:`~zemosaic_dask.tasks.two_pass.coverage_scale_map`:
        where the chunk's coverage is 0). Without it, a channel whose GPU result has a
        non-finite value is checked against its CPU result.

    Returns
    -------
    ChannelRun
        The results, whether all came from the GPU, and why the GPU was abandoned.

    Notes
    -----
    The GPU attempt is abandoned, with one warning, when a channel raises one of
    :func:`gpu_error_types` or returns non-finite values where the CPU result is finite
    (decided by ``nonfinite_allowed`` when given, else by computing that channel's CPU result,
    which the CPU run then reuses).
    Every result of the abandoned attempt is discarded, including channels that succeeded.
    """
    host = [np.asarray(channel) for channel in channels]
    results: list[np.ndarray] | None = None
    reason: str | None = None
    cpu_done: dict[int, np.ndarray] = {}
    if use_gpu:
        try:
            results = _run_gpu(host, gpu_fn, cpu_fn, xp_gpu, nonfinite_allowed)
        except _GpuAttemptFailed as failure:
            reason, cpu_done = failure.reason, failure.cpu_results
            logger.warning(msg("gpu_fallback", unit=unit, reason=reason))
    gpu_all = results is not None
    if results is None:
        results = [cpu_done[i] if i in cpu_done else np.asarray(cpu_fn(channel)) for i, channel in enumerate(host)]
    logger.info(msg("two_pass_backend", gpu_all=gpu_all))
    if logger.isEnabledFor(logging.DEBUG):
        for index, result in enumerate(results):
            finite = result[np.isfinite(result)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"),) * 2
            logger.debug("[TwoPass] channel %d coverage min=%.6g max=%.6g", index, low, high)
    return ChannelRun(results=results, gpu_all=gpu_all, fallback_reason=reason)


def _run_gpu(
    host: list[np.ndarray],
    gpu_fn: Callable[[Any], Any],
    cpu_fn: Callable[[np.ndarray], np.ndarray],
    xp_gpu: ModuleType | None,
    nonfinite_allowed: Callable[[np.ndarray], np.ndarray] | None,
) -> list[np.ndarray]:
    """Every channel on the GPU; raises :class:`_GpuAttemptFailed` at the first failure."""
    try:
        xp = xp_gpu if xp_gpu is not None else importlib.import_module("cupy")
    except ImportError as err:
        raise _GpuAttemptFailed(f"cupy is not importable: {err}", {}) from err
    expected = gpu_error_types(xp)
    results = []
    for index, channel in enumerate(host):
        try:
            result = np.asarray(to_numpy(gpu_fn(xp.asarray(channel))))
        except expected as err:
            raise _GpuAttemptFailed(f"channel {index}: {type(err).__name__}: {err}", {}) from err
        bad = ~np.isfinite(result)
        if bad.any():
            if nonfinite_allowed is not None:
                reference, spurious = None, bad & ~np.asarray(nonfinite_allowed(channel), dtype=bool)
            else:
                reference = np.asarray(cpu_fn(channel))
                spurious = bad & np.isfinite(reference) if reference.shape == result.shape else bad
            if spurious.any():
                raise _GpuAttemptFailed(
                    f"channel {index}: {int(spurious.sum())} non-finite value(s) where the CPU result is finite",
                    {} if reference is None else {index: reference},
                )
        results.append(result)
    return results
