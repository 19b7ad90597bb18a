"""Rejection against each sample's expected noise (a CCD noise model), for stacks of 2-6 samples.

Kappa-sigma clipping measures sigma from the samples themselves, and a lone outlier
among ``n`` samples lies at most ``(n - 1) / sqrt(n)`` sample sigmas from their mean
(1.5 for 4 samples): a satellite trail in one of the 3-6 frames a Seestar panel puts
over a sky pixel cannot be rejected that way. :func:`reject_noise_clip` instead clips
each sample against the noise it is EXPECTED to have, as IRAF ``imcombine``'s
``ccdclip`` does:

``variance_k = noise_k**2 + noise_k**2 / shot_k * max(centre - background_k, 0)``
``             + (noise_scale * max(centre - reference, 0))**2``

- ``noise_k`` is the sample's expected noise (its frame's measured background noise, or
  a per-pixel noise for layers that are themselves stacks);
- the shot term: ``noise_k`` was measured on a sky of level ``shot_k`` (the raw sky,
  whose photon noise it mostly is), so emission ``max(centre - background_k, 0)`` above
  the sky under the sample adds photon noise in proportion, as the gain term of IRAF's
  ``ccdclip`` does without needing the gain. Without it a bright nebula's clean samples
  would be clipped, and the pair rule would bias it low. No shot term where ``shot_k`` is
  0 (unknown);
- the sensitivity term: star cores differ between frames by seeing, PSF and resampling
  far more than their noise, by a fraction of their contrast, and must not be clipped.
  That contrast is measured above the ``reference``: by default the sky under the sample
  (all signal counts), and with ``structure_radius`` (as
  :func:`~zemosaic_dask.tasks.stacking.stack_samples` clips) the local smooth level of the
  stack (:func:`~zemosaic_dask.tasks.signal_structure.smooth_level`), so that only
  small-scale structure (stars) widens the window. A bright galaxy core or nebula is
  smooth: measured against its full signal, a window of ``noise_scale`` of several
  hundred ADU let a satellite trail across it through (half of one, averaged with a
  clean frame in an SDS batch, crossed the simulated galaxy's core).

Signals are taken from the ``centre``, never from the sample under test, so an outlier
does not widen its own window.

A sample is tested against ``sigma_k = sqrt(variance_k + centre_variance)``, where
``centre_variance`` is the variance of the centre itself: ``sum(variance) / m**2`` over
the ``m`` samples it is computed from, times ``MEDIAN_VARIANCE`` (pi/2) when it is their
median. Without it, 1.4 % of the clean samples of 3-sample stacks with one trail were
rejected: the median is then the brighter clean sample, and the fainter one's difference
from it has twice the variance of one sample. It is rejected when ``v_k - centre > kappa_high * sigma_k`` or
``centre - v_k > kappa_low * sigma_k``. At a pixel with ``n`` finite, valid samples:

- ``n >= max(min_samples, 3)``: the first pass centres on the median of the valid
  samples (one trail among 3 cannot move it); each further pass centres on the
  unweighted mean of the samples the previous pass kept and re-tests every valid sample
  (a sample rejected earlier may come back). A pixel stops at the first pass that
  changes nothing there, or after ``max_iterations`` passes. A pass that would reject
  every sample of a pixel is not applied there (and the pixel stops).
- ``n == 2`` and ``min_samples <= 2`` (the pair rule): where the two differ by more
  than ``kappa_high * sqrt(variance_1 + variance_2)`` (``centre`` = their mean), the
  brighter one is rejected: trails and cosmic rays are bright. This is the test above
  with the fainter sample as the centre (but the signal term taken at their mean). The
  number of pixels where it fired is returned, so the caller can report it (it biases
  those pixels low when the disagreement is real signal).
- otherwise (one sample, or fewer than ``min_samples``): nothing is rejected.

Growth (``grow_radius`` > 0, as IRAF ``imcombine``'s ``grow``): a satellite trail's core is
rejected, but its wings, a few pixels out, lie under ``kappa_high`` and stay, as two faint
lines either side of the rejected core (1-3.5 sigma of the mosaic's noise in the
benchmark's panel-order sessions). After the clip, a rejected sample that lies more than
``grow_kappa`` sigmas above its pixel's centre is a seed: the centre is the mean of the
kept samples and the sigma that of a later pass (for a pair, the kept sample is the
centre: the pair rule's mean would count half the outlier as signal, and the sensitivity
term would hide it), where no judged pixel within ``grow_radius`` has a sensitivity term
(``noise_scale`` times the contrast of its kept mean above its reference) larger than the
sample's noise: stars seed nothing (the frames of a star differ by seeing, and a Bayer
channel's interpolation leaves outliers on a bright star's flanks; grown, they cost its
flux 0.1 % and its scatter 5-9 % in the benchmark's GRBG sessions); a trail across a star
is grown over from its seeds either side. Every kept sample of the seed's frame and channel within
``grow_radius`` pixels is then rejected, at pixels the rules judge (``n >= 3`` and
``min_samples``, or a pair under the pair rule), except where that would reject every
sample left at the pixel. Noise never seeds it (``grow_kappa`` 6: 1e-9 of clean samples).

On numpy a compiled kernel (:func:`~zemosaic_dask.tasks.kernels_noise_clip.noise_clip_keep_cpu`)
computes the same keep mask with the same float32 operations in the same order; other
namespaces (cupy, array_api_strict) run :func:`_reject_noise_clip_arrays`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .namespace import array_namespace, is_numpy_namespace
from .signal_structure import smooth_level

__all__ = ["NoiseClipResult", "reject_noise_clip"]

#: Variance of the median of n Gaussian samples, in units of the variance of their mean.
MEDIAN_VARIANCE = 1.5707964


@dataclass(frozen=True)
class NoiseClipResult:
    """The outcome of :func:`reject_noise_clip`.

    Attributes
    ----------
    keep : array
        ``(K, C, H, W)`` bool keep mask, in the namespace of the values.
    pair_rejections : int
        Number of channel-pixels with exactly two samples where the pair rule rejected
        the brighter one.
    grown_rejections : int
        Number of samples rejected by the growth around strong rejections (not by their
        own deviation).
    """

    keep: Any
    pair_rejections: int
    grown_rejections: int = 0


def reject_noise_clip(
    values: Any,
    valid: Any,
    noise: Any,
    *,
    background: Any | None = None,
    shot_level: Any | None = None,
    structure_radius: int | None = None,
    kappa_low: float,
    kappa_high: float,
    max_iterations: int,
    min_samples: int,
    noise_scale: float,
    grow_radius: int = 0,
    grow_kappa: float = 6.0,
) -> NoiseClipResult:
    """Clip every sample against its expected noise (see the module docstring for the rules).

    Parameters
    ----------
    values : array
        ``(K, C, H, W)`` float32 samples, NaN where missing.
    valid : array
        ``(K, C, H, W)`` bool, the samples that take part; non-finite values never do.
    noise : array or float
        Expected noise sigma of each sample, in the units of ``values``: a 4-D array
        broadcastable to ``(K, C, H, W)`` (e.g. ``(K, C, 1, 1)`` per frame and channel,
        or a full per-pixel array) or a scalar. A sample whose noise is not finite is
        never rejected.
    background : array or float, optional
        Sky level under each sample, broadcastable like ``noise``; the signal term uses
        ``max(centre - background, 0)``. Default 0: right for background-subtracted
        samples; samples that still carry their sky need it, or the sky itself widens
        the window by ``noise_scale * sky``.
    shot_level : array or float, optional
        The level (in the units of ``values``) of the sky on which each sample's ``noise``
        was measured, broadcastable like ``noise``: emission above ``background`` adds
        photon noise ``noise**2 * emission / shot_level``. Default 0: no shot term.
    structure_radius : int, optional
        Measure the sensitivity term's contrast above the samples' own smooth level:
        :func:`~zemosaic_dask.tasks.signal_structure.smooth_level` with this radius (the
        compiled kernel computes it row by row as it clips). Default: above ``background``
        (all signal counts).
    kappa_low, kappa_high : float
        Rejection limits, in expected sigmas, below and above the centre (> 0).
    max_iterations : int
        Largest number of passes (>= 1).
    min_samples : int
        No rejection at a pixel with fewer valid samples; the pair rule needs 2 or less.
    noise_scale : float
        Fraction of the signal above the background added in quadrature to the noise
        (>= 0; 0.1 keeps star cores whose frames differ by 20 %), the contrast taken
        as ``structure_radius`` says.
    grow_radius : int, optional
        Radius in pixels of the growth around strong rejections (0, the default: none).
    grow_kappa : float, optional
        A rejected sample seeds the growth when it lies more than this many sigmas above
        the centre (> 0).

    Returns
    -------
    NoiseClipResult
        The keep mask and the number of pixels where the pair rule fired.

    Raises
    ------
    ValueError
        When ``noise`` or ``background`` does not broadcast to ``values``, or a noise
        is negative.
    """
    xp = array_namespace(values, valid)
    shape = tuple(values.shape)
    if len(shape) != 4 or tuple(valid.shape) != shape:
        raise ValueError(f"values and valid must both be (K, C, H, W), got {shape} and {tuple(valid.shape)}")
    noise = _broadcastable(xp, noise, shape, "noise")
    if bool(xp.any(noise < 0)):
        raise ValueError("noise must be >= 0 (an expected standard deviation), got a negative value")
    background = _broadcastable(xp, 0.0 if background is None else background, shape, "background")
    shot_level = _broadcastable(xp, 0.0 if shot_level is None else shot_level, shape, "shot_level")
    radius = -1 if structure_radius is None else int(structure_radius)
    if structure_radius is not None and radius < 0:
        raise ValueError(f"structure_radius must be >= 0, got {structure_radius}")
    if int(grow_radius) < 0 or not float(grow_kappa) > 0:
        raise ValueError(f"grow_radius must be >= 0 and grow_kappa > 0, got {grow_radius} and {grow_kappa}")
    compiled = is_numpy_namespace(xp) and shape[0] > 0
    reference = background  # the compiled kernel computes the smooth level itself
    if radius >= 0 and not compiled:
        reference = smooth_level(values, valid, radius)
    model = (noise, background, shot_level, reference)
    options = dict(
        kappa_low=float(kappa_low),
        kappa_high=float(kappa_high),
        max_iterations=int(max_iterations),
        min_samples=int(min_samples),
        noise_scale=float(noise_scale),
        grow_radius=int(grow_radius),
        grow_kappa=float(grow_kappa),
    )
    if compiled:
        return _reject_noise_clip_compiled(values, valid, *model, radius, **options)
    return _reject_noise_clip_arrays(values, valid, *model, **options)


def _broadcastable(xp: Any, array: Any, shape: tuple[int, ...], name: str) -> Any:
    """Return ``array`` as float32 in ``xp``, 4-D, checked to broadcast to ``shape``."""
    array = xp.asarray(array, dtype=xp.float32)
    if array.ndim == 0:
        array = xp.reshape(array, (1, 1, 1, 1))
    if array.ndim != 4 or any(size not in (1, full) for size, full in zip(array.shape, shape, strict=True)):
        raise ValueError(
            f"{name} must be a scalar or a 4-D array broadcastable to the samples {shape} "
            f"(e.g. (K, C, 1, 1) per frame and channel), got shape {tuple(array.shape)}"
        )
    return array


def _astype(xp: Any, array: Any, dtype: Any) -> Any:
    """``array.astype(dtype)`` for namespaces whose arrays have no ``astype`` method."""
    method = getattr(array, "astype", None)
    return method(dtype) if method is not None else xp.astype(array, dtype)


def _count(xp: Any, mask: Any) -> Any:
    """Number of True entries along axis 0, int32."""
    return xp.sum(_astype(xp, mask, xp.int32), axis=0, dtype=xp.int32)


def _kept_mean(xp: Any, values: Any, keep: Any) -> Any:
    """Unweighted mean of the kept samples (float32 sum in sample order), 0 where none."""
    total = xp.sum(xp.where(keep, values, 0.0), axis=0)
    return total / _astype(xp, xp.maximum(_count(xp, keep), 1), xp.float32)


def _kept_median(xp: Any, values: Any, keep: Any, n: Any) -> Any:
    """Median of the kept samples (mean of the two middle ones), 0 where none."""
    ordered = xp.sort(xp.where(keep, values, xp.inf), axis=0)
    last = ordered.shape[0] - 1
    low = xp.clip((n - 1) // 2, 0, last)[None, ...]
    high = xp.clip(n // 2, 0, last)[None, ...]
    median = (
        xp.take_along_axis(ordered, low, axis=0)[0, ...] + xp.take_along_axis(ordered, high, axis=0)[0, ...]
    ) * 0.5
    return xp.where(n > 0, median, 0.0)


def _photons(xp: Any, noise: Any, shot: Any) -> Any:
    """``noise**2 / shot`` where the shot level is known (> 0), else 0 (the compiled kernel's ``_photons``)."""
    known = shot > 0.0
    return xp.where(known, (noise * noise) / xp.where(known, shot, 1.0), 0.0)


def _variance(
    xp: Any, centre: Any, noise: Any, background: Any, photons: Any, reference: Any, noise_scale: float
) -> Any:
    """Expected variance of every sample about ``centre``, ``(K, C, H, W)`` float32.

    The float32 operations of the compiled kernel's ``_variance``, in its order.
    """
    centre = centre[None, ...]
    excess = xp.maximum(centre - background, 0.0)
    signal = xp.maximum(centre - reference, 0.0) * noise_scale
    return (noise * noise + photons * excess) + signal * signal


def _reject_noise_clip_arrays(
    values: Any,
    valid: Any,
    noise: Any,
    background: Any,
    shot: Any,
    reference: Any,
    *,
    kappa_low: float,
    kappa_high: float,
    max_iterations: int,
    min_samples: int,
    noise_scale: float,
    grow_radius: int = 0,
    grow_kappa: float = 6.0,
) -> NoiseClipResult:
    """:func:`reject_noise_clip` with array operations only (any namespace; the semantic reference)."""
    xp = array_namespace(values, valid)
    valid = valid & xp.isfinite(values)
    photons = _photons(xp, noise, shot)
    n = _count(xp, valid)
    keep = valid
    pair_rejections = 0
    pair = (n == 2) & (min_samples <= 2)
    if min_samples <= 2:
        if bool(xp.any(pair)):
            variance = _variance(xp, _kept_mean(xp, values, valid), noise, background, photons, reference, noise_scale)
            pair_sigma = xp.sqrt(xp.sum(xp.where(valid, variance, 0.0), axis=0))
            del variance
            high = xp.max(xp.where(valid, values, -xp.inf), axis=0)
            low = xp.min(xp.where(valid, values, xp.inf), axis=0)
            fired = pair & (high - low > kappa_high * pair_sigma)
            keep = valid & ~(fired[None, ...] & (values == high[None, ...]))
            pair_rejections = int(xp.sum(_astype(xp, fired, xp.int64)))
    judged = (n >= max(min_samples, 3)) & (max_iterations >= 1)
    active = judged
    centre = _kept_median(xp, values, valid, n)
    for iteration in range(max_iterations):
        if not bool(xp.any(active)):
            break
        count = _astype(xp, xp.maximum(_count(xp, keep), 1), xp.float32)
        if iteration > 0:
            centre = xp.sum(xp.where(keep, values, 0.0), axis=0) / count
        variance = _variance(xp, centre, noise, background, photons, reference, noise_scale)
        centre_variance = xp.sum(xp.where(keep, variance, 0.0), axis=0) / (count * count)
        if iteration == 0:
            centre_variance = centre_variance * MEDIAN_VARIANCE
        variance += centre_variance[None, ...]
        sigma = xp.sqrt(variance)
        del variance
        deviation = values - centre[None, ...]
        outside = (deviation > kappa_high * sigma) | (-deviation > kappa_low * sigma)
        del deviation, sigma
        new_keep = valid & ~outside
        del outside
        changed = active & xp.any(new_keep != keep, axis=0) & (_count(xp, new_keep) > 0)
        keep = xp.where(changed[None, ...], new_keep, keep)
        active = changed
    if grow_radius <= 0:
        return NoiseClipResult(keep=keep, pair_rejections=pair_rejections)
    # the strong rejections: the test of a later pass (about the mean of the kept samples) with
    # grow_kappa, for a pair too (about the kept one: the pair rule's mean would count half the
    # outlier as the pixel's signal, whose sensitivity term then hides it)
    count = _astype(xp, xp.maximum(_count(xp, keep), 1), xp.float32)
    centre = xp.sum(xp.where(keep, values, 0.0), axis=0) / count
    variance = _variance(xp, centre, noise, background, photons, reference, noise_scale)
    variance += (xp.sum(xp.where(keep, variance, 0.0), axis=0) / (count * count))[None, ...]
    judged = judged | pair
    strong = judged[None, ...] & valid & ~keep & (values - centre[None, ...] > grow_kappa * xp.sqrt(variance))
    del variance
    # no star near a seed: the contrast of the judged pixels within the radius, against the seed's noise
    contrast = centre[None, ...] - reference
    contrast = xp.where((judged & (_count(xp, keep) > 0))[None, ...] & (contrast > 0.0), contrast, 0.0)
    strong = strong & (_disc_max(xp, contrast, grow_radius) * noise_scale <= noise)
    del contrast
    keep, grown = _grow_rejections(xp, keep, strong, judged, grow_radius)
    return NoiseClipResult(keep=keep, pair_rejections=pair_rejections, grown_rejections=grown)


def _disc_shifts(radius: int, height: int, width: int) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """``(target, source)`` index pairs shifting an image by every offset within ``radius`` pixels."""
    shifts = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius or abs(dy) >= height or abs(dx) >= width:
                continue
            target = (..., slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0)))
            source = (..., slice(max(-dy, 0), height + min(-dy, 0)), slice(max(-dx, 0), width + min(-dx, 0)))
            shifts.append((target, source))
    return shifts


