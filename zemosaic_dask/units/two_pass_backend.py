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

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import GpuUnavailableError
from ..messages import msg
from ..tasks.namespace import to_numpy
from .gpu import GPU_ERRORS, gpu_error_types, run_with_gpu_fallback

__all__ = ["GPU_ERRORS", "ChannelRun", "GpuChannelError", "gpu_error_types", "run_channels_on_one_backend"]

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


class GpuChannelError(GpuUnavailableError):
    """One channel failed on the GPU (an expected GPU error, or non-finite values the CPU does not give)."""


def run_channels_on_one_backend(
    channels: Sequence[Any],
    gpu_fn: Callable[[Any], Any],
    cpu_fn: Callable[[np.ndarray], np.ndarray],
    *,
    use_gpu: bool,
    xp_gpu: ModuleType | None = None,
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
    xp_gpu : module, optional
        The GPU array module; by default :func:`~zemosaic_dask.units.gpu.gpu_namespace`
        imports cupy and checks for a device.
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
    The one GPU fallback of the package (:func:`~zemosaic_dask.units.gpu.run_with_gpu_fallback`)
    runs the attempt: it is abandoned, with one warning, when a channel raises one of
    :func:`gpu_error_types` or returns non-finite values where the CPU result is finite;
    every result of the abandoned attempt is discarded, including channels that succeeded.
    Any other exception is a bug and propagates.
    """
    host = [np.asarray(channel) for channel in channels]
    cpu_done: dict[int, np.ndarray] = {}

    def work(xp: ModuleType) -> list[np.ndarray]:
        if xp is np:
            return [cpu_done[i] if i in cpu_done else np.asarray(cpu_fn(c)) for i, c in enumerate(host)]
        return _run_gpu(xp, host, gpu_fn, cpu_fn, nonfinite_allowed, cpu_done)

    namespace = None if xp_gpu is None else (lambda: xp_gpu)
    results, reason = run_with_gpu_fallback(unit, work, use_gpu=use_gpu, namespace=namespace)
    gpu_all = use_gpu and reason is None
    logger.info(msg("two_pass_backend", gpu_all=gpu_all))
    if logger.isEnabledFor(logging.DEBUG):
        for index, result in enumerate(results):
            finite = result[np.isfinite(result)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"),) * 2
            logger.debug("[TwoPass] channel %d coverage min=%.6g max=%.6g", index, low, high)
    return ChannelRun(results=results, gpu_all=gpu_all, fallback_reason=reason)


def _run_gpu(
    xp: ModuleType,
    host: list[np.ndarray],
    gpu_fn: Callable[[Any], Any],
    cpu_fn: Callable[[np.ndarray], np.ndarray],
    nonfinite_allowed: Callable[[np.ndarray], np.ndarray] | None,
    cpu_done: dict[int, np.ndarray],
) -> list[np.ndarray]:
    """Every channel on the GPU; raises :class:`GpuChannelError` at the first failing channel."""
    expected = gpu_error_types(xp)
    results = []
    for index, channel in enumerate(host):
        try:
            result = np.asarray(to_numpy(gpu_fn(xp.asarray(channel))))
        except expected as err:
            raise GpuChannelError(f"channel {index}: {type(err).__name__}: {err}") from err
        bad = ~np.isfinite(result)
        if bad.any():
            if nonfinite_allowed is not None:
                spurious = bad & ~np.asarray(nonfinite_allowed(channel), dtype=bool)
            else:
                reference = cpu_done[index] = np.asarray(cpu_fn(channel))
                spurious = bad & np.isfinite(reference) if reference.shape == result.shape else bad
            if spurious.any():
                raise GpuChannelError(
                    f"channel {index}: {int(spurious.sum())} non-finite value(s) where the CPU result is finite"
                )
        results.append(result)
    return results
