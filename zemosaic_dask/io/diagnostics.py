"""Diagnostic files of the inter-tile calibration: one CSV row per pair and channel."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

from ..tasks.gain_solve import TileCorrections
from ..tasks.intertile import PairFit

__all__ = ["PAIR_DIAGNOSTIC_COLUMNS", "write_pair_diagnostics"]

log = logging.getLogger(__name__)

#: Columns of the pair diagnostics CSV, in order.
PAIR_DIAGNOSTIC_COLUMNS: tuple[str, ...] = (
    "i",
    "j",
    "channel",
    "gain",
    "offset",
    "gain_error",
    "sky_level",
    "n_samples",
    "residual_rms",
    "solved_residual_gain",
    "solved_residual_offset",
    "solve_weight",
    "skipped",
)


def write_pair_diagnostics(path: str | os.PathLike[str], fits: Sequence[PairFit], corrections: TileCorrections) -> Path:
    """Write the pair fits and their residuals after the solve to a CSV file.

    Parameters
    ----------
    path : path-like
        Destination file (its folder is created); overwritten if present.
    fits : sequence of PairFit
        Every fitted or skipped pair.
    corrections : TileCorrections
        The solve's result; its ``pair_residuals`` fill the ``solved_*`` columns (empty for pairs
        the solve did not use: skipped, or outside the anchor's component).

    Returns
    -------
    Path
        The file written. One row per pair and channel (a skipped pair gives one row per channel
        with its reason in ``skipped`` and empty numbers), columns :data:`PAIR_DIAGNOSTIC_COLUMNS`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    solved = {(row["i"], row["j"], row["channel"]): row for row in corrections.pair_residuals}
    n_channels = len(corrections.gains[0]) if corrections.gains else 1
    rows = 0
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(PAIR_DIAGNOSTIC_COLUMNS)
        for fit in fits:
            for c in range(fit.n_channels or n_channels):
                residual = solved.get((fit.i, fit.j, c), {})
                writer.writerow(
                    [
                        fit.i,
                        fit.j,
                        c,
                        _number(fit.gain, c),
                        _number(fit.offset, c),
                        _number(fit.gain_error, c),
                        _number(fit.sky_level, c),
                        fit.n_samples,
                        _number(fit.residual_rms, c),
                        _format(residual.get("residual_gain")),
                        _format(residual.get("residual_offset")),
                        _format(residual.get("weight")),
                        fit.skipped or "",
                    ]
                )
                rows += 1
    log.info("inter-tile pair diagnostics: %d row(s) written to %s", rows, target)
    return target


def _number(values: Sequence[float], channel: int) -> str:
    return _format(values[channel] if channel < len(values) else None)


def _format(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return repr(float(value))
