"""Fused GPU kernels (cupy RawKernel): map, sample and accumulate one frame window onto a region.

The CUDA source below runs the arithmetic of :mod:`.kernels_cpu` with one thread per
output pixel and a loop over channels: the pixel's input coordinates are interpolated
from the coarse node map (float64), the window is sampled (float32 taps, float64 tap
weights for bicubic and Lanczos-3, as on the CPU), and the thread adds to its own
pixel's sums or writes its own pixel's sample, so no atomics are needed. Kernels are
compiled with ``--fmad=false`` so that no multiply-add is contracted and the results
equal the CPU's to rounding of ``sin``.

cupy is imported inside the functions only; this module imports without it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import GpuUnavailableError
from .namespace import array_namespace

__all__ = ["KERNEL_SOURCE", "MAX_CHANNELS", "accumulate_window_gpu", "compiled_kernel", "sample_window_gpu"]

log = logging.getLogger(__name__)

#: Largest channel count the kernels accept (values of one pixel live in registers).
MAX_CHANNELS = 8
_BLOCK = 256

_COMMON = r"""
#define MAX_CHANNELS 8
#define PI 3.14159265358979323846

__device__ void axis_node(int p, int step, int n_nodes, int length, int* i0, int* i1, double* t) {
    int last = n_nodes - 2 > 0 ? n_nodes - 2 : 0;
    int a = p / step;
    a = a < last ? a : last;
    int b = a + 1 < n_nodes - 1 ? a + 1 : n_nodes - 1;
    double p0 = (double)(a * step < length - 1 ? a * step : length - 1);
    double p1 = (double)(b * step < length - 1 ? b * step : length - 1);
    double span = p1 - p0 > 1.0 ? p1 - p0 : 1.0;
    *i0 = a;
    *i1 = b;
    *t = ((double)p - p0) / span;
}

__device__ double map_at(const double* nodes, int nx, int r0, int r1, double ty, int c0, int c1, double tx) {
    double top = nodes[r0 * nx + c0] * (1.0 - tx) + nodes[r0 * nx + c1] * tx;
    double bottom = nodes[r1 * nx + c0] * (1.0 - tx) + nodes[r1 * nx + c1] * tx;
    return top * (1.0 - ty) + bottom * ty;
}

__device__ double keys_weight(double d) {
    const double a = -0.5;
    d = fabs(d);
    if (d <= 1.0) return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
    if (d < 2.0) return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
    return 0.0;
}

__device__ double lanczos3_weight(double d) {
    d = fabs(d);
    if (d < 1e-12) return 1.0;
    if (d < 3.0) return 3.0 * sin(PI * d) * sin(PI * d / 3.0) / (PI * PI * d * d);
    return 0.0;
}

__device__ int tap_weights(double t, int method, float* out) {
    if (method == 1) {
        for (int k = 0; k < 4; ++k) out[k] = (float)keys_weight(t - (double)(k - 1));
        return 4;
    }
    double raw[6];
    double total = 0.0;
    for (int k = 0; k < 6; ++k) { raw[k] = lanczos3_weight(t - (double)(k - 2)); total += raw[k]; }
    for (int k = 0; k < 6; ++k) out[k] = (float)(raw[k] / total);
    return 6;
}

__device__ bool inside_box(double xw, double yw, const double* box) {
    return isfinite(xw) && isfinite(yw) && xw >= box[2] && xw <= box[3] && yw >= box[0] && yw <= box[1];
}

