"""Map, sample and accumulate one frame window onto a region, dispatched on the array namespace.

Two operations share one description of the geometry (:class:`WindowMapping`: the coarse
node map of the output-to-input pixel mapping, the window's origin in its frame, the box
of valid input coordinates and the interpolation method):

- :func:`accumulate_window` adds a frame's weighted samples to the running sums of a
  weighted mean (:class:`MeanSums`), so a region's mean is built one frame at a time
  without a ``(K, C, h, w)`` tensor;
- :func:`sample_window` writes a frame's samples and footprint into preallocated slices
  of a ``(K, C, h, w)`` stack, for the stacking paths that need every sample.

Each runs a fused kernel on numpy (numba, :mod:`.kernels_cpu`) and on cupy (a CUDA
kernel, :mod:`.kernels_gpu`), and a pure array-namespace reference on anything else
(:func:`~.mapping.interpolate_pixel_map` then :func:`~.resample.sample`). The reference
defines the semantics; the kernels reproduce its arithmetic operation for operation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .mapping import CoarsePixelMap, interpolate_pixel_map
from .namespace import array_namespace
from .resample import INTERPOLATION_METHODS, full_pixel_box, sample

__all__ = [
    "FrameCoefficients",
    "MeanSums",
    "WindowMapping",
    "accumulate_window",
    "accumulate_window_reference",
    "sample_window",
    "sample_window_reference",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowMapping:
    """Where every output pixel of a region falls in a prepared frame window.

    Attributes
    ----------
    node_x, node_y : numpy.ndarray
        ``(ny, nx)`` float64 input-frame pixel coordinates at the nodes of the coarse map
        (:class:`~.mapping.CoarsePixelMap`); node ``(i, j)`` is output pixel
        ``(min(i * step, h - 1), min(j * step, w - 1))`` of the region.
    step : int
        Node spacing in output pixels.
    shape : tuple of int
        ``(h, w)`` of the region.
    origin : tuple of int
        ``(y0, x0)`` of the window in its frame (subtracted from the mapped coordinates).
    valid_box : tuple of float, optional
        ``(ymin, ymax, xmin, xmax)`` window coordinates inside which the frame has data (its
        pixel area, out to the outer pixel edges); None means the whole window's area.
    method : str
        ``bilinear`` | ``bicubic`` | ``lanczos3``.
    """

    node_x: np.ndarray
    node_y: np.ndarray
    step: int
    shape: tuple[int, int]
    origin: tuple[int, int] = (0, 0)
    valid_box: tuple[float, float, float, float] | None = None
    method: str = "bilinear"

    @classmethod
    def from_coarse(
        cls,
        coarse: CoarsePixelMap,
        origin: tuple[int, int] = (0, 0),
        valid_box: tuple[float, float, float, float] | None = None,
        method: str = "bilinear",
    ) -> WindowMapping:
        """Build the mapping of a window from the region's coarse pixel map."""
        return cls(coarse.x, coarse.y, int(coarse.step), tuple(coarse.shape), origin, valid_box, method)

    def coarse(self) -> CoarsePixelMap:
        """Return the coarse map this mapping interpolates (for the reference path)."""
        return CoarsePixelMap(self.node_x, self.node_y, self.step, self.shape, 0.0)

    def box_for(self, image_shape: tuple[int, ...]) -> tuple[float, float, float, float]:
        """The valid box, defaulting to the whole pixel area of a ``(C, H, W)`` window (to its pixel edges)."""
        if self.valid_box is not None:
            return tuple(float(v) for v in self.valid_box)
        return full_pixel_box(int(image_shape[1]), int(image_shape[2]))

    def validate(self, image: Any) -> None:
        """Raise ValueError when the mapping and a ``(C, H, W)`` window do not fit together."""
        if self.method not in INTERPOLATION_METHODS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATION_METHODS)}, got {self.method!r} "
                "(set zemosaic.mapping.interpolation)"
            )
        if self.step < 1:
            raise ValueError(f"node step must be >= 1, got {self.step}")
        height, width = self.shape
        expected = (len(_axis(height, self.step)), len(_axis(width, self.step)))
        for name, nodes in (("node_x", self.node_x), ("node_y", self.node_y)):
            if tuple(np.shape(nodes)) != expected:
                raise ValueError(
                    f"{name} must have shape {expected} for a {height}x{width} region with step {self.step}, "
                    f"got {tuple(np.shape(nodes))}"
                )
        if len(image.shape) != 3 or min(image.shape) < 1:
            raise ValueError(f"the window must be a non-empty (C, H, W) array, got shape {tuple(image.shape)}")


