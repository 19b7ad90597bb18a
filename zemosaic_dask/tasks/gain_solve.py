"""One gain and one offset per layer from all pair fits: the global inter-tile solve.

Each layer k is corrected as ``g_k * x_k + o_k``. A pair fit ``x_j ~ a x_i + b`` (see
:mod:`zemosaic_dask.tasks.intertile`) asks that the corrected layers agree on the overlap,
``g_i x_i + o_i = g_j (a x_i + b) + o_j`` for every ``x_i``, hence

- gains: ``log g_i - log g_j = log a``;
- offsets: ``o_i - o_j = g_j b``, written at the pair's sky level ``s`` (the fit's centroid in
  layer i's units) as ``o_i - o_j = g_j (a s + b) - g_i s``. Both forms are equal when the
  gains satisfy their equation; where they do not (noise, a clamp) the second still makes the
  two layers' sky levels meet, which is what hides a seam.

Each is a sparse weighted least-squares problem over the layers of one connected component,
gains first (in log space), then offsets with the solved gains; the normal equations (a
weighted graph Laplacian) are solved directly with ``scipy.sparse.linalg.spsolve``, with
``lsqr`` as the fallback. Pair weights are the inverse variances of the fits (``gain_error``, and
``residual_rms^2 / n_samples`` for levels), multiplied by Huber weights recomputed from the
standardised residuals at each iteration (iteratively reweighted least squares), so that one
bad overlap (a satellite trail, a wrong registration) cannot pull the solution. The anchor
removes the global degeneracy: the best-connected layer gets ``g = 1, o = 0``, or the mean log
gain and the mean offset of the component are 0.

This is a small global solve on the client over per-pair numbers, not a pixel kernel: it uses
numpy and scipy.sparse directly rather than an array namespace.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, diags, identity
from scipy.sparse.csgraph import connected_components, shortest_path
from scipy.sparse.linalg import lsqr, spsolve

from .closure_weights import closure_weights
from .intertile import PairFit

__all__ = ["ANCHORS", "TileCorrections", "solve_tile_corrections"]

log = logging.getLogger(__name__)

ANCHORS: tuple[str, ...] = ("best-connected", "mean-gain")
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class TileCorrections:
    """Per-layer corrections ``g * x + o`` and how they were obtained.

    Attributes
    ----------
    gains, offsets : tuple of tuple of float
        ``[layer][channel]``; :attr:`gain_array` / :attr:`offset_array` give ``(N, C)`` arrays.
    anchor : int or None
        The layer held at ``g = 1, o = 0`` (None for the ``mean-gain`` anchor).
    pair_residuals : list of dict
        One per used pair and channel: ``i, j, channel``, ``residual_gain`` (``g_i / (g_j a) - 1``),
        ``residual_offset`` (sky-level mismatch after correction, in the anchor's units) and
        ``weight`` (the final Huber factor in [0, 1], the smaller of the gain and offset solves).
    clamped : list of str
        One line per clamped value (also logged as a warning).
    skipped_pairs : int
        Fits that were skipped (or not finite) and left out of the solve.
    unconnected : list of int
        Layers outside the anchor's connected component; they keep ``g = 1, o = 0``.
    """

    gains: tuple[tuple[float, ...], ...]
    offsets: tuple[tuple[float, ...], ...]
    anchor: int | None
    pair_residuals: list[dict[str, Any]] = field(default_factory=list)
    clamped: list[str] = field(default_factory=list)
    skipped_pairs: int = 0
    unconnected: list[int] = field(default_factory=list)

    @property
    def gain_array(self) -> np.ndarray:
        """``(N, C)`` float64 gains."""
        return np.asarray(self.gains, dtype=np.float64)

    @property
    def offset_array(self) -> np.ndarray:
        """``(N, C)`` float64 offsets."""
        return np.asarray(self.offsets, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (for ``report.json``)."""
        return {
            "gains": [list(row) for row in self.gains],
            "offsets": [list(row) for row in self.offsets],
            "anchor": self.anchor,
            "pair_residuals": [dict(row) for row in self.pair_residuals],
            "clamped": list(self.clamped),
            "skipped_pairs": self.skipped_pairs,
            "unconnected": list(self.unconnected),
        }


def solve_tile_corrections(
    n_tiles: int,
    fits: Sequence[PairFit],
    *,
    anchor: str = "best-connected",
    max_iterations: int = 5,
    huber: float = 1.5,
    gain_limits: tuple[float, float] = (0.5, 2.0),
    offset_limit: float = 0.5,
    n_channels: int | None = None,
) -> TileCorrections:
    """Solve one gain and offset per layer and channel from the pair fits.

    Parameters
    ----------
    n_tiles : int
        Number of layers (indices in ``fits`` lie in ``range(n_tiles)``).
    fits : sequence of PairFit
        Fits of overlapping pairs; skipped or non-finite ones are counted and ignored.
    anchor : {"best-connected", "mean-gain"}, optional
        ``best-connected``: the most central layer of the largest connected component of the
        overlap graph (fewest pairs to its farthest layer; ties go to the most pairs, the most
        samples, the lowest index) keeps ``g = 1, o = 0``, so errors along chains of pairs stay
        short. ``mean-gain``: the component's mean log gain and mean offset are 0.
    max_iterations : int, optional
        Rounds of each solve: 1 is plain weighted least squares; more start from weights given
        by triangle closures (a pair that disagrees with every detour through a third layer
        starts down-weighted) and reweight from the residuals (Huber) at each round.
    huber : float, optional
        Huber threshold in robust sigmas of the standardised residuals.
    gain_limits : tuple of float, optional
        Gains outside are clamped (and listed).
    offset_limit : float, optional
        Offsets beyond this fraction of the layer's corrected sky level (or ten times its noise,
        whichever is larger) are clamped.
    n_channels : int, optional
        Channels, when no fit says it (every pair skipped).

    Returns
    -------
    TileCorrections

    Raises
    ------
    ValueError
        For an unknown anchor, a negative layer count or a fit naming a layer outside
        ``range(n_tiles)``.
    """
    if anchor not in ANCHORS:
        raise ValueError(f"unknown calibration anchor {anchor!r}; use one of {', '.join(ANCHORS)}")
    if n_tiles < 0:
        raise ValueError(f"n_tiles must be >= 0, got {n_tiles}")
    for fit in fits:
        if not (0 <= fit.i < n_tiles and 0 <= fit.j < n_tiles) or fit.i == fit.j:
            raise ValueError(f"pair ({fit.i}, {fit.j}) does not name two of the {n_tiles} layers")
    usable = [fit for fit in fits if _usable(fit)]
    skipped = len(fits) - len(usable)
    channels = usable[0].n_channels if usable else (n_channels or (fits[0].n_channels if fits else 1))
    gains = np.ones((n_tiles, channels))
    offsets = np.zeros((n_tiles, channels))
    if not usable:
        log.warning("inter-tile calibration: no usable pair among %d (all skipped); layers left as they are", len(fits))
        return TileCorrections(_rows(gains), _rows(offsets), None, [], [], skipped, list(range(n_tiles)))

    ii = np.array([fit.i for fit in usable])
    jj = np.array([fit.j for fit in usable])
    members, anchor_index = _anchor_component(n_tiles, usable, ii, jj)
    unconnected = sorted(set(range(n_tiles)) - set(members.tolist()))
    if unconnected:
        log.warning(
            "inter-tile calibration: %d layer(s) not connected to anchor %d keep gain 1, offset 0: %s",
            len(unconnected), anchor_index, unconnected[:20],
        )  # fmt: skip
    in_comp = np.isin(ii, members)
    used = [fit for fit, keep in zip(usable, in_comp, strict=True) if keep]
    ii, jj = ii[in_comp], jj[in_comp]

    residuals: list[dict[str, Any]] = []
    clamped: list[str] = []
    for c in range(channels):
        a = np.array([fit.gain[c] for fit in used])
        b = np.array([fit.offset[c] for fit in used])
        s = np.array([fit.sky_level[c] for fit in used])
        gain_error = np.array([fit.gain_error[c] if fit.gain_error else math.nan for fit in used])
        level_error = np.array([fit.residual_rms[c] / math.sqrt(max(fit.n_samples, 1)) for fit in used])
        sigma_log = _sigmas(gain_error / a)

        log_gain, w_gain = _irls(n_tiles, members, anchor_index, ii, jj, np.log(a), sigma_log, max_iterations, huber)
        if anchor == "mean-gain":
            log_gain[members] -= log_gain[members].mean()
        gains[:, c] = np.exp(log_gain)
        _clamp_gains(gains, c, members, gain_limits, clamped)

        g = gains[:, c]
        level_j = a * s + b  # layer j's sky level on the overlap
        rhs = g[jj] * level_j - g[ii] * s
        sigma_level = _sigmas(g[jj] * level_error)
        offs, w_off = _irls(n_tiles, members, anchor_index, ii, jj, rhs, sigma_level, max_iterations, huber)
        if anchor == "mean-gain":
            offs[members] -= offs[members].mean()
        offsets[:, c] = offs
        sky = _layer_sky(n_tiles, ii, jj, s, level_j, np.array([fit.residual_rms[c] for fit in used]))
        _clamp_offsets(gains, offsets, c, members, sky, offset_limit, clamped)

        o = offsets[:, c]
        res_gain = g[ii] / (g[jj] * a) - 1.0
        res_off = (g[ii] * s + o[ii]) - (g[jj] * level_j + o[jj])
        for p, fit in enumerate(used):
            residuals.append(
                {
                    "i": fit.i,
                    "j": fit.j,
                    "channel": c,
                    "residual_gain": float(res_gain[p]),
                    "residual_offset": float(res_off[p]),
                    "weight": float(min(w_gain[p], w_off[p])),
                }
            )
    for line in clamped:
        log.warning("inter-tile calibration: %s", line)
    down = sum(1 for row in residuals if row["weight"] < 0.5)
    log.info(
        "inter-tile calibration: %d layer(s), %d pair(s) used, %d skipped, anchor %s, %d pair-channel(s) down-weighted",
        n_tiles, len(used), skipped, anchor_index if anchor == "best-connected" else "mean-gain", down,
    )  # fmt: skip
    return TileCorrections(
        gains=_rows(gains),
        offsets=_rows(offsets),
        anchor=int(anchor_index) if anchor == "best-connected" else None,
        pair_residuals=residuals,
        clamped=clamped,
        skipped_pairs=skipped,
        unconnected=unconnected,
    )


def _usable(fit: PairFit) -> bool:
    if fit.skipped is not None:
        return False
    numbers = (*fit.gain, *fit.offset, *fit.sky_level, *fit.residual_rms)
    return all(math.isfinite(v) for v in numbers) and all(v > 0 for v in fit.gain)


def _sigmas(sigma: np.ndarray) -> np.ndarray:
    """Pair standard errors for weighting: unknown (NaN, <= 0) ones get the median known one; inf stays."""
    known = np.isfinite(sigma) & (sigma > 0)
    fill = float(np.median(sigma[known])) if known.any() else 1.0
    return np.where(np.isnan(sigma) | (sigma <= 0), fill, sigma)


def _rows(array: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in array)


def _anchor_component(n_tiles: int, fits: list[PairFit], ii: np.ndarray, jj: np.ndarray) -> tuple[np.ndarray, int]:
    """Return the layers of the largest connected component and its best-connected layer.

    Best connected: the most central layer of the overlap graph (smallest estimated eccentricity,
    see :func:`_eccentricity_estimate`), so that errors accumulated along chains of pairs stay
    short; ties go to the most pairs, then the most samples, then the lowest index.
    """
    graph = csr_matrix((np.ones(len(ii)), (ii, jj)), shape=(n_tiles, n_tiles))
    _, labels = connected_components(graph, directed=False)
    paired = np.zeros(n_tiles, dtype=bool)
    paired[ii] = paired[jj] = True
    sizes = np.bincount(labels[paired], minlength=labels.max() + 1)
    members = np.flatnonzero(labels == int(np.argmax(sizes)))  # the first largest component with a pair
    degree = np.bincount(np.concatenate([ii, jj]), minlength=n_tiles)
    samples = np.zeros(n_tiles)
    for fit in fits:
        samples[fit.i] += fit.n_samples
        samples[fit.j] += fit.n_samples
    eccentricity = _eccentricity_estimate(graph, members)
    order = sorted(members.tolist(), key=lambda k: (eccentricity[k], -degree[k], -samples[k], k))
    return members, int(order[0])


def _eccentricity_estimate(graph: csr_matrix, members: np.ndarray, landmarks: int = 8) -> np.ndarray:
    """Largest hop distance from each layer to a few far-apart landmark layers of its component.

    Landmarks are picked by farthest-point sampling (each the farthest from those already
    picked), so they sit at the component's extremities (the corners of a grid, both ends of a
    chain) and the layer nearest to all of them is the centre. Costs one breadth-first search
    per landmark.
    """
    outside = np.ones(graph.shape[0], dtype=bool)
    outside[members] = False
    nearest = np.full(graph.shape[0], np.inf)
    eccentricity = np.zeros(graph.shape[0])
    source = _farthest(graph, int(members[0]), outside)
    for _ in range(min(landmarks, len(members))):
        hops = shortest_path(graph, directed=False, unweighted=True, indices=source)
        hops[outside] = 0.0
        eccentricity = np.maximum(eccentricity, hops)
        nearest = np.minimum(nearest, hops)
        candidate = np.where(outside, -1.0, nearest)
        if candidate.max() <= 0:
            break
        source = int(np.argmax(candidate))
    return eccentricity


def _farthest(graph: csr_matrix, source: int, outside: np.ndarray) -> int:
    hops = shortest_path(graph, directed=False, unweighted=True, indices=source)
    return int(np.argmax(np.where(outside, -1.0, hops)))


def _irls(
    n_tiles: int,
    members: np.ndarray,
    anchor_index: int,
    ii: np.ndarray,
    jj: np.ndarray,
    rhs: np.ndarray,
    sigma: np.ndarray,
    max_iterations: int,
    huber: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``x_i - x_j = rhs`` (x_anchor = 0) robustly; return x (n_tiles) and the Huber weights."""
    free = [k for k in members.tolist() if k != anchor_index]
    column = np.full(n_tiles, -1)
    column[free] = np.arange(len(free))
    rows = np.arange(len(ii))
    solution = np.zeros(n_tiles)
    huber_weight = np.ones(len(ii))
    if not free:
        return solution, huber_weight
    entries = [(rows, column[ii], 1.0), (rows, column[jj], -1.0)]
    rr = np.concatenate([r[c >= 0] for r, c, _ in entries])
    cc = np.concatenate([c[c >= 0] for _, c, _ in entries])
    vv = np.concatenate([np.full(int((c >= 0).sum()), v) for _, c, v in entries])
    if max_iterations > 1:
        huber_weight = closure_weights(ii, jj, rhs, sigma, huber)
    design = csr_matrix((vv, (rr, cc)), shape=(len(ii), len(free)))
    for _ in range(max(1, max_iterations)):
        solution[free] = _weighted_least_squares(design, rhs, huber_weight / (sigma * sigma))
        standardised = (solution[ii] - solution[jj] - rhs) / sigma
        weighted = standardised[np.isfinite(sigma)]
        spread = _MAD_TO_SIGMA * np.median(np.abs(weighted - np.median(weighted))) if weighted.size else 1.0
        threshold = huber * max(spread, 1e-6)
        new_weight = np.minimum(1.0, threshold / np.maximum(np.abs(standardised), 1e-300))
        if np.allclose(new_weight, huber_weight, rtol=1e-3, atol=1e-4):
            break
        huber_weight = new_weight
    return solution, huber_weight


def _weighted_least_squares(design: csr_matrix, rhs: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Minimise ``sum(weight * (design @ x - rhs)^2)``.

    The normal matrix is a weighted graph Laplacian less the anchor's row and column: sparse,
    symmetric positive definite, so a sparse direct solve takes milliseconds for thousands of
    layers where an iterative ``lsqr`` needs hundreds of iterations. A ridge of 1e-12 of the
    largest diagonal term keeps layers tied only by zero-weight rows (flat-sky pairs, in the
    gain solve) at 0, as ``lsqr``'s minimum-norm answer would; ``lsqr`` remains the fallback
    should the factorisation fail.
    """
    normal = (design.T @ diags(weight) @ design).tocsc()
    ridge = 1e-12 * max(float(normal.diagonal().max(initial=0.0)), 1e-300)
    normal = normal + ridge * identity(normal.shape[0], format="csc")
    try:
        solution = np.asarray(spsolve(normal, design.T @ (weight * rhs)), dtype=np.float64).reshape(-1)
    except (RuntimeError, ValueError) as err:
        log.warning("inter-tile calibration: sparse direct solve failed (%s); using lsqr", err)
        solution = np.full(design.shape[1], np.nan)
    if np.all(np.isfinite(solution)):
        return solution
    root = np.sqrt(weight)
    result = lsqr(diags(root) @ design, root * rhs, atol=1e-12, btol=1e-12, iter_lim=20 * design.shape[1] + 100)
    return result[0]


def _layer_sky(
    n_tiles: int, ii: np.ndarray, jj: np.ndarray, level_i: np.ndarray, level_j: np.ndarray, rms: np.ndarray
) -> np.ndarray:
    """Median sky level and noise of each layer over its pairs (in its own units): ``(n_tiles, 2)``.

    One sort per column, then each layer's middle value (the mean of the two middle ones for an
    even count, as :func:`numpy.median`), so thousands of layers cost no per-layer call.
    """
    out = np.full((n_tiles, 2), np.nan)
    nodes = np.concatenate([ii, jj])
    counts = np.bincount(nodes, minlength=n_tiles)
    present = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)])[present]
    low = starts + (counts[present] - 1) // 2
    high = starts + counts[present] // 2
    for column, values in enumerate((np.concatenate([level_i, level_j]), np.concatenate([rms, rms]))):
        ordered = values[np.lexsort((values, nodes))]
        out[present, column] = np.where(low == high, ordered[low], (ordered[low] + ordered[high]) / 2)
    return out


def _clamp_gains(
    gains: np.ndarray, c: int, members: np.ndarray, limits: tuple[float, float], clamped: list[str]
) -> None:
    low, high = limits
    for k in members.tolist():
        value = gains[k, c]
        if not low <= value <= high:
            gains[k, c] = min(max(value, low), high)
            clamped.append(
                f"layer {k} channel {c}: gain {value:.4f} clamped to {gains[k, c]:.4f} (limits {low}..{high})"
            )


def _clamp_offsets(
    gains: np.ndarray,
    offsets: np.ndarray,
    c: int,
    members: np.ndarray,
    sky: np.ndarray,
    limit: float,
    clamped: list[str],
) -> None:
    for k in members.tolist():
        level, noise = sky[k]
        if not math.isfinite(level):
            continue
        bound = max(limit * abs(gains[k, c] * level), 10.0 * gains[k, c] * noise)
        value = offsets[k, c]
        if abs(value) > bound:
            offsets[k, c] = math.copysign(bound, value)
            clamped.append(
                f"layer {k} channel {c}: offset {value:.4g} clamped to {offsets[k, c]:.4g} "
                f"({limit:g} x corrected sky level {gains[k, c] * level:.4g})"
            )
