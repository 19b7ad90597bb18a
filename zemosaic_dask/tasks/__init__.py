"""Pure array functions (numpy or cupy through the input's namespace).

Nothing here imports dask, distributed or cupy.
"""

from .namespace import array_namespace, is_numpy_namespace, to_numpy
from .normalisation import FrameStatistics, frame_statistics, normalisation_coefficients
from .stacking import StackOptions, StackResult, peak_memory_bytes, stack_samples
from .weighting import frame_weights, radial_weight

__all__ = [
    "FrameStatistics",
    "StackOptions",
    "StackResult",
    "array_namespace",
    "frame_statistics",
    "frame_weights",
    "is_numpy_namespace",
    "normalisation_coefficients",
    "peak_memory_bytes",
    "radial_weight",
    "stack_samples",
    "to_numpy",
]