// Samples every channel at (xw, yw); returns true when every value is finite. Call inside the box only.
// A position between the outer pixel centre and the frame edge takes the edge pixel (clamped first).
__device__ bool sample_pixel(const float* image, int channels, int height, int width,
                             double xw, double yw, int method, float* values) {
    const long long plane = (long long)height * width;
    bool ok = true;
    xw = fmin(fmax(xw, 0.0), (double)width - 1.0);
    yw = fmin(fmax(yw, 0.0), (double)height - 1.0);
    if (method == 0) {
        double fx = floor(xw), fy = floor(yw);
        double hx = (double)(width - 2 > 0 ? width - 2 : 0), hy = (double)(height - 2 > 0 ? height - 2 : 0);
        int x0 = (int)fmin(fmax(fx, 0.0), hx);
        int y0 = (int)fmin(fmax(fy, 0.0), hy);
        int x1 = x0 + 1 < width - 1 ? x0 + 1 : width - 1;
        int y1 = y0 + 1 < height - 1 ? y0 + 1 : height - 1;
        float tx = (float)(xw - (double)x0);
        float ty = (float)(yw - (double)y0);
        float w00 = (1.0f - tx) * (1.0f - ty);
        float w01 = tx * (1.0f - ty);
        float w10 = (1.0f - tx) * ty;
        float w11 = tx * ty;
        for (int c = 0; c < channels; ++c) {
            const float* p = image + c * plane;
            float v = p[(long long)y0 * width + x0] * w00 + p[(long long)y0 * width + x1] * w01
                    + p[(long long)y1 * width + x0] * w10 + p[(long long)y1 * width + x1] * w11;
            values[c] = v;
            ok = ok && isfinite(v);
        }
        return ok;
    }
    float wx[6], wy[6];
    double bx = floor(xw), by = floor(yw);
    int taps = tap_weights(xw - bx, method, wx);
    tap_weights(yw - by, method, wy);
    int first = method == 1 ? -1 : -2;
    int ibx = (int)bx, iby = (int)by;
    for (int c = 0; c < channels; ++c) {
        const float* p = image + c * plane;
        float value = 0.0f;
        for (int i = 0; i < taps; ++i) {
            int row = iby + first + i;
            row = row < 0 ? 0 : (row > height - 1 ? height - 1 : row);
            float row_sum = 0.0f;
            for (int j = 0; j < taps; ++j) {
                int col = ibx + first + j;
                col = col < 0 ? 0 : (col > width - 1 ? width - 1 : col);
                row_sum += p[(long long)row * width + col] * wx[j];
            }
            value += row_sum * wy[i];
        }
        values[c] = value;
        ok = ok && isfinite(value);
    }
    return ok;
}

// Adds the number of counting threads to *total, one atomic per group of converged warp lanes.
__device__ void count_pixels(bool counted, int* total) {
    unsigned mask = __activemask();
    unsigned votes = __ballot_sync(mask, counted);
    int leader = __ffs(mask) - 1;
    if ((int)(threadIdx.x & 31) == leader && votes != 0) atomicAdd(total, __popc(votes));
}

