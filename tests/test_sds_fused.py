"""SDS fused region by region: the pixels of the stored execution, without writing a batch mosaic."""

import dataclasses

import numpy as np
import pytest
import zarr
from e2e import SYNC, THREADS, run

from zemosaic_dask.api import make_plan
from zemosaic_dask.config import load_config
from zemosaic_dask.plans.grid import OutputRegion
from zemosaic_dask.plans.sds_execution import SdsExecutionPolicy, layers_by_region, plan_sds_execution
from zemosaic_dask.units.sds_region import BatchStacks

SDS = {"mode": "sds", "grid.chunk": 128}


@pytest.fixture(scope="module")
def paths(seestar_set, tmp_path_factory):
    """Fused (the default) and stored runs of the shared set, with and without rejection across batches."""
    frames = seestar_set[1]
    base = tmp_path_factory.mktemp("sds-fused")
    plain = {"stack.rejection": "none"}
    return {
        "fused": run(frames, base / "fused", THREADS, **SDS),
        "stored": run(frames, base / "stored", SYNC, **SDS, **{"sds.store-batches": True}),
        "fused-mean": run(frames, base / "fused-mean", SYNC, **SDS, **plain),
        "stored-mean": run(frames, base / "stored-mean", SYNC, **SDS, **plain, **{"sds.store-batches": True}),
    }


@pytest.mark.parametrize("kind", ["", "-mean"])
def test_fused_regions_give_the_stored_pixels_bit_for_bit(paths, kind):
    fused, stored = paths[f"fused{kind}"], paths[f"stored{kind}"]
    assert fused.report["mode"] == stored.report["mode"] == "sds" and fused.report["fallback"] is None
    assert np.isfinite(fused.image).mean() > 0.5
    np.testing.assert_array_equal(fused.image, stored.image)
    np.testing.assert_array_equal(fused.coverage, stored.coverage)
    for key in ("sds_mask", "hot_pixels_fixed", "layers", "layer_combine"):
        assert fused.report[key] == stored.report[key], key
    assert fused.report["sds_masked_pixels"] > 0  # the mask ran on counts the fused tasks wrote
    # Regions whose every pixel with data has enough batches are passed over, with the same
    # union and masked pixels (above) and the same image as every region masked in a task.
    regions = stored.report["regions"]["total"]
    assert stored.report["sds_mask_tasks"] == regions > fused.report["sds_mask_tasks"] > 0
    assert fused.report["sds_execution"]["fused"] is True
    assert stored.report["sds_execution"] == {**stored.report["sds_execution"], "fused": False}
    assert "sds.store-batches" in stored.report["sds_execution"]["reason"]
    stages = fused.report["timings"]
    assert "sds-regions" in stages and "batches" not in stages


def test_fused_run_writes_no_batch_mosaic_and_counts_the_batches_per_pixel(paths):
    fused = zarr.open_group(str(paths["fused"].out / "mosaic.zarr"), mode="r")
    stored = zarr.open_group(str(paths["stored"].out / "mosaic.zarr"), mode="r")
    assert "layers" not in fused and "layers" in stored and "sds" not in stored
    layers = [stored[f"layers/{k}/coverage"][...] for k in stored["layers"].group_keys()]
    assert len(layers) == paths["stored"].report["layers"] >= 4
    expected = np.sum([np.asarray(c) > 0 for c in layers], axis=0)
    counts = np.asarray(fused["sds/layer-count/coverage"][...])
    np.testing.assert_array_equal(counts, expected)  # every pixel, regions without data included (0)
    assert counts.max() >= 4


