"""Spatial indices on unit vectors whose cost grows as N log N, not N^2.

- :func:`linked_components`: connected components of the points linked when their chord
  distance is at most a radius. Points are bucketed in cubes whose diagonal is the radius,
  so the points of one cube are linked without comparing them; only neighbouring cubes are
  compared. A dense field (thousands of frames within the link distance of each other)
  therefore costs N log N instead of the N^2 pairs a pair search lists.
- :class:`NearestIndex`: the nearest live point to a query among points that are added and
  removed as groups merge (Bentley and Saxe's logarithmic method over static k-d trees, with
  removals marked and the index rebuilt once half of it is dead).

Pure numpy and scipy; no dask, no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["NearestIndex", "linked_components", "unit_vectors"]

#: Neighbouring cubes whose point pairs are compared all at once (numpy) when the product of
#: their sizes is at most this; larger pairs are compared through a k-d tree.
_DENSE_PAIR_PRODUCT = 64
#: Cube offsets reaching every cube within one radius (cube side = radius / sqrt(3)), one of each +-pair.
_OFFSETS = [o for o in itertools.product(range(-2, 3), repeat=3) if o > (0, 0, 0)]


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit vectors of RA/Dec positions in degrees."""
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _cube_pairs(cubes: np.ndarray) -> np.ndarray:
    """``(K, 2)`` indices of occupied cubes within two cubes of each other along every axis."""
    lo = cubes.min(axis=0) - 2
    span = [int(v) for v in cubes.max(axis=0) - lo + 3]
    pairs = []
    if span[0] * span[1] * span[2] < 2**62:
        shifted = cubes - lo
        code = (shifted[:, 0] * span[1] + shifted[:, 1]) * span[2] + shifted[:, 2]
        order = np.argsort(code, kind="stable")
        sorted_code = code[order]
        for o in _OFFSETS:
            target = code + (o[0] * span[1] + o[1]) * span[2] + o[2]
            position = np.clip(np.searchsorted(sorted_code, target), 0, len(code) - 1)
            found = sorted_code[position] == target
            pairs.append(np.column_stack([np.flatnonzero(found), order[position[found]]]))
    else:  # coordinates too far apart to encode in one integer: look the cubes up in a dictionary
        index = {tuple(c): k for k, c in enumerate(cubes.tolist())}
        found_pairs = [
            (k, index[key])
            for o in _OFFSETS
            for k, c in enumerate(cubes.tolist())
            if (key := (c[0] + o[0], c[1] + o[1], c[2] + o[2])) in index
        ]
        pairs.append(np.asarray(found_pairs, dtype=np.int64).reshape(-1, 2))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def _dense_links(
    pairs: np.ndarray, xyz: np.ndarray, members: np.ndarray, starts: np.ndarray, sizes: np.ndarray, radius: float
) -> np.ndarray:
    """Which cube pairs (all small) hold a point pair within ``radius``: every point pair compared."""
    products = sizes[pairs[:, 0]] * sizes[pairs[:, 1]]
    total = int(products.sum())
    pair_of = np.repeat(np.arange(len(pairs)), products)
    within = np.arange(total) - np.repeat(np.cumsum(products) - products, products)
    size_b = sizes[pairs[pair_of, 1]]
    a = members[starts[pairs[pair_of, 0]] + within // size_b]
    b = members[starts[pairs[pair_of, 1]] + within % size_b]
    close = np.sqrt(((xyz[a] - xyz[b]) ** 2).sum(axis=1)) <= radius
    linked = np.zeros(len(pairs), dtype=bool)
    linked[pair_of[close]] = True
    return linked


def linked_components(xyz: np.ndarray, radius: float) -> np.ndarray:
    """Label the connected components of points linked when their distance is at most ``radius``.

    Parameters
    ----------
    xyz : numpy.ndarray
        ``(N, 3)`` points (unit vectors for sky positions).
    radius : float
        Link distance (a chord for unit vectors), > 0.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` component label of every point; two points share a label exactly when a
        chain of links joins them (the components of ``cKDTree.query_pairs(radius)``).
    """
    xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if len(xyz) == 0:
        return np.zeros(0, dtype=np.int64)
    side = radius / math.sqrt(3.0)  # a cube's diagonal is the radius: its points are all linked
    cubes, cube_of = np.unique(np.floor(xyz / side).astype(np.int64), axis=0, return_inverse=True)
    cube_of = cube_of.reshape(-1)
    members = np.argsort(cube_of, kind="stable")
    sizes = np.bincount(cube_of, minlength=len(cubes))
    starts = np.cumsum(sizes) - sizes
    pairs = _cube_pairs(cubes)
    dense = sizes[pairs[:, 0]] * sizes[pairs[:, 1]] <= _DENSE_PAIR_PRODUCT
    edges = pairs[dense][_dense_links(pairs[dense], xyz, members, starts, sizes, radius)]
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(cubes), len(cubes)))
    _, labels = connected_components(graph, directed=False)
    parent = list(range(int(labels.max()) + 1))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    trees: dict[int, cKDTree] = {}
    for a, b in pairs[~dense].tolist():
        ra, rb = root(int(labels[a])), root(int(labels[b]))
        if ra == rb:
            continue
        if b not in trees:
            trees[b] = cKDTree(xyz[members[starts[b] : starts[b] + sizes[b]]])
        distance, _ = trees[b].query(xyz[members[starts[a] : starts[a] + sizes[a]]], k=1)
        if float(distance.min()) <= radius:
            parent[ra] = rb
    roots = np.array([root(k) for k in range(len(parent))], dtype=np.int64)
    return roots[labels][cube_of]