// Input coordinates (window frame) of output pixel (r, col).
__device__ void window_position(const double* node_x, const double* node_y, int ny, int nx, int step,
                                int r, int col, int height, int width, double origin_y, double origin_x,
                                double* xw, double* yw) {
    int r0, r1, c0, c1;
    double ty, tx;
    axis_node(r, step, ny, height, &r0, &r1, &ty);
    axis_node(col, step, nx, width, &c0, &c1, &tx);
    *xw = map_at(node_x, nx, r0, r1, ty, c0, c1, tx) - origin_x;
    *yw = map_at(node_y, nx, r0, r1, ty, c0, c1, tx) - origin_y;
}
"""

_ACCUMULATE = r"""
extern "C" __global__ void accumulate_window(
        const double* node_x, const double* node_y, int ny, int nx, int step,
        const float* image, int channels, int win_h, int win_w,
        double origin_y, double origin_x, const double* box, int method,
        const float* gains, const float* offsets, const float* weights,
        ACC_T* sum_wv, ACC_T* sum_w, COV_T* coverage, int coverage_max,
        int height, int width, int* reached) {
    long long idx = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    long long plane = (long long)height * width;
    if (idx >= plane) return;
    int r = (int)(idx / width), col = (int)(idx % width);
    double xw, yw;
    window_position(node_x, node_y, ny, nx, step, r, col, height, width, origin_y, origin_x, &xw, &yw);
    float values[MAX_CHANNELS];
    bool ok = inside_box(xw, yw, box) && sample_pixel(image, channels, win_h, win_w, xw, yw, method, values);
    bool has_data = false;
    for (int c = 0; ok && c < channels; ++c) {
        float v = gains[c] * values[c] + offsets[c];
        if (!isfinite(v)) continue;
        has_data = true;
        float w = weights[c];
        if (w > 0.0f) {
            sum_wv[c * plane + idx] += (ACC_T)(w * v);
            sum_w[c * plane + idx] += (ACC_T)w;
        }
    }
    if (has_data) {
        COV_T cov = coverage[idx];
        coverage[idx] = coverage_max ? (cov > (COV_T)1 ? cov : (COV_T)1) : cov + (COV_T)1;
    }
    count_pixels(has_data, reached);
}
"""

_SAMPLE = r"""
extern "C" __global__ void sample_window(
        const double* node_x, const double* node_y, int ny, int nx, int step,
        const float* image, int channels, int win_h, int win_w,
        double origin_y, double origin_x, const double* box, int method,
        float* values_out, float* footprint_out, int height, int width, int* reached) {
    long long idx = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    long long plane = (long long)height * width;
    if (idx >= plane) return;
    int r = (int)(idx / width), col = (int)(idx % width);
    double xw, yw;
    window_position(node_x, node_y, ny, nx, step, r, col, height, width, origin_y, origin_x, &xw, &yw);
    float values[MAX_CHANNELS];
    bool inside = inside_box(xw, yw, box);
    bool ok = inside && sample_pixel(image, channels, win_h, win_w, xw, yw, method, values);
    const float not_a_number = __int_as_float(0x7fc00000);
    for (int c = 0; c < channels; ++c) values_out[c * plane + idx] = inside ? values[c] : not_a_number;
    footprint_out[idx] = ok ? 1.0f : 0.0f;
    count_pixels(ok, reached);
}
"""

#: The full CUDA source of each kernel (before the accumulator types are substituted).
KERNEL_SOURCE = {"accumulate_window": _COMMON + _ACCUMULATE, "sample_window": _COMMON + _SAMPLE}

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_CACHE: dict[tuple[str, str, str], Any] = {}


def _gpu_namespace(xp: Any) -> Any:
    """The cupy module the arrays came from; an error that says what to install otherwise."""
    if getattr(xp, "RawKernel", None) is None:
        raise GpuUnavailableError(
            f"the GPU kernels need cupy arrays, got the namespace {getattr(xp, '__name__', xp)!r}; install "
            "zemosaic-dask[gpu] (CUDA 12) or zemosaic-dask[gpu-cuda13], or run on a CPU worker"
        )
    return xp


def compiled_kernel(name: str, xp: Any = None, acc_dtype: Any = np.float64, cov_dtype: Any = np.float64) -> Any:
    """Return the compiled ``accumulate_window`` or ``sample_window`` kernel (compiled once per process).

    Parameters
    ----------
    name : str
        ``accumulate_window`` or ``sample_window``.
    xp : module
        The GPU array namespace (cupy), taken from the arrays the kernel will receive; cupy is
        never imported here.
    acc_dtype, cov_dtype : dtype
        float32 or float64 element type of the sums and of the coverage (accumulate only).
    """
    cupy = _gpu_namespace(xp)
    acc, cov = _ctype(acc_dtype, "sum_wv/sum_w"), _ctype(cov_dtype, "coverage")
    key = (name, acc, cov)
    kernel = _CACHE.get(key)
    if kernel is None:
        source = KERNEL_SOURCE[name].replace("ACC_T", acc).replace("COV_T", cov)
        kernel = cupy.RawKernel(source, name, options=("--fmad=false",))
        _CACHE[key] = kernel
        log.debug("compiled CUDA kernel %s (sums %s, coverage %s)", name, acc, cov)
    return kernel


def _ctype(dtype: Any, what: str) -> str:
    ctype = _CTYPES.get(np.dtype(dtype))
    if ctype is None:
        raise ValueError(f"{what} must be float32 or float64 on the GPU, got {np.dtype(dtype)}")
    return ctype


def _geometry(cupy: Any, image: Any, mapping: Any) -> tuple[Any, ...]:
    channels, win_h, win_w = (int(n) for n in image.shape)
    if channels > MAX_CHANNELS:
        raise ValueError(f"the GPU kernels take at most {MAX_CHANNELS} channels, got {channels}")
    node_x = cupy.ascontiguousarray(cupy.asarray(mapping.node_x, dtype=cupy.float64))
    node_y = cupy.ascontiguousarray(cupy.asarray(mapping.node_y, dtype=cupy.float64))
    ny, nx = (int(n) for n in node_x.shape)
    box = cupy.asarray(np.asarray(mapping.box_for(image.shape), dtype=np.float64))
    from .kernels_cpu import METHOD_CODES

    return (
        node_x,
        node_y,
        np.int32(ny),
        np.int32(nx),
        np.int32(mapping.step),
        cupy.ascontiguousarray(image, dtype=cupy.float32),
        np.int32(channels),
        np.int32(win_h),
        np.int32(win_w),
        np.float64(mapping.origin[0]),
        np.float64(mapping.origin[1]),
        box,
        np.int32(METHOD_CODES[mapping.method]),
    )


def _require_c_contiguous(array: Any, name: str) -> None:
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous on the GPU (a slice [k] of a (K, ...) buffer is)")


def _launch_shape(height: int, width: int) -> tuple[tuple[int], tuple[int]]:
    blocks = (height * width + _BLOCK - 1) // _BLOCK
    return (max(blocks, 1),), (_BLOCK,)


def accumulate_window_gpu(
    image: Any, mapping: Any, sums: Any, coefficients: tuple[np.ndarray, np.ndarray, np.ndarray], *, coverage_max: bool
) -> int:
    """GPU :func:`~.accumulate.accumulate_window` (cupy arrays; see there for the semantics)."""
    cupy = _gpu_namespace(array_namespace(image))
    for name in ("sum_wv", "sum_w", "coverage"):
        _require_c_contiguous(getattr(sums, name), name)
    if sums.sum_wv.dtype != sums.sum_w.dtype:
        raise ValueError(f"sum_wv and sum_w must share a dtype, got {sums.sum_wv.dtype} and {sums.sum_w.dtype}")
    height, width = (int(n) for n in mapping.shape)
    kernel = compiled_kernel("accumulate_window", cupy, sums.sum_wv.dtype, sums.coverage.dtype)
    gains, offsets, weights = (cupy.asarray(a, dtype=cupy.float32) for a in coefficients)
    reached = cupy.zeros(1, dtype=cupy.int32)
    grid, block = _launch_shape(height, width)
    args = _geometry(cupy, image, mapping) + (
        gains,
        offsets,
        weights,
        sums.sum_wv,
        sums.sum_w,
        sums.coverage,
        np.int32(1 if coverage_max else 0),
        np.int32(height),
        np.int32(width),
        reached,
    )
    kernel(grid, block, args)
    return int(reached.get()[0])


def sample_window_gpu(image: Any, mapping: Any, values_out: Any, footprint_out: Any) -> int:
    """GPU :func:`~.accumulate.sample_window` (cupy arrays; see there for the semantics)."""
    cupy = _gpu_namespace(array_namespace(image))
    for array, name in ((values_out, "values_out"), (footprint_out, "footprint_out")):
        _require_c_contiguous(array, name)
        if array.dtype != cupy.float32:
            raise ValueError(f"{name} must be float32, got {array.dtype}")
    height, width = (int(n) for n in mapping.shape)
    kernel = compiled_kernel("sample_window", cupy)
    reached = cupy.zeros(1, dtype=cupy.int32)
    grid, block = _launch_shape(height, width)
    kernel(
        grid,
        block,
        _geometry(cupy, image, mapping) + (values_out, footprint_out, np.int32(height), np.int32(width), reached),
    )
    return int(reached.get()[0])