def test_plan_says_which_execution_and_why(seestar_set):
    frames = seestar_set[1][:12]
    cases = {
        (): (True, "one task per region"),
        (("sds.store-batches", True),): (False, "sds.store-batches"),
        (("calibration.intertile", True),): (False, "calibration.intertile"),
        (("two-pass.enabled", True),): (False, "two-pass.enabled"),
        (("assembly.layer-fan-in", 1),): (False, "assembly.layer-fan-in 1"),
    }
    for extra, (fused, why) in cases.items():
        plan = make_plan(frames, load_config(overrides={**SDS, **dict(extra)}))
        section = plan.sections["sds_execution"]
        assert plan.mode == "sds" and section["fused"] is fused and why in section["reason"], (extra, section)
        assert section["max_batches"] == max(
            len(p) for p in layers_by_region(plan.grid, plan.frames, plan.layers).values()
        )
        assert section["max_batches"] >= 2
    # Fused or stored, the same pixels: the section never changes the resume fingerprint (the layers do).
    default = make_plan(frames, load_config(overrides=SDS))
    swapped = {**default.sections, "sds_execution": {"fused": False, "reason": "another cluster"}}
    assert dataclasses.replace(default, sections=swapped).fingerprint() == default.fingerprint()
    fewer = {**default.sections, "layers": default.sections["layers"][1:]}
    assert dataclasses.replace(default, sections=fewer).fingerprint() != default.fingerprint()


def test_a_region_whose_stacks_exceed_the_unit_bytes_stores_its_batches(seestar_set):
    plan = make_plan(seestar_set[1][:12], load_config(overrides=SDS))
    depth = plan.sections["sds_execution"]["max_batches"]
    need = depth * (plan.n_channels + 1) * plan.grid.chunk**2 * 4
    assert plan.sections["sds_execution"]["region_bytes"] == need
    fits = plan_sds_execution(
        plan.grid, plan.frames, plan.layers, plan.n_channels, SdsExecutionPolicy(), max_chunk_bytes=need
    )
    short = plan_sds_execution(
        plan.grid, plan.frames, plan.layers, plan.n_channels, SdsExecutionPolicy(), max_chunk_bytes=need - 1
    )
    assert fits.fused and not short.fused and "per unit" in short.reason


def test_batch_stacks_read_windows_as_a_store_does():
    region = OutputRegion(1, 2, 100, 140, 200, 250)
    rng = np.random.default_rng(3)
    image = rng.normal(size=(3, 40, 50)).astype(np.float32)
    coverage = rng.integers(0, 3, size=(40, 50)).astype(np.float32)
    held = BatchStacks(region, image[None], coverage[None], [0, None])
    window = OutputRegion(1, 2, 110, 130, 205, 250)
    (got_image, got_cover), (none_image, none_cover) = held.iter_read(window)
    np.testing.assert_array_equal(got_image, image[:, 10:30, 5:50])
    np.testing.assert_array_equal(got_cover, coverage[10:30, 5:50])
    assert none_image.shape == (3, 20, 45) and np.isnan(none_image).all() and not none_cover.any()
    got_image[:] = 0  # a copy: the held stack is unchanged
    assert np.array_equal(next(held.iter_read(window))[0], image[:, 10:30, 5:50])


def test_fewer_regions_with_data_than_units_in_flight_store_the_batches(seestar_set):
    # A small deep field on a large cluster: fused, more than half the workers would idle.
    from zemosaic_dask.api import plan_mosaic
    from zemosaic_dask.io.frames import inspect_frame

    frames = [inspect_frame(p) for p in seestar_set[1]]
    config = load_config(overrides={**SDS, "grid.chunk": 256})  # 8 regions, 6 batches reach some
    small = plan_mosaic(frames, [], config, resources=[{"name": "a", "nthreads": 2}])
    regions = small.sections["sds_execution"]["regions"]
    assert small.sections["sds_execution"]["fused"] and regions == len(
        layers_by_region(small.grid, small.frames, small.layers)
    )
    assert 2 < regions < small.grid.n_regions[0] * small.grid.n_regions[1] + 1
    big = [{"name": f"w{k}", "nthreads": 4} for k in range(regions)]  # 4 x regions threads
    large = plan_mosaic(frames, [], config, resources=big)
    section = large.sections["sds_execution"]
    assert large.mode == "sds" and not section["fused"], section
    assert f"{regions} region(s) hold data" in section["reason"]
    assert large.fingerprint() == small.fingerprint()  # the same pixels either way

    def decided(units):
        return plan_sds_execution(
            small.grid,
            small.frames,
            small.layers,
            small.n_channels,
            SdsExecutionPolicy(),
            max_chunk_bytes=2**40,
            units_in_flight=units,
        )

    assert decided(2 * regions).fused and f"one task per region ({regions})" in decided(2 * regions).reason
    assert not decided(2 * regions + 1).fused