class NearestIndex:
    """The nearest live points to a query, among points added and removed over time.

    Points sit in static k-d trees of sizes 1, 2, 4, ... (an insertion merges trees like a
    binary counter carries); a removal only marks the point dead, and the whole index is
    rebuilt once the dead outnumber the live. Each operation costs O(log^2 N) amortised.

    Parameters
    ----------
    points : iterable of (int, numpy.ndarray)
        Initial ``(key, vector)`` pairs; keys are unique integers.
    """

    def __init__(self, points: Iterable[tuple[int, np.ndarray]]) -> None:
        self._vectors: dict[int, np.ndarray] = {}
        self._levels: list[tuple[cKDTree, np.ndarray] | None] = []
        self._dead = 0
        for key, vector in points:
            self._vectors[int(key)] = np.asarray(vector, dtype=float)
        self._rebuild()

    def __len__(self) -> int:
        return len(self._vectors)

    def _tree(self, keys: list[int]) -> tuple[cKDTree, np.ndarray]:
        return cKDTree(np.array([self._vectors[k] for k in keys]).reshape(-1, 3)), np.asarray(keys, dtype=np.int64)

    def _rebuild(self) -> None:
        keys = sorted(self._vectors)
        self._dead = 0
        self._levels = []
        if keys:
            self._levels = [None] * max(0, math.ceil(math.log2(len(keys)))) + [self._tree(keys)]

    def add(self, key: int, vector: np.ndarray) -> None:
        """Add a live point (its key must not be live already)."""
        self._vectors[int(key)] = np.asarray(vector, dtype=float)
        carry, level = [int(key)], 0
        while True:
            if level == len(self._levels):
                self._levels.append(None)
            held = self._levels[level]
            if held is not None:
                live = [int(k) for k in held[1].tolist() if int(k) in self._vectors]
                self._dead -= len(held[1]) - len(live)
                carry += live
                self._levels[level] = None
            elif len(carry) <= 2**level:
                self._levels[level] = self._tree(carry)
                return
            level += 1

    def remove(self, key: int) -> None:
        """Remove a live point."""
        del self._vectors[int(key)]
        self._dead += 1
        if self._dead > len(self._vectors):
            self._rebuild()

    def nearest(self, vector: np.ndarray, exclude: int, rtol: float = 1e-9) -> list[int]:
        """Keys of the live points (``exclude`` aside) within ``(1 + rtol)`` of the nearest distance.

        The caller ranks these few candidates with its own exact distance and tie rule, so
        rounding in the trees never changes which point wins. Empty when no other point lives.
        """
        vector = np.asarray(vector, dtype=float)
        best = math.inf
        for held in self._levels:
            if held is None:
                continue
            tree, keys = held
            k = min(4, len(keys))
            while True:
                distances, positions = tree.query(vector, k=k)
                found = [
                    float(d)
                    for d, p in zip(np.atleast_1d(distances), np.atleast_1d(positions), strict=True)
                    if p < len(keys) and int(keys[p]) != exclude and int(keys[p]) in self._vectors
                ]
                if found or k == len(keys):
                    best = min([best, *found])
                    break
                k = min(2 * k, len(keys))
        if not math.isfinite(best):
            return []
        reach = best * (1.0 + rtol) + 1e-15
        candidates = []
        for held in self._levels:
            if held is not None:
                tree, keys = held
                for p in tree.query_ball_point(vector, reach):
                    key = int(keys[p])
                    if key != exclude and key in self._vectors:
                        candidates.append(key)
        return candidates
