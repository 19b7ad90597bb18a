"""Readers and writers: input scan, frame ingest, Zarr stores and output products."""

from .frames import IngestOptions, inspect_frame, read_frame_window, shift_bayer_pattern
from .scan import DEFAULT_EXTENSIONS, scan_inputs

__all__ = [
    "DEFAULT_EXTENSIONS",
    "IngestOptions",
    "inspect_frame",
    "read_frame_window",
    "scan_inputs",
    "shift_bayer_pattern",
]
