"""Starting weights of the inter-layer solve from triangle closures, bounded per layer."""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_DETOURS", "closure_weights"]

#: Detours each layer offers to the triangle-closure check (its most precise links).
MAX_DETOURS = 16


def closure_weights(
    ii: np.ndarray,
    jj: np.ndarray,
    rhs: np.ndarray,
    sigma: np.ndarray,
    huber: float,
    max_detours: int = MAX_DETOURS,
) -> np.ndarray:
    """Starting Huber weights from triangle closures: how far each pair is from its best detour.

    For a pair (i, j) and a layer k overlapping both, ``(x_i - x_k) + (x_k - x_j)`` is a second
    measurement of ``x_i - x_j``. A pair that disagrees with every detour is suspect; a good pair
    next to a bad one still closes through another detour. Starting the reweighting from these
    weights keeps a very precise but wrong pair from dragging its neighbours, which plain
    reweighting would undo only slowly. Pairs in no triangle start at 1.

    The detours of a pair are bounded: each layer offers its ``max_detours`` most precise links
    (smallest variance, then lowest index), and a pair (i, j) is checked through the layers that
    i offers and j also overlaps, and those that j offers and i also overlaps. The cost is then
    ``O(pairs * max_detours)`` instead of a sum over every common neighbour, which grows as the
    cube of the layers on a dense overlap graph; where no layer has more than ``max_detours``
    pairs every common neighbour is checked, as in a full triangle enumeration.
    """
    n_pairs = len(ii)
    weight = np.ones(n_pairs)
    if n_pairs < 3:
        return weight
    variance = np.fromiter((float(v) ** 2 for v in sigma), dtype=np.float64, count=n_pairs)  # libm pow, as before
    links = _Links(ii, jj, rhs, variance)
    pair, y_ik, v_ik, y_kj, v_kj = links.detours(ii, jj, max_detours)
    usable = np.isfinite(v_ik) & np.isfinite(v_kj) & np.isfinite(sigma[pair])
    pair, y_ik, v_ik, y_kj, v_kj = pair[usable], y_ik[usable], v_ik[usable], y_kj[usable], v_kj[usable]
    closure = np.abs(rhs[pair] - y_ik - y_kj) / np.sqrt(variance[pair] + v_ik + v_kj)
    best = np.full(n_pairs, np.inf)
    np.minimum.at(best, pair, closure)
    suspect = np.isfinite(best) & (best > huber)
    weight[suspect] = huber / best[suspect]
    return weight


class _Links:
    """Directed links ``i -> j`` of the pair graph (value ``rhs``, reversed ``-rhs``) for vectorised look-ups."""

    def __init__(self, ii: np.ndarray, jj: np.ndarray, rhs: np.ndarray, variance: np.ndarray) -> None:
        self.n = int(max(ii.max(), jj.max())) + 1
        source, target = np.concatenate([ii, jj]), np.concatenate([jj, ii])
        value, var = np.concatenate([rhs, -rhs]), np.concatenate([variance, variance])
        order = np.argsort(source * self.n + target, kind="stable")  # a repeated pair: the last one counts
        self.keys = (source * self.n + target)[order]
        self.value, self.var = value[order], var[order]
        self.source, self.target = source, target
        self.link_var = var
        self.value_by_pair = rhs

    def lookup(self, source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Value and variance of each link ``source -> target``; NaN where there is none."""
        keys = source * self.n + target
        at = np.searchsorted(self.keys, keys, side="right") - 1
        found = (at >= 0) & (self.keys[np.maximum(at, 0)] == keys)
        value = np.where(found, self.value[np.maximum(at, 0)], np.nan)
        return value, np.where(found, self.var[np.maximum(at, 0)], np.nan)

    def detours(self, ii: np.ndarray, jj: np.ndarray, max_detours: int) -> tuple[np.ndarray, ...]:
        """Each detour ``i -> k -> j`` through a layer k that i or j offers: ``(pair, y_ik, v_ik, y_kj, v_kj)``."""
        order = np.lexsort((self.target, self.link_var, self.source))
        source = self.source[order]
        starts = np.searchsorted(source, np.arange(self.n + 1))
        keep = np.arange(len(source)) - starts[source] < max_detours
        offered_start = np.searchsorted(source[keep], np.arange(self.n + 1))
        offered = self.target[order][keep]
        offered_value = np.concatenate([self.value_by_pair, -self.value_by_pair])[order][keep]
        offered_var = self.link_var[order][keep]
        found: list[tuple[np.ndarray, ...]] = []
        for near, far, from_i in ((ii, jj, True), (jj, ii, False)):
            count = offered_start[near + 1] - offered_start[near]
            pair = np.repeat(np.arange(len(near)), count)
            at = np.repeat(offered_start[near] - np.cumsum(count) + count, count) + np.arange(len(pair))
            k, other = offered[at], far[pair]
            # from i: the offered link is i -> k, look up k -> j; from j: it is j -> k (minus k -> j), look up i -> k
            y_far, v_far = self.lookup(k, other) if from_i else self.lookup(other, k)
            linked = (k != other) & ~np.isnan(v_far)
            y_near, v_near = offered_value[at][linked], offered_var[at][linked]
            y_far, v_far = y_far[linked], v_far[linked]
            if from_i:
                found.append((pair[linked], y_near, v_near, y_far, v_far))
            else:
                found.append((pair[linked], y_far, v_far, -y_near, v_near))
        return tuple(np.concatenate(column) for column in zip(*found, strict=True))