def _disc_max(xp: Any, image: Any, radius: int) -> Any:
    """The maximum of ``image`` (>= 0) over a disc of ``radius`` pixels about every pixel."""
    near = xp.zeros_like(image)
    for target, source in _disc_shifts(radius, *image.shape[-2:]):
        near[target] = xp.maximum(near[target], image[source])
    return near


def _grow_rejections(xp: Any, keep: Any, seeds: Any, judged: Any, radius: int) -> tuple[Any, int]:
    """Reject the kept samples within ``radius`` pixels of a seed of their frame and channel.

    Only at ``judged`` pixels ``(C, H, W)`` where a kept sample is not grown (a pixel is
    never emptied). Returns the new keep mask and the number of samples grown.
    """
    grown = xp.zeros_like(seeds)
    for target, source in _disc_shifts(radius, *seeds.shape[-2:]):
        grown[target] = grown[target] | seeds[source]
    grown = grown & keep
    applied = judged & xp.any(grown, axis=0) & xp.any(keep & ~grown, axis=0)
    grown = grown & applied[None, ...]
    return keep & ~grown, int(xp.sum(_astype(xp, grown, xp.int64)))


def _reject_noise_clip_compiled(
    values: Any,
    valid: Any,
    noise: Any,
    background: Any,
    shot: Any,
    reference: Any,
    structure_radius: int,
    *,
    kappa_low: float,
    kappa_high: float,
    max_iterations: int,
    min_samples: int,
    noise_scale: float,
    grow_radius: int,
    grow_kappa: float,
) -> NoiseClipResult:
    """:func:`reject_noise_clip` on numpy through the compiled per-pixel kernel."""
    from .kernels_noise_clip import noise_clip_keep_cpu

    out = np.empty(values.shape, dtype=np.bool_)
    pair_rejections, grown = noise_clip_keep_cpu(
        np.ascontiguousarray(values, dtype=np.float32),
        np.ascontiguousarray(valid, dtype=np.bool_),
        np.asarray(noise, dtype=np.float32),  # 4-D, each axis 1 or full (see _broadcastable)
        np.asarray(background, dtype=np.float32),
        np.asarray(shot, dtype=np.float32),
        np.asarray(reference, dtype=np.float32),
        structure_radius,
        np.float32(kappa_low),
        np.float32(kappa_high),
        np.float32(noise_scale),
        np.float32(MEDIAN_VARIANCE),
        max_iterations,
        min_samples,
        grow_radius,
        np.float32(grow_kappa),
        out,
    )
    return NoiseClipResult(keep=out, pair_rejections=int(pair_rejections), grown_rejections=int(grown))