@dataclass(frozen=True)
class FrameCoefficients:
    """Per-channel normalisation ``gain * v + offset`` and quality weight of one frame.

    None means gain 1, offset 0, weight 1. A channel weight <= 0 excludes the channel's
    samples from the mean (coverage still counts the frame).
    """

    gains: tuple[float, ...] | None = None
    offsets: tuple[float, ...] | None = None
    weights: tuple[float, ...] | None = None

    def arrays(self, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(gains, offsets, weights)`` as ``(C,)`` float32 host arrays."""
        return (
            _per_channel(self.gains, channels, 1.0, "gains"),
            _per_channel(self.offsets, channels, 0.0, "offsets"),
            _per_channel(self.weights, channels, 1.0, "weights"),
        )


@dataclass(frozen=True)
class MeanSums:
    """Running sums of a region's weighted mean, in one array namespace.

    Attributes
    ----------
    sum_wv : array
        ``(C, h, w)`` sum of weight x value (float32 or float64).
    sum_w : array
        ``(C, h, w)`` sum of weights (per channel: frame weights are per channel).
    coverage : array
        ``(h, w)`` sum of the footprints of the frames with data (frame weights do not enter).
    """

    sum_wv: Any
    sum_w: Any
    coverage: Any

    @classmethod
    def zeros(cls, channels: int, shape: tuple[int, int], xp: Any = np, dtype: Any = None) -> MeanSums:
        """Allocate zeroed sums (float64 unless ``dtype`` is given) in namespace ``xp``."""
        dtype = dtype or xp.float64
        height, width = shape
        return cls(
            xp.zeros((channels, height, width), dtype=dtype),
            xp.zeros((channels, height, width), dtype=dtype),
            xp.zeros((height, width), dtype=dtype),
        )

    def mean(self) -> tuple[Any, Any]:
        """Return ``(image, coverage)``: the float32 weighted mean (NaN where no weight) and coverage."""
        xp = array_namespace(self.sum_wv, self.sum_w)
        positive = self.sum_w > 0
        image = self.sum_wv / xp.where(positive, self.sum_w, 1.0)
        image = xp.where(positive, image, xp.nan).astype(xp.float32)
        return image, self.coverage.astype(xp.float32)

    def validate(self, channels: int, shape: tuple[int, int]) -> None:
        """Raise ValueError when the sums do not match ``channels`` and the region ``shape``."""
        expected = {"sum_wv": (channels, *shape), "sum_w": (channels, *shape), "coverage": tuple(shape)}
        for name, want in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != want:
                raise ValueError(f"{name} must have shape {want} for this window and region, got {got}")


def _axis(length: int, step: int) -> np.ndarray:
    nodes = np.arange(0, length, step)
    return nodes if nodes[-1] == length - 1 else np.append(nodes, length - 1)


def _per_channel(values: Any, channels: int, default: float, name: str) -> np.ndarray:
    if values is None:
        return np.full(channels, default, dtype=np.float32)
    array = np.asarray(values, dtype=np.float32).ravel()
    if array.size == 1:
        return np.full(channels, array[0], dtype=np.float32)
    if array.size != channels:
        raise ValueError(f"{name} must hold 1 or {channels} values (one per channel), got {array.size}")
    return array


def _backend(xp: Any) -> str:
    if xp is np:
        return "numba"
    if getattr(xp, "__name__", "") == "cupy":
        return "cupy"
    return "reference"


def accumulate_window(
    image: Any,
    mapping: WindowMapping,
    sums: MeanSums,
    coefficients: FrameCoefficients | None = None,
    *,
    coverage_max: bool = False,
) -> int:
    """Add one frame window's weighted samples to a region's running sums, in place.

    At every output pixel where the frame has data (inside ``valid_box``, every tap of
    the kernel finite), each channel's value ``v_c = gain_c * sample_c + offset_c`` and
    weight ``w_c = footprint * weight_c`` give ``sum_wv[c] += w_c v_c`` and
    ``sum_w[c] += w_c`` (where ``v_c`` is finite and ``w_c > 0``), and ``coverage``
    receives the footprint (added, or maximised with ``coverage_max`` to count the
    duplicates of one frame once).

    Parameters
    ----------
    image : array
        ``(C, H, W)`` float32 prepared window (numpy, cupy or another namespace).
    mapping : WindowMapping
        The region's mapping into the window.
    sums : MeanSums
        Running sums in the namespace of ``image``.
    coefficients : FrameCoefficients, optional
        Normalisation and frame weight; identity by default.
    coverage_max : bool
        Maximise instead of add into ``sums.coverage``.

    Returns
    -------
    int
        Number of output pixels the frame gave data to.
    """
    xp = array_namespace(image, sums.sum_wv, sums.sum_w, sums.coverage)
    mapping.validate(image)
    sums.validate(image.shape[0], mapping.shape)
    gains, offsets, weights = (coefficients or FrameCoefficients()).arrays(image.shape[0])
    backend = _backend(xp)
    if backend == "numba":
        from .kernels_cpu import accumulate_window_cpu

        return int(
            accumulate_window_cpu(
                *_kernel_inputs(image, mapping),
                gains,
                offsets,
                weights,
                sums.sum_wv,
                sums.sum_w,
                sums.coverage,
                bool(coverage_max),
            )
        )
    if backend == "cupy":
        from .kernels_gpu import accumulate_window_gpu

        return accumulate_window_gpu(image, mapping, sums, (gains, offsets, weights), coverage_max=coverage_max)
    return accumulate_window_reference(image, mapping, sums, coefficients, coverage_max=coverage_max)


def sample_window(image: Any, mapping: WindowMapping, values_out: Any, footprint_out: Any) -> int:
    """Write one frame window's samples onto a region into preallocated arrays.

    Parameters
    ----------
    image : array
        ``(C, H, W)`` float32 prepared window.
    mapping : WindowMapping
        The region's mapping into the window.
    values_out : array
        ``(C, h, w)`` float32 destination (e.g. ``samples[k]`` of a ``(K, C, h, w)`` stack):
        the samples, NaN outside the valid box (and in a channel whose taps hold NaN).
    footprint_out : array
        ``(h, w)`` float32 destination: 1 where every channel has data, else 0.

    Returns
    -------
    int
        Number of output pixels inside the footprint.

    Notes
    -----
    The result equals :func:`~.resample.sample` at the dense mapped coordinates.
    """
    xp = array_namespace(image, values_out, footprint_out)
    mapping.validate(image)
    channels = image.shape[0]
    if tuple(values_out.shape) != (channels, *mapping.shape) or tuple(footprint_out.shape) != tuple(mapping.shape):
        raise ValueError(
            f"values_out must be {(channels, *mapping.shape)} and footprint_out {tuple(mapping.shape)}, got "
            f"{tuple(values_out.shape)} and {tuple(footprint_out.shape)}"
        )
    backend = _backend(xp)
    if backend == "numba":
        from .kernels_cpu import sample_window_cpu

        _require_float32_c(values_out, "values_out")
        _require_float32_c(footprint_out, "footprint_out")
        return int(
            sample_window_cpu(
                *_kernel_inputs(image, mapping),
                values_out,
                footprint_out,
            )
        )
    if backend == "cupy":
        from .kernels_gpu import sample_window_gpu

        return sample_window_gpu(image, mapping, values_out, footprint_out)
    return sample_window_reference(image, mapping, values_out, footprint_out)


def _kernel_inputs(image: np.ndarray, mapping: WindowMapping) -> tuple[Any, ...]:
    """The leading arguments of the CPU kernels: node maps, step, window, origin, valid box, method code."""
    from .kernels_cpu import METHOD_CODES

    return (
        np.ascontiguousarray(mapping.node_x, dtype=np.float64),
        np.ascontiguousarray(mapping.node_y, dtype=np.float64),
        int(mapping.step),
        np.ascontiguousarray(image, dtype=np.float32),
        float(mapping.origin[0]),
        float(mapping.origin[1]),
        np.asarray(mapping.box_for(image.shape), dtype=np.float64),
        METHOD_CODES[mapping.method],
    )


def _require_float32_c(array: np.ndarray, name: str) -> None:
    if array.dtype != np.float32 or not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(
            f"{name} must be a writeable C-contiguous float32 array (a slice samples[k] of a (K, C, h, w) "
            f"buffer), got dtype {array.dtype} with flags c_contiguous={array.flags.c_contiguous}"
        )


def _dense_samples(image: Any, mapping: WindowMapping) -> tuple[Any, Any]:
    xp = array_namespace(image)
    map_x, map_y = interpolate_pixel_map(mapping.coarse(), xp)
    y0, x0 = mapping.origin
    return sample(image, map_x - x0, map_y - y0, mapping.box_for(image.shape), mapping.method)


def accumulate_window_reference(
    image: Any,
    mapping: WindowMapping,
    sums: MeanSums,
    coefficients: FrameCoefficients | None = None,
    *,
    coverage_max: bool = False,
) -> int:
    """:func:`accumulate_window` in plain array operations (dense map, then :func:`~.resample.sample`)."""
    xp = array_namespace(image, sums.sum_wv)
    values, footprint = _dense_samples(image, mapping)
    gains, offsets, weights = (
        xp.asarray(a)[:, None, None] for a in (coefficients or FrameCoefficients()).arrays(image.shape[0])
    )
    values = values * gains + offsets
    finite = xp.isfinite(values)
    has_data = (footprint > 0) & xp.any(finite, axis=0)
    weight = footprint[None] * weights
    valid = finite & (weight > 0)
    zero = xp.float32(0)
    sums.sum_wv[...] = sums.sum_wv + xp.where(valid, weight * values, zero)
    sums.sum_w[...] = sums.sum_w + xp.where(valid, weight, zero)
    contribution = xp.where(has_data, footprint, zero)
    if coverage_max:
        sums.coverage[...] = xp.maximum(sums.coverage, contribution)
    else:
        sums.coverage[...] = sums.coverage + contribution
    return int(xp.sum(has_data))


def sample_window_reference(image: Any, mapping: WindowMapping, values_out: Any, footprint_out: Any) -> int:
    """:func:`sample_window` in plain array operations (dense map, then :func:`~.resample.sample`)."""
    values, footprint = _dense_samples(image, mapping)
    values_out[...] = values
    footprint_out[...] = footprint
    xp = array_namespace(footprint)
    return int(xp.sum(footprint > 0))
