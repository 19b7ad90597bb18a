"""Small-group merging gives exactly the groups of a comparison with every group, at any scale."""

import numpy as np
import pytest

from zemosaic_dask.plans import group_centres, merge_small_groups
from zemosaic_dask.plans.groups import GroupingPolicy
from zemosaic_dask.plans.proximity import unit_vectors


def _centroid(xyz, group):
    vec = xyz[list(group)].sum(axis=0)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec


def _reference_merge(groups, centres, min_size, cap):
    """The former quadratic merge: every centroid recomputed and compared at each step."""
    current = [tuple(sorted(int(i) for i in g)) for g in groups if len(g)]
    xyz = unit_vectors(centres[:, 0], centres[:, 1])
    kept, merged = set(), 0
    while len(current) > 1:
        small = sorted((g for g in current if len(g) < min_size and g not in kept), key=lambda g: (len(g), g[0]))
        if not small:
            break
        group = small[0]
        others = [g for g in current if g is not group]
        centre = _centroid(xyz, group)
        distance = [float(np.linalg.norm(_centroid(xyz, g) - centre)) for g in others]
        target = others[min(range(len(others)), key=lambda k: (distance[k], others[k][0]))]
        if cap is not None and len(group) + len(target) > cap:
            kept.add(group)
            continue
        current = [g for g in others if g is not target] + [tuple(sorted(group + target))]
        merged += 1
    return sorted(current, key=lambda g: g[0]), merged


def _random_groups(rng, n_frames):
    """Frames on pointings with 1-7 frames each (some pointings repeated exactly), in shuffled groups."""
    n_pointings = max(2, n_frames // 3)
    pointings = np.column_stack([rng.uniform(100, 103, n_pointings), rng.uniform(30, 33, n_pointings)])
    pointings[: n_pointings // 4] = pointings[0]  # exact ties between distances
    owner = rng.integers(0, n_pointings, n_frames)
    centres = pointings[owner] + rng.normal(0, 0.002, (n_frames, 2)) * rng.integers(0, 2, (n_frames, 1))
    order = rng.permutation(n_frames)
    cuts = np.sort(rng.choice(np.arange(1, n_frames), size=n_frames // 3, replace=False))
    return [tuple(g.tolist()) for g in np.split(order, cuts)], centres


@pytest.mark.parametrize("seed", range(12))
def test_merge_equals_the_former_quadratic_merge(seed):
    rng = np.random.default_rng(seed)
    groups, centres = _random_groups(rng, int(rng.integers(20, 400)))
    min_size = int(rng.integers(2, 9))
    cap = [None, min_size + int(rng.integers(0, 6)), 40][seed % 3]
    assert merge_small_groups(groups, centres, min_size, cap) == _reference_merge(groups, centres, min_size, cap)


def test_a_small_group_whose_nearest_overflows_the_cap_stays_but_others_may_join_it():
    centres = np.array([[10.0, 0.0], [10.0, 0.001], [10.0, 0.002], [10.0, 0.5], [10.0, 0.503]])
    groups = [(0, 1, 2), (3,), (4,)]
    assert merge_small_groups(groups, centres, 2, 3) == _reference_merge(groups, centres, 2, 3)
    assert merge_small_groups(groups, centres, 2, 3) == ([(0, 1, 2), (3, 4)], 1)


def test_hundreds_of_singletons_merge_as_the_reference_does():
    # Every frame alone: hundreds of merges, unions merged again while still small.
    rng = np.random.default_rng(1)
    centres = np.column_stack([rng.uniform(0, 1, 250), rng.uniform(-0.5, 0.5, 250)])
    singles = [(i,) for i in range(250)]
    result = merge_small_groups(singles, centres, 4, 6)
    assert result == _reference_merge(singles, centres, 4, 6)
    assert result[1] > 150 and all(len(g) <= 6 for g in result[0])


def test_group_centres_merge_small_clusters_within_the_cap():
    centres = np.array([[50.0, 10.0]] * 5 + [[50.0, 10.2]] + [[50.0, 11.0]] * 3)
    plan = group_centres(centres, [""] * 9, GroupingPolicy(0.03, 6, 2))
    assert plan.groups == ((0, 1, 2, 3, 4, 5), (6, 7, 8)) and plan.n_merged == 1