def _held_region(empty_layer):
    """Six batch stacks of a 60x70 region (one with a trail, one possibly without data) and a missing batch."""
    region = OutputRegion(0, 0, 0, 60, 0, 70)
    rng = np.random.default_rng(11)
    stacks = []
    for k in range(6):
        coverage = rng.integers(0, 4, size=region.shape).astype(np.float32)
        coverage[:, : 5 * k] = 0  # each batch reaches less of the region
        image = rng.normal(100.0, 5.0, size=(3, *region.shape)).astype(np.float32)
        if k == 2:
            image[:, 28:31] += 400.0  # a trail the rejection removes
        stacks.append((np.where(coverage > 0, image, np.float32(np.nan)), coverage))
    if empty_layer:
        stacks[3] = (np.full_like(stacks[3][0], np.nan), np.zeros_like(stacks[3][1]))
    stacks.insert(1, None)
    return region, stacks


@pytest.mark.parametrize(("empty_layer", "max_bytes"), [(False, 256 * 2**20), (True, 256 * 2**20), (False, 200_000)])
def test_stacks_held_in_place_combine_as_their_copies(monkeypatch, empty_layer, max_bytes):
    """The combination reads held stacks in place (one band, no copy) and gives what copies of them give."""
    from zemosaic_dask.config.policies import stage_options
    from zemosaic_dask.units import combine_region
    from zemosaic_dask.units.combine_region import CombineJob, LayerInput, combine_layers_in_region

    region, stacks = _held_region(empty_layer)
    options = stage_options(load_config(), 3).layer_combine
    assert options.rejection == "noise_clip"
    layers = tuple(LayerInput(k, None) for k in range(len(stacks)))
    noise = {"noise": (5.0,) * 3, "sky": (100.0,) * 3, "shot": (400.0,) * 3}
    job = CombineJob(region, layers, None, 3, stack=options, max_bytes=max_bytes, **noise)
    present = [stack for stack in stacks if stack is not None]
    slots = [None if stack is None else sum(s is not None for s in stacks[:k]) for k, stack in enumerate(stacks)]
    held = BatchStacks(region, np.stack([s[0] for s in present]), np.stack([s[1] for s in present]), slots)
    images, coverages = (np.array(a) for a in held.held_samples(region)[1:])

    class Copies:  # the same stacks, read only as copies (a store's reader)
        iter_read = held.iter_read

    copied = combine_layers_in_region(job, np, reader=Copies())
    gathered = combine_region._gathered_band
    expect_in_place = not empty_layer and max_bytes > 10**6  # a batch without data, or bands: copies
    calls = []
    monkeypatch.setattr(combine_region, "_gathered_band", lambda *a: calls.append(1) or gathered(*a))
    in_place = combine_layers_in_region(job, np, reader=held)
    assert (not calls) == expect_in_place
    for got, want in zip(in_place, copied, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    deep = in_place.count[28:31] >= 4  # where four batches meet (a third of the rows at least), the trail is rejected
    assert deep.mean() > 0.3 and np.all(in_place.image[:, 28:31][:, deep] < 200.0)
    np.testing.assert_array_equal(held.held_samples(region)[1], images)  # the held stacks are left as they were
    np.testing.assert_array_equal(held.held_samples(region)[2], coverages)
