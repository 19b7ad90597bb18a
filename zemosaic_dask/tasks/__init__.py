"""Pure array functions (numpy or cupy through the input's namespace).

Nothing here imports dask, distributed or cupy.
"""

from .namespace import array_namespace, is_numpy_namespace, to_numpy

__all__ = ["array_namespace", "is_numpy_namespace", "to_numpy"]
