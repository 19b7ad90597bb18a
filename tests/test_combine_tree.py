"""A deep region combined as a tree of layer groups gives what one combination of every layer gives."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import zarr

from zemosaic_dask.config import default_config
from zemosaic_dask.config.policies import stage_options
from zemosaic_dask.execute.layer_stores import combine_trees
from zemosaic_dask.graph.layers import build_combine_graph
from zemosaic_dask.io.store import open_mosaic_store
from zemosaic_dask.plans.grid import OutputGrid
from zemosaic_dask.plans.layer_tree import layer_tree
from zemosaic_dask.tasks.stacking import StackOptions
from zemosaic_dask.units.combine_region import CombineJob, LayerInput

GRID = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(80, 96), chunk=64)
N_LAYERS = 20
FRAME_NOISE = 4.0
SKY = 100.0
TRAILED = (3, 11)
#: How a default run combines layers, classic tiles or SDS batch mosaics (noise_clip, its kappas and noise scale).
LAYER_COMBINE = stage_options(default_config(), 1).layer_combine


@pytest.mark.parametrize("n", [0, 1, 5, 64, 65, 130, 2560, 4097, 10_000])
@pytest.mark.parametrize("fan_in", [0, 2, 3, 64])
def test_the_tree_groups_every_input_once_in_balanced_groups_of_at_most_fan_in(n, fan_in):
    levels = layer_tree(n, fan_in)
    assert len(levels[-1]) == 1
    below = n
    for groups in levels:
        assert [i for r in groups for i in r] == list(range(below))  # every input once, in order
        if len(levels) > 1:
            sizes = [len(r) for r in groups]
            assert max(sizes) <= max(fan_in, 1) and max(sizes) - min(sizes) <= 1
        below = len(groups)
    if fan_in >= 2 and n > fan_in:
        assert len(levels) == int(np.ceil(np.log(n) / np.log(fan_in) - 1e-12))  # the fewest levels
    else:
        assert levels == [[range(n)]]


def _truth():
    y, x = np.mgrid[0 : GRID.shape[0], 0 : GRID.shape[1]].astype(np.float32)
    return (SKY + 0.2 * x + 0.1 * y)[None]


def _layers(tmp_path):
    """Layers of one truth with their own gains, offsets, coverage and noise; two cross a satellite trail."""
    rng = np.random.default_rng(7)
    truth = _truth()
    inputs = []
    for k in range(N_LAYERS):
        store, _ = open_mosaic_store(str(tmp_path / "m.zarr"), GRID, 1, fingerprint="f", prefix=f"layers/{k}")
        gain, offset = 1.0 + 0.02 * (k % 5), 3.0 * (k % 3) - 3.0
        coverage = rng.integers(1, 6, GRID.shape).astype(np.float32)
        coverage[:, : 3 * k] = 0  # each layer reaches a different part
        noise = rng.normal(0.0, 1.0, truth.shape) * FRAME_NOISE / np.sqrt(np.maximum(coverage, 1))
        image = ((truth + noise - offset) / gain).astype(np.float32)
        if k in TRAILED:
            image[:, 30 + k : 33 + k, :] += 400.0
        for region in GRID.regions():
            window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
            alpha = (coverage[window] > 0).astype(np.uint8) * 255
            store.write_region(region, image[(slice(None), *window)], coverage[window], alpha)
        inputs.append((LayerInput(k, store, (gain,), (offset,)), coverage))
    return inputs


def _combine(tmp_path, name, inputs, stack, fan_in):
    out, _ = open_mosaic_store(str(tmp_path / f"{name}.zarr"), GRID, 1, fingerprint="f")
    layers = tuple(layer for layer, _ in inputs)
    noise = {"noise": (FRAME_NOISE,), "sky": (SKY,)} if stack.rejection == "noise_clip" else {}
    jobs = [CombineJob(region, layers, out, 1, stack, **noise) for region in GRID.regions()]
    trees = combine_trees(jobs, fan_in, grid=GRID, n_channels=1, fingerprint="f")
    graph = build_combine_graph(trees, "sds-combine")
    results = dask.compute(*graph, scheduler="synchronous")
    image = np.asarray(out.array("mosaic", mode="r")[...])
    coverage = np.asarray(out.array("coverage", mode="r")[...])
    return results, image, coverage, graph


@pytest.mark.parametrize("stack", [StackOptions(rejection="none"), LAYER_COMBINE], ids=["mean", "noise_clip"])
def test_a_tree_of_groups_combines_as_one_stack_of_every_layer(tmp_path, stack):
    inputs = _layers(tmp_path)
    flat, flat_image, flat_coverage, flat_graph = _combine(tmp_path, "flat", inputs, stack, fan_in=0)
    tree, tree_image, tree_coverage, tree_graph = _combine(tmp_path, "tree", inputs, stack, fan_in=4)
    # 20 layers in groups of at most 4: 5 groups, then 2 groups of groups, then the region.
    keys = set(tree_graph[0].dask)
    assert sum("-group-0-" in str(k) for k in keys) == 5 and sum("-group-1-" in str(k) for k in keys) == 2
    assert not any("-group-" in str(k) for k in flat_graph[0].dask)

    # What the later stages take (the SDS mask's depth, two-pass's per-layer coverage) is the original layers'.
    for a, b in zip(flat, tree, strict=True):
        assert a["max_layers"] == b["max_layers"] > 4
        assert a["layer_max"] == b["layer_max"] and len(b["layer_max"]) == N_LAYERS
        assert b["summary"].frames == N_LAYERS and b["summary"].contributing == a["summary"].contributing
    covered = flat_coverage > 0
    np.testing.assert_array_equal(tree_coverage > 0, covered)

    truth = np.broadcast_to(_truth(), flat_image.shape)
    noise_of_mean = FRAME_NOISE / np.sqrt(flat_coverage[covered])
    trail = np.zeros(GRID.shape, bool)
    for k in TRAILED:
        trail[30 + k : 33 + k, 3 * k :] = True
    if stack.rejection == "none":
        # A coverage-weighted mean of means: the same numbers up to float32 rounding of the groups.
        np.testing.assert_allclose(tree_image[:, covered], flat_image[:, covered], rtol=2e-6, atol=1e-3)
        np.testing.assert_allclose(tree_coverage, flat_coverage, rtol=1e-6)
        assert np.abs(flat_image[0][trail & covered] - truth[0][trail & covered]).max() > 20.0  # the trail is in
        return
    # With rejection: each group rejects the trail, and the result is the flat stack's within its noise.
    for image in (flat_image, tree_image):
        residual = (image[0] - truth[0])[trail & covered] / (FRAME_NOISE / np.sqrt(flat_coverage[trail & covered]))
        assert np.abs(residual).max() < 8.0, "a trail is left in"
    # Two groups of several layers are never judged by the pair rule (the lower kept): chained over
    # the levels, it put clean pixels of the tree 8 sigma below the flat stack.
    difference = (tree_image[0][covered] - flat_image[0][covered]) / noise_of_mean
    # Where a clean sample lies near 3 sigma, a group of a few layers and the flat stack of all of them
    # can decide differently (measured: 1.4 % of the pixels, by 1.6 sigma of the mean at most).
    assert np.sqrt(np.mean(difference**2)) < 0.15 and np.abs(difference).max() < 2.0
    np.testing.assert_allclose(tree_coverage[covered], flat_coverage[covered], rtol=0.02)


def test_a_rerun_reuses_every_node_and_reports_the_same_counts(tmp_path):
    inputs = _layers(tmp_path)
    stack = StackOptions(rejection="none")
    first, image, _, _ = _combine(tmp_path, "tree", inputs, stack, fan_in=4)
    again, image_again, _, _ = _combine(tmp_path, "tree", inputs, stack, fan_in=4)
    np.testing.assert_array_equal(image_again, image)
    for a, b in zip(first, again, strict=True):
        assert b["summary"].reused and not a["summary"].reused
        assert a["max_layers"] == b["max_layers"] and a["layer_max"] == b["layer_max"]


def test_a_rerun_after_the_groups_but_before_the_region_combines_the_groups_again(tmp_path):
    """Killed between the groups and the root: the groups are reused, the region is written as before."""
    inputs = _layers(tmp_path)
    stack = LAYER_COMBINE
    first, image, coverage, _ = _combine(tmp_path, "tree", inputs, stack, fan_in=4)
    done = zarr.open_array(str(tmp_path / "tree.zarr"), path="done", mode="r+")
    done[...] = 0  # the region's mark is written last: as if the root never finished
    again, image_again, coverage_again, _ = _combine(tmp_path, "tree", inputs, stack, fan_in=4)
    np.testing.assert_array_equal(image_again, image)
    np.testing.assert_array_equal(coverage_again, coverage)
    for a, b in zip(first, again, strict=True):
        assert not b["summary"].reused and b["summary"].contributing == a["summary"].contributing
        assert a["max_layers"] == b["max_layers"] and a["layer_max"] == b["layer_max"]


@pytest.mark.parametrize("others", [1, 2])
def test_a_trail_a_layer_holds_alone_is_rejected_by_the_default_combination(tmp_path, others):
    """A classic tile or SDS batch that held one frame at a pixel keeps that frame's trail; the layers beside it do not.

    One layer of coverage 1 carries a 400 ADU trail, ``others`` layers of coverage 3 overlap it:
    the default combination rejects it across the layers (the pair rule with one other layer,
    the noise clip with two); a plain coverage-weighted mean leaves 400 / (1 + 3 * others) ADU.
    """
    truth = _truth()
    rng = np.random.default_rng(5)
    inputs = []
    for k in range(1 + others):
        store, _ = open_mosaic_store(str(tmp_path / "m.zarr"), GRID, 1, fingerprint="f", prefix=f"layers/{k}")
        coverage = np.full(GRID.shape, 1.0 if k == 0 else 3.0, dtype=np.float32)
        image = (truth + rng.normal(0.0, FRAME_NOISE / np.sqrt(coverage), truth.shape)).astype(np.float32)
        if k == 0:
            image[:, 40:43, :] += 400.0
        for region in GRID.regions():
            window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
            store.write_region(
                region, image[(slice(None), *window)], coverage[window], np.full(coverage[window].shape, 255, np.uint8)
            )
        inputs.append((LayerInput(k, store), coverage))
    total = 1.0 + 3.0 * others
    for stack, left in ((LAYER_COMBINE, 0.0), (StackOptions(rejection="none"), 400.0 / total)):
        _, image, _, _ = _combine(tmp_path, f"{stack.rejection}-{others}", inputs, stack, fan_in=0)
        trail = image[0, 40:43] - truth[0, 40:43]
        assert abs(float(np.median(trail)) - left) < 3 * FRAME_NOISE / np.sqrt(total), (
            stack.rejection,
            np.median(trail),
        )
