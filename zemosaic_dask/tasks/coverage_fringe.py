"""Which of the pixels under the SDS coverage threshold the mask removes: the field's fringe only."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["low_coverage_fringe"]


def low_coverage_fringe(low: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """The low-coverage pixels that belong to the field's fringe: ``low`` where it reaches the edge.

    The mask trims the thin, noisy border that few batch mosaics reach. In a survey of few
    frames per panel, spots inside the field can fall under the threshold too (where one
    batch alone reaches, or around a gap that no frame covers); masking them punched holes
    where every other mode has data. So a connected part of ``low`` is masked only when it
    touches the outside of the field (pixels outside ``covered`` connected to the window's edge;
    a gap enclosed by the window is not the outside) or the window's own edge (past which it
    may run on to the field's edge in the next region; such a part is masked, as every low
    pixel was before).

    Parameters
    ----------
    low : numpy.ndarray
        ``(H, W)`` bool: covered pixels reached by fewer layers than the threshold.
    covered : numpy.ndarray
        ``(H, W)`` bool: pixels with data before the mask.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool, a subset of ``low``: the pixels to mask.
    """
    low = np.asarray(low, dtype=bool)
    if not low.any():
        return low
    border = np.zeros(low.shape, dtype=bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    gaps, _ = ndimage.label(~np.asarray(covered, dtype=bool))
    outside = np.unique(gaps[border])
    edge = ndimage.binary_dilation(np.isin(gaps, outside[outside > 0])) | border
    labels, _ = ndimage.label(low)
    touching = np.unique(labels[edge & low])
    return np.isin(labels, touching[touching > 0])
