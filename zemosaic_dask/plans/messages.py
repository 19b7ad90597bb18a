"""User-facing log texts of the planning layer, keyed by a stable identifier.

Every line a planner logs is formatted from this table, so the texts can move into the
project's message catalogue (and be translated) without touching the planners.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MESSAGES", "format_message"]

MESSAGES: dict[str, str] = {
    # master-tile groups
    "groups_threshold_relaxed": (
        "Grouping: {singletons} of {n_frames} frames stayed alone at {threshold:.4f} deg; "
        "relaxing the threshold to {relaxed:.4f} deg (1.2 x 90th percentile of nearest-neighbour separations)."
    ),
    "groups_split": "Grouping: group of {size} frames exceeds the cap of {cap}; split into {parts} groups ({how}).",
    "groups_merged": "Grouping: merged a group of {size} frame(s) into its nearest group (now {merged} frames).",
    "groups_summary": "Grouping: {n_groups} master-tile group(s) with sizes {sizes} (threshold {threshold:.4f} deg).",
    # classic batches
    "batch_duplicating": "[Batch] Duplicating frames: original={original} -> final={final} for tile {tile}",
    "tile_salvage": "Tile {tile}: salvage mode (n={n}). Relaxing QC and crop.",
    "batch_trailing_merged": (
        "[Batch] Trailing window of {size} frame(s) is too small to stack; merged into the previous batch "
        "(now {merged} frames)."
    ),
    "batches_summary": "[Batch] {n_tiles} tile batch(es) from {n_groups} group(s), overlap {overlap:.0%}.",
    # SDS (ZeSupaDupStack)
    "sds_policy": "SDS: coverage={coverage}, min_size={min_size}, target_size={target_size}.",
    "sds_built": "SDS: built {count} batch(es) with sizes: {sizes}, coverage: {coverage}",
    "sds_preplan_used": "SDS: using {n_batches} pre-planned group(s) as batches.",
    "sds_preplan_refused": "SDS: pre-planned groups not used: {reason}.",
    "sds_frame_excluded": "SDS: frame {path} left out: {reason}.",
    "sds_error_no_valid_batches": "sds_error_no_valid_batches: {reason}; falling back to Mosaic-First",
    # assembly plan and two-pass renormalisation
    "assembly_plan": (
        "Assembly plan: cpu_workers={cpu_workers} gpu_workers={gpu_workers} use_gpu={use_gpu} "
        "max_chunk_mb={max_chunk_mb:.1f} gpu_max_chunk_mb={gpu_max_chunk_mb:.1f} rows={rows} gpu_rows={gpu_rows}"
    ),
    "two_pass_plan": (
        "[TwoPass] plan={source} cpu_workers={cpu_workers} use_gpu={use_gpu} max_chunk_mb={max_chunk_mb:.1f} "
        "gpu_max_chunk_mb={gpu_max_chunk_mb:.1f} rows={rows} gpu_rows={gpu_rows}"
    ),
    "two_pass_gpu_disabled": "[TwoPass] GPU requested but disabled by plan.use_gpu=False -> forcing CPU",
}


def format_message(key: str, **fields: Any) -> str:
    """Return the text of message ``key`` formatted with ``fields``.

    Parameters
    ----------
    key : str
        A key of :data:`MESSAGES`.
    **fields
        Values for the message's ``{placeholders}``.

    Returns
    -------
    str
    """
    return MESSAGES[key].format(**fields)
