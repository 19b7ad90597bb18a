"""Stacking of resampled samples on one output region.

:func:`stack_samples` is the one entry point: it takes the K samples that frames give
to a region (already resampled onto it), applies per-frame normalisation, weights them,
rejects outliers and combines the survivors, and returns the image with its coverage.
Normalisation, weighting and rejection are orthogonal: any combination is valid and
means the same on numpy and on cupy.

The normalisation coefficients and the frame weights are per frame, computed from
whole-frame statistics (:mod:`.normalisation`, :mod:`.weighting`) and passed in, so
every region of a mosaic normalises a frame the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .namespace import array_namespace, is_numpy_namespace, to_numpy
from .noise_rejection import reject_noise_clip
from .rejection import (
    huber_mean,
    kept_median,
    reject_kappa_sigma,
    reject_linear_fit,
    reject_winsorized_sigma,
    weighted_mean,
)
from .signal_structure import STRUCTURE_RADIUS_PX

__all__ = [
    "COMBINE_METHODS",
    "NORMALISATION_METHODS",
    "REJECTION_METHODS",
    "config_key",
    "WEIGHTING_METHODS",
    "StackOptions",
    "StackResult",
    "peak_memory_bytes",
    "stack_samples",
]

logger = logging.getLogger(__name__)

NORMALISATION_METHODS = ("none", "linear_fit", "sky_mean")
WEIGHTING_METHODS = ("none", "noise_variance")
REJECTION_METHODS = (
    "none",
    "kappa_sigma",
    "winsorized_sigma_clip",
    "robust_mean",
    "linear_fit_clip",
    "median",
    "noise_clip",
)
COMBINE_METHODS = ("mean", "median")

#: Peak working memory of :func:`stack_samples` per rejection method, as ``(a, b)`` in
#: ``(a * K + b) * C*H*W*4`` bytes: ``a`` sample-sized and ``b`` plane-sized float32
#: temporaries (measured on numpy, with margin; a test keeps them true). ``noise_clip``
#: runs a compiled kernel on numpy; its array version (cupy) peaks near 5.7 K samples.
_MEMORY_MODEL = {
    "none": (2.7, 5.0),
    "median": (2.4, 17.0),
    "kappa_sigma": (2.9, 20.0),
    "robust_mean": (3.6, 18.0),
    "winsorized_sigma_clip": (3.9, 26.0),
    "linear_fit_clip": (6.9, 16.0),
    "noise_clip": (2.9, 20.0),
}

_CLIPPERS = {
    "kappa_sigma": reject_kappa_sigma,
    "winsorized_sigma_clip": reject_winsorized_sigma,
    "linear_fit_clip": reject_linear_fit,
}


#: StackOptions fields that are configuration keys of the ``stack`` section.
_CONFIG_FIELDS = frozenset(
    {
        "normalisation",
        "weighting",
        "rejection",
        "kappa_low",
        "kappa_high",
        "noise_scale",
        "max_iterations",
        "grow_radius",
        "grow_kappa",
        "combine",
    }
)


def config_key(option: str) -> str:
    """The configuration key that sets a :class:`StackOptions` field, for error messages.

    ``"kappa_low"`` gives ``"zemosaic.stack.kappa-low"``; a field no key sets is named as such.
    """
    if option in _CONFIG_FIELDS:
        return f"zemosaic.stack.{option.replace('_', '-')}"
    return f"StackOptions.{option} (not a configuration key)"


@dataclass(frozen=True)
class StackOptions:
    """How samples are normalised, weighted, rejected and combined.

    Attributes
    ----------
    normalisation : str
        ``none`` | ``linear_fit`` | ``sky_mean``; when not ``none``, :func:`stack_samples`
        requires the ``gains``/``offsets`` from
        :func:`~zemosaic_dask.tasks.normalisation.normalisation_coefficients`.
    weighting : str
        ``none`` | ``noise_variance``; when not ``none``, :func:`stack_samples` requires
        ``frame_weights`` from :func:`~zemosaic_dask.tasks.weighting.frame_weights`.
    rejection : str
        ``none`` (no rejection) | ``kappa_sigma`` | ``winsorized_sigma_clip`` |
        ``linear_fit_clip`` | ``noise_clip`` (clipping methods, then ``combine``) |
        ``robust_mean`` (Huber M-estimate) | ``median`` (unweighted median of the
        samples). The last two are estimators in themselves: ``combine`` does not apply
        to them. ``noise_clip`` clips against each sample's expected noise
        (:func:`~zemosaic_dask.tasks.noise_rejection.reject_noise_clip`), which works
        with 2-6 samples; :func:`stack_samples` then requires ``noise``.
    kappa_low, kappa_high : float
        Clipping limits in sigma below and above the centre (> 0); for ``noise_clip``
        in expected sigmas (3 suits it).
    max_iterations : int
        Largest number of rejection passes (>= 1).
    combine : str
        ``mean`` (weighted mean of the survivors) | ``median`` (unweighted median of
        the survivors).
    min_samples_for_rejection : int
        No rejection at a pixel with fewer valid samples (>= 1). ``noise_clip`` judges
        a pair of samples only when this is 2 or less.
    noise_scale : float
        ``noise_clip`` only: fraction of a pixel's contrast above the stack's local smooth
        level (:func:`~zemosaic_dask.tasks.signal_structure.smooth_level`) added in
        quadrature to each sample's noise (>= 0), so that star cores, which differ between
        frames by seeing and resampling, are not clipped, while smooth bright emission is
        judged against its noise.
    grow_radius : int
        ``noise_clip`` only: radius in pixels of the growth around strong rejections (>= 0;
        0: none): a rejected sample more than ``grow_kappa`` expected sigmas above the
        centre takes its frame's samples this near with it (a trail's faint wings).
    grow_kappa : float
        ``noise_clip`` only: the deviation, in expected sigmas, that seeds the growth (> 0).
    """

    normalisation: str = "none"
    weighting: str = "none"
    rejection: str = "kappa_sigma"
    kappa_low: float = 2.0
    kappa_high: float = 2.0
    max_iterations: int = 3
    combine: str = "mean"
    min_samples_for_rejection: int = 3
    noise_scale: float = 0.1
    grow_radius: int = 0
    grow_kappa: float = 6.0

    def validate(self) -> None:
        """Raise :class:`~zemosaic_dask.errors.ConfigError` naming the first invalid field."""
        for name, accepted in (
            ("normalisation", NORMALISATION_METHODS),
            ("weighting", WEIGHTING_METHODS),
            ("rejection", REJECTION_METHODS),
            ("combine", COMBINE_METHODS),
        ):
            value = getattr(self, name)
            if value not in accepted:
                raise ConfigError(
                    f"stacking {name} must be one of {', '.join(accepted)}, got {value!r} (set {config_key(name)})"
                )
        for name in ("kappa_low", "kappa_high", "grow_kappa"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigError(
                    f"stacking {name} must be a finite number > 0, got {value!r} (set {config_key(name)})"
                )
        scale = self.noise_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < float("inf"):
            raise ConfigError(
                f"stacking noise_scale must be a finite number >= 0, got {scale!r} (set zemosaic.stack.noise-scale)"
            )
        for name in ("max_iterations", "min_samples_for_rejection"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"stacking {name} must be an integer >= 1, got {value!r} (set {config_key(name)})")
        radius = self.grow_radius
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
            raise ConfigError(
                f"stacking grow_radius must be an integer >= 0, got {radius!r} (set {config_key('grow_radius')})"
            )


@dataclass(frozen=True)
class StackResult:
    """The stack of one region, in the input's array namespace.

    Attributes
    ----------
    image : array
        ``(C, H, W)`` float32, NaN where no sample survives.
    coverage : array
        ``(H, W)`` float32: sum of the footprint weights of the distinct frames with data
        at the pixel (duplicates of one frame count once; frame weights do not enter).
    n_frames : array
        ``(H, W)`` int32: number of distinct frames with data at the pixel.
    pair_rejections : int
        ``noise_clip`` only (0 otherwise): number of channel-pixels with two samples
        where the brighter one was rejected because the two disagreed beyond their noise.
    kept_weight : array or None
        ``(H, W)`` float32, when asked for (None otherwise): the footprint weight of the
        samples the rejection kept, averaged over the channels (the weight behind the image;
        ``coverage`` when nothing was rejected). A stack that is combined again (a group of
        layers) takes its noise from it.
    """

    image: Any
    coverage: Any
    n_frames: Any
    pair_rejections: int = 0
    kept_weight: Any = None


def stack_samples(
    samples: Any,
    footprint: Any,
    options: StackOptions,
    *,
    frame_ids: Sequence[int] | Any | None = None,
    gains: Any | None = None,
    offsets: Any | None = None,
    frame_weights: Any | None = None,
    noise: Any | None = None,
    background: Any | None = None,
    shot_level: Any | None = None,
    kept_weight: bool = False,
) -> StackResult:
    """Stack the samples K frames give to one output region.

    Parameters
    ----------
    samples : array
        ``(K, C, H, W)`` float32 resampled values, NaN where a frame has no data.
    footprint : array
        ``(K, H, W)`` float32 weights in [0, 1], 0 where a frame has no data (may carry
        a radial weight). A sample counts as data where its footprint is > 0 and it is
        finite.
    options : StackOptions
        The methods; validated here.
    frame_ids : sequence of int, optional
        ``(K,)`` frame identities; equal ids mark duplicates of one frame, which take
        part in the stack but count once in ``coverage`` and ``n_frames``. Defaults to
        all distinct.
    gains, offsets : array, optional
        ``(K, C)`` (or ``(K,)``) normalisation ``gain * x + offset`` applied first;
        required when ``options.normalisation`` is not ``none``. Host (numpy) arrays
        are accepted with device samples.
    frame_weights : array, optional
        ``(K, C)`` (or ``(K,)``) per-frame quality weights; required when
        ``options.weighting`` is not ``none``. A sample's weight is
        ``footprint * frame_weight``; a frame weight of 0 excludes the sample.
    noise : array or float, optional
        Expected noise sigma of every sample, in the units of ``samples``: ``(K,)`` or
        ``(K, C)`` per frame (e.g. each frame's measured background noise), a 4-D array
        broadcastable to ``(K, C, H, W)`` (per pixel, for layers that are stacks
        themselves), or a scalar. Required by ``noise_clip``, unused otherwise.
        Normalisation scales it by ``|gain|``.
    background : array or float, optional
        Sky level under every sample, in the units of ``samples``, shaped like ``noise``
        (default 0: background-subtracted samples); ``noise_clip`` measures the signal
        of its shot term above it. Normalisation maps it like the samples.
    shot_level : array or float, optional
        The sky level on which each sample's ``noise`` was measured (the frame's raw sky,
        in the units of ``samples``), shaped like ``noise``: ``noise_clip`` adds the photon
        noise of the emission above ``background`` in proportion. Default: no shot term.
        Normalisation scales it by ``|gain|``.
    kept_weight : bool
        Also return the weight of the samples kept (:attr:`StackResult.kept_weight`).

    Returns
    -------
    StackResult
        Arrays in the namespace of ``samples``.

    Raises
    ------
    ConfigError
        When ``options`` is invalid, requests a normalisation or weighting whose
        coefficients were not given, or ``noise_clip`` without ``noise``.
    ValueError
        When the shapes disagree.
    """
    options.validate()
    xp = array_namespace(samples, footprint)
    if samples.ndim != 4 or tuple(footprint.shape) != (samples.shape[0],) + tuple(samples.shape[2:]):
        raise ValueError(
            f"samples must be (K, C, H, W) and footprint (K, H, W), got {tuple(samples.shape)} and "
            f"{tuple(footprint.shape)}"
        )
    count, channels = samples.shape[:2]
    _require(options.normalisation != "none" and (gains is None and offsets is None), "normalisation", "gains/offsets")
    _require(options.weighting != "none" and frame_weights is None, "weighting", "frame_weights")
    if options.rejection == "noise_clip" and noise is None:
        raise ConfigError(
            "stacking rejection noise_clip needs the expected noise of every sample: pass noise= to stack_samples "
            "(each frame's background noise, e.g. FrameInfo.noise, as a (K,) or (K, C) array) or set "
            "zemosaic.stack.rejection to another method (kappa_sigma, winsorized_sigma_clip, ...)"
        )
    logger.debug("stacking %d samples of %s on %s: %s", count, tuple(samples.shape[1:]), xp.__name__, options)
    if count == 0:
        plane = tuple(samples.shape[2:])
        return StackResult(
            image=xp.full((channels,) + plane, xp.nan, dtype=xp.float32),
            coverage=xp.zeros(plane, dtype=xp.float32),
            n_frames=xp.zeros(plane, dtype=xp.int32),
        )

    normalised = gains is not None or offsets is not None
    gain = _per_frame(xp, gains, count, channels, "gains", 1.0)[:, :, None, None]
    offset = _per_frame(xp, offsets, count, channels, "offsets", 0.0)[:, :, None, None]
    weight = xp.asarray(footprint, dtype=xp.float32)
    quality = None
    weights = weight[:, None]
    if frame_weights is not None:
        quality = _per_frame(xp, frame_weights, count, channels, "frame_weights", 1.0)
        weights = weights * quality[:, :, None, None]
    values, valid, has_data = _prepare(xp, samples, weight, gain, offset, quality, normalised)

    model = None
    if options.rejection == "noise_clip":
        noise = _per_sample(xp, noise, count, channels, "noise")
        background = _per_sample(xp, 0.0 if background is None else background, count, channels, "background")
        shot = _per_sample(xp, 0.0 if shot_level is None else shot_level, count, channels, "shot_level")
        if normalised:
            noise = noise * xp.abs(gain)
            shot = shot * xp.abs(gain)
            background = background * gain
            background += offset
        model = (noise, background, shot)
    image, pair_rejections, keep = _combine(values, weights, valid, options, model)
    coverage, n_frames = _coverage(xp, weight, has_data, frame_ids, count)
    kept = None
    if kept_weight:
        kept = sum(xp.sum(xp.where(keep[:, c], weight, xp.float32(0)), axis=0) for c in range(channels)) / channels
        kept = xp.asarray(kept, dtype=xp.float32)
    return StackResult(image, coverage, n_frames, pair_rejections, kept)


def peak_memory_bytes(
    shape: Sequence[int], options: StackOptions, *, frame_weights: bool = False, per_pixel_noise: bool = False
) -> int:
    """Upper bound of the working memory :func:`stack_samples` allocates besides its inputs.

    Parameters
    ----------
    shape : sequence of int
        ``(K, C, H, W)`` shape of the samples.
    options : StackOptions
        The stacking methods (the rejection method sets the cost).
    frame_weights : bool
        Whether per-channel frame weights are passed (one more sample-sized array).
    per_pixel_noise : bool
        Whether ``noise_clip`` gets sample-sized ``noise``/``background`` arrays
        (normalisation copies each: two more sample-sized arrays).

    Returns
    -------
    int
        Bytes, for sizing regions so that a worker's peak memory stays bounded.
    """
    options.validate()
    count, channels, height, width = (int(size) for size in shape)
    per_sample, per_plane = _MEMORY_MODEL[options.rejection]
    per_sample += 1.0 if frame_weights else 0.0
    per_sample += 2.0 if per_pixel_noise and options.rejection == "noise_clip" else 0.0
    return int(math.ceil((per_sample * count + per_plane) * channels * height * width * 4))


def _require(missing: bool, field: str, argument: str) -> None:
    if missing:
        raise ConfigError(
            f"stacking {field} is requested but no {argument} were passed to stack_samples; compute them from "
            f"whole-frame statistics (tasks.normalisation / tasks.weighting) or set {config_key(field)}: none"
        )


def _per_frame(xp: Any, coefficients: Any, count: int, channels: int, name: str, default: float) -> Any:
    """Return ``(K, C)`` float32 coefficients in ``xp`` (host arrays are moved over)."""
    if coefficients is None:
        return xp.full((count, channels), default, dtype=xp.float32)
    array = xp.asarray(coefficients, dtype=xp.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] != count or array.shape[1] not in (1, channels):
        raise ValueError(f"{name} must have shape ({count}, {channels}) or ({count},), got {tuple(array.shape)}")
    return xp.broadcast_to(array, (count, channels))


def _per_sample(xp: Any, array: Any, count: int, channels: int, name: str) -> Any:
    """Return a noise model array in ``xp`` as float32, ``(K,)``/``(K, C)`` made ``(K, C, 1, 1)``."""
    array = xp.asarray(array, dtype=xp.float32)
    if array.ndim in (1, 2):
        if array.shape[0] != count or (array.ndim == 2 and array.shape[1] not in (1, channels)):
            raise ValueError(
                f"{name} must have shape ({count},), ({count}, {channels}) or be 4-D broadcastable to the samples, "
                f"got {tuple(array.shape)}"
            )
        array = xp.reshape(array, (count, -1, 1, 1))
    elif array.ndim == 0:
        array = xp.reshape(array, (1, 1, 1, 1))
    return array  # 4-D shapes are checked by reject_noise_clip


def _prepare(
    xp: Any, samples: Any, weight: Any, gain: Any, offset: Any, quality: Any, normalised: bool
) -> tuple[Any, Any, Any]:
    """The working copy of the samples (normalised, NaN where not valid), its valid mask and has-data mask.

    ``gain``, ``offset`` ``(K, C, 1, 1)``; ``quality`` ``(K, C)`` or None. On numpy one
    compiled pass (:func:`~.kernels_stack.prepare_samples_cpu`) writes what the array
    operations below write.
    """
    if is_numpy_namespace(xp):
        from .kernels_stack import prepare_samples_cpu

        values = np.empty(samples.shape, dtype=np.float32)
        valid = np.empty(samples.shape, dtype=np.bool_)
        has_data = np.empty(weight.shape, dtype=np.bool_)
        prepare_samples_cpu(
            np.ascontiguousarray(samples, dtype=np.float32),
            np.ascontiguousarray(weight),
            # Writable copies of the (K, C) coefficients (broadcast views are read-only): numba
            # compiles one kernel per read-only flag, and the workers' warm-up loads this one.
            np.array(gain[:, :, 0, 0], dtype=np.float32),
            np.array(offset[:, :, 0, 0], dtype=np.float32),
            np.zeros((0, 0), np.float32) if quality is None else np.array(quality, dtype=np.float32),
            normalised,
            values,
            valid,
            has_data,
        )
        return values, valid, has_data
    values = xp.array(samples, dtype=xp.float32, copy=True)  # the one working copy, updated in place
    if normalised:
        values *= gain
        values += offset
    finite = xp.isfinite(values)
    has_data = (weight > 0) & xp.any(finite, axis=1)
    valid = finite & (weight > 0)[:, None]
    del finite
    if quality is not None:
        valid = valid & (quality > 0)[:, :, None, None]
    values[~valid] = xp.nan
    return values, valid, has_data


def _combine(values: Any, weights: Any, valid: Any, options: StackOptions, model: Any) -> tuple[Any, int, Any]:
    """Return the combined image, the number of pair-rule rejections (noise_clip) and the samples kept."""
    if options.rejection == "median":
        return kept_median(values, valid), 0, valid
    if options.rejection == "robust_mean":
        return huber_mean(values, weights, valid, min_samples=options.min_samples_for_rejection), 0, valid
    keep = valid
    pair_rejections = 0
    clipper = _CLIPPERS.get(options.rejection)
    if model is not None:
        clipped = reject_noise_clip(
            values,
            valid,
            model[0],
            background=model[1],
            shot_level=model[2],
            # The sensitivity term measures contrast above the stack's smooth level (stars, not nebulae).
            structure_radius=STRUCTURE_RADIUS_PX,
            kappa_low=options.kappa_low,
            kappa_high=options.kappa_high,
            max_iterations=options.max_iterations,
            min_samples=options.min_samples_for_rejection,
            noise_scale=options.noise_scale,
            grow_radius=options.grow_radius,
            grow_kappa=options.grow_kappa,
        )
        keep, pair_rejections = clipped.keep, clipped.pair_rejections
    elif clipper is not None:
        keep = clipper(
            values,
            valid,
            kappa_low=options.kappa_low,
            kappa_high=options.kappa_high,
            max_iterations=options.max_iterations,
            min_samples=options.min_samples_for_rejection,
        )
    if options.combine == "median":
        return kept_median(values, keep), pair_rejections, keep
    return weighted_mean(values, weights, keep), pair_rejections, keep


def _coverage(xp: Any, weight: Any, has_data: Any, frame_ids: Any, count: int) -> tuple[Any, Any]:
    """Sum of footprint weights and count of the distinct frames with data."""
    groups = _duplicate_groups(frame_ids, count)
    if groups is None and is_numpy_namespace(xp):
        from .kernels_stack import coverage_cpu

        coverage = np.empty(weight.shape[1:], dtype=np.float32)
        n_frames = np.empty(weight.shape[1:], dtype=np.int32)
        # Writable C arrays: numba compiles one kernel per layout and read-only flag.
        footprint = np.require(weight, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
        coverage_cpu(footprint, np.require(has_data, np.bool_, ["C_CONTIGUOUS", "WRITEABLE"]), coverage, n_frames)
        return coverage, n_frames
    data_weight = xp.where(has_data, weight, xp.float32(0))
    if groups is None:
        return xp.sum(data_weight, axis=0).astype(xp.float32), xp.sum(has_data, axis=0, dtype=xp.int32)
    coverage = xp.zeros(weight.shape[1:], dtype=xp.float32)
    n_frames = xp.zeros(weight.shape[1:], dtype=xp.int32)
    for members in groups:
        coverage = coverage + xp.max(data_weight[members], axis=0)
        n_frames = n_frames + xp.any(has_data[members], axis=0).astype(xp.int32)
    return coverage, n_frames


def _duplicate_groups(frame_ids: Any, count: int) -> list[list[int]] | None:
    """Indices of the samples of each distinct frame, or None when all are distinct."""
    if frame_ids is None:
        return None
    ids = [int(value) for value in to_numpy(frame_ids).ravel()] if hasattr(frame_ids, "shape") else list(frame_ids)
    if len(ids) != count:
        raise ValueError(f"frame_ids must hold one id per sample ({count}), got {len(ids)}")
    groups: dict[Any, list[int]] = {}
    for index, frame in enumerate(ids):
        groups.setdefault(frame, []).append(index)
    if len(groups) == count:
        return None
    return list(groups.values())
