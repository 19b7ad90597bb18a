"""SDS batch regions built in bundles: fewer tasks, the same layers, every build accounted for."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zemosaic_dask.api import make_plan
from zemosaic_dask.config import load_config
from zemosaic_dask.config.policies import stage_options_of_plan
from zemosaic_dask.execute.coefficients import frame_coefficients
from zemosaic_dask.execute.layer_stores import build_layers, layer_stores
from zemosaic_dask.graph.regions import bundle_indices
from zemosaic_dask.io.store import open_mosaic_store


@given(st.lists(st.floats(0, 1e6), max_size=60), st.integers(1, 20))
def test_bundles_hold_every_item_once_and_balance(weights, bundles):
    groups = bundle_indices(weights, bundles)
    assert sorted(i for g in groups for i in g) == list(range(len(weights)))
    assert len(groups) <= max(1, bundles) and all(g == sorted(g) for g in groups)
    assert groups == bundle_indices(weights, bundles)  # deterministic
    if groups:
        loads = [sum(weights[i] for i in g) for g in groups]
        # Greedy by weight: no bundle exceeds the mean by more than the heaviest item.
        assert max(loads) <= sum(weights) / len(groups) + max(weights) + 1e-6


@pytest.fixture(scope="module")
def sds_plan(seestar_set, tmp_path_factory):
    config = load_config(overrides={"mode": "sds"})
    plan = make_plan(seestar_set[1][:20], config, wcs_cache_dir=tmp_path_factory.mktemp("wcs"))
    assert plan.mode == "sds" and len(plan.layers) >= 2
    return plan


def _build(plan, folder, bundles):
    store, _ = open_mosaic_store(str(folder / "mosaic.zarr"), plan.grid, plan.n_channels, fingerprint="t", restart=True)
    stores = layer_stores(plan, store, restart=True)
    options = stage_options_of_plan(plan)
    coefficients = frame_coefficients(plan, options.stack)
    tasks = build_layers(plan, stores, options.stack, options.window, coefficients=coefficients, bundles=bundles)
    results = dask.compute(*tasks, scheduler="synchronous")
    layers = [[np.asarray(s.on_grid.array(name, mode="r")[...]) for name in ("mosaic", "coverage")] for s in stores]
    return tasks, [s for bundle in results for s in bundle], layers


def test_bundled_batches_build_the_same_layers_as_one_task_per_region(sds_plan, tmp_path):
    one_each, singles, expected = _build(sds_plan, tmp_path / "single", bundles=10**6)
    bundled, summaries, layers = _build(sds_plan, tmp_path / "bundled", bundles=3)
    assert len(bundled) == 3 < len(one_each) == len(singles)
    assert sorted(s.region for s in summaries) == sorted(s.region for s in singles)  # every build, once
    for (image_a, cover_a), (image_b, cover_b) in zip(expected, layers, strict=True):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(cover_a, cover_b)
    assert any(np.isfinite(image).any() for image, _ in layers)
