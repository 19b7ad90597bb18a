"""Spatial indices of the planners: linked components and the nearest live point, against brute force."""

import math

import numpy as np
import pytest
from plan_sky import brute_force_components
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from zemosaic_dask.plans import cluster_centres
from zemosaic_dask.plans.proximity import NearestIndex, linked_components, unit_vectors


def _pair_components(xyz: np.ndarray, radius: float) -> set[frozenset[int]]:
    """Components of every pair within ``radius`` (the pair search the planners used before)."""
    n = len(xyz)
    pairs = cKDTree(xyz).query_pairs(radius, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return _as_sets(labels)


def _as_sets(labels: np.ndarray) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for index, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(index)
    return {frozenset(g) for g in groups.values()}


def _random_sky(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense clumps, sparse strays, RA = 0 and the pole: every kind of neighbourhood."""
    centres = [(rng.uniform(0, 360), rng.uniform(-89, 89)) for _ in range(rng.integers(1, 5))]
    centres += [(359.99, 10.0), (0.0, 89.95)]
    pick = rng.integers(0, len(centres), size=n)
    spread = rng.choice([0.005, 0.05, 0.5], size=n)
    ra = np.array([centres[k][0] for k in pick]) + rng.normal(0, 1, n) * spread
    dec = np.clip(np.array([centres[k][1] for k in pick]) + rng.normal(0, 1, n) * spread, -90, 90)
    return ra % 360.0, dec


@pytest.mark.parametrize("seed", range(8))
def test_linked_components_equal_the_components_of_every_close_pair(seed):
    rng = np.random.default_rng(seed)
    ra, dec = _random_sky(rng, int(rng.integers(50, 600)))
    xyz = unit_vectors(ra, dec)
    for radius in (1e-4, 1e-3, 2e-2, 0.3):
        assert _as_sets(linked_components(xyz, radius)) == _pair_components(xyz, radius)


def test_dense_cubes_are_compared_through_trees_as_well():
    # 400 points in a few cubes (products above the all-pairs limit), chains across cube borders.
    rng = np.random.default_rng(3)
    xyz = np.concatenate(
        [rng.normal(c, 2e-4, size=(100, 3)) for c in ([1, 0, 0], [1, 1e-3, 0], [1, 3e-3, 0], [1, 0, 5e-3])]
    )
    for radius in (2e-4, 5e-4, 1.2e-3, 2.1e-3):
        assert _as_sets(linked_components(xyz, radius)) == _pair_components(xyz, radius)


def test_cluster_centres_match_a_haversine_union_find():
    rng = np.random.default_rng(11)
    ra, dec = _random_sky(rng, 120)
    found = {frozenset(g) for g in cluster_centres(ra, dec, 0.05)}
    assert found == brute_force_components(ra, dec, 0.05)


def test_linked_components_of_one_field_do_not_list_every_pair():
    # 20,000 points within the link distance of each other: one component, found quickly.
    xyz = unit_vectors(np.random.default_rng(0).uniform(10, 10.01, 20_000), np.full(20_000, 40.0))
    labels = linked_components(xyz, math.radians(0.03))
    assert len(set(labels.tolist())) == 1


def test_linked_components_reject_a_non_positive_radius():
    with pytest.raises(ValueError, match="radius"):
        linked_components(np.zeros((2, 3)), 0.0)


def test_nearest_index_follows_additions_and_removals():
    rng = np.random.default_rng(5)
    points = {k: v for k, v in enumerate(rng.normal(size=(200, 3)))}
    index = NearestIndex(points.items())
    next_key = 200
    for _ in range(400):
        if rng.random() < 0.5 and len(points) > 2:
            key = int(rng.choice(list(points)))
            index.remove(key)
            del points[key]
        else:
            points[next_key] = rng.normal(size=3)
            index.add(next_key, points[next_key])
            next_key += 1
        query = int(rng.choice(list(points)))
        distance = {k: float(np.linalg.norm(v - points[query])) for k, v in points.items() if k != query}
        best = min(distance.values())
        found = index.nearest(points[query], exclude=query)
        assert found and all(distance[k] <= best * (1 + 1e-6) for k in found)
        assert min(distance, key=distance.get) in found
    assert len(index) == len(points)


def test_nearest_index_with_one_point_has_no_neighbour():
    index = NearestIndex([(7, np.array([1.0, 0.0, 0.0]))])
    assert index.nearest(np.array([1.0, 0.0, 0.0]), exclude=7) == []
