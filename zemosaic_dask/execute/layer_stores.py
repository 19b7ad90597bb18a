"""Executing the layer modes (classic and SDS): build layers, calibrate them, combine them."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from ..graph.layers import build_combine_graph, build_mask_graph, build_region_graph, build_tile_layer_graph
from ..graph.mosaic_first import region_jobs
from ..graph.regions import build_bundled_region_graph
from ..io.store import MosaicStore, open_mosaic_stores
from ..plans.grid import OutputGrid
from ..plans.layer_tree import layer_tree
from ..plans.layers import LayerPlan
from ..plans.mosaic import MosaicPlan
from ..plans.regions import assign_frames_to_regions
from ..plans.sds_execution import layers_by_region
from ..tasks.stacking import StackOptions
from ..units.combine_region import CombineJob, LayerInput
from ..units.tile_layer import TileLayerJob

__all__ = [
    "LayerStores",
    "build_layers",
    "combine_layers",
    "combine_trees",
    "layer_inputs",
    "layer_region_jobs",
    "named_layer_stores",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerStores:
    """Where one layer lives: its tile store (classic only) and its store on the global grid."""

    layer: LayerPlan
    tile: MosaicStore | None
    on_grid: MosaicStore


def layer_stores(plan: MosaicPlan, store: MosaicStore, *, restart: bool = False) -> list[LayerStores]:
    """Create (or reopen) the stores of every layer of the plan, all at once."""
    specs = [(f"layers/{layer.id}", plan.grid) for layer in plan.layers]
    specs += [(f"tiles/{layer.id}", layer.grid) for layer in plan.layers if layer.grid is not None]
    opened = open_mosaic_stores(store.url, specs, plan.n_channels, fingerprint=plan.fingerprint(), restart=restart)
    by_prefix = {s.prefix: s for s, _ in opened}
    return [
        LayerStores(layer, by_prefix.get(f"tiles/{layer.id}"), by_prefix[f"layers/{layer.id}"]) for layer in plan.layers
    ]


def named_layer_stores(plan: MosaicPlan, store: MosaicStore) -> list[LayerStores]:
    """Every layer with the name of its store on the global grid, none created (fused SDS regions write none)."""
    return [LayerStores(layer, None, MosaicStore(store.url, f"layers/{layer.id}")) for layer in plan.layers]


def layer_region_jobs(
    plan: MosaicPlan,
    layer: LayerPlan,
    grid: OutputGrid,
    store: MosaicStore,
    stack: StackOptions,
    window: Any,
    *,
    max_bytes: int | None = None,
    coefficients: Any = None,
) -> list[Any]:
    """The region builds of one layer's frames on ``grid`` (its tile grid, or the global grid).

    Stored batch mosaics and fused SDS regions both stack a batch from these jobs, so a fused
    region's batch stack is the one the batch mosaic would hold there.
    """
    frames = [plan.frames[i] for i in layer.frames]
    return region_jobs(
        grid, frames, store, stack, window, frame_ids=layer.frames, max_bytes=max_bytes, coefficients=coefficients
    )


def build_layers(
    plan: MosaicPlan,
    stores: list[LayerStores],
    stack: StackOptions,
    window: Any,
    *,
    resources: dict[str, int] | None = None,
    max_bytes: int | None = None,
    coefficients: Any = None,
    bundles: int = 1,
) -> list[Any]:
    """Delayed tasks building every layer on the global grid (tiles first for classic).

    SDS batch mosaics, whose regions hold a few frames each, are built in at most
    ``bundles`` tasks (``reproject-batches-<k>``), each returning a list of summaries.
    """
    tasks: list[Any] = []
    batch_jobs: list[tuple[str, Any]] = []
    for entry in stores:
        layer = entry.layer
        sizes = {"max_bytes": max_bytes, "coefficients": coefficients}
        if entry.tile is None:
            jobs = layer_region_jobs(plan, layer, plan.grid, entry.on_grid, stack, window, **sizes)
            batch_jobs += [(f"reproject-batch-{layer.id}", job) for job in jobs]
            continue
        tile_jobs = layer_region_jobs(plan, layer, layer.grid, entry.tile, stack, window, **sizes)
        tile_tasks = build_region_graph(tile_jobs, f"stack-tile-{layer.id}", resources)
        distinct = [plan.frames[i] for i in layer.distinct]
        layer_jobs = [
            TileLayerJob(
                plan.grid.region(iy, ix),
                plan.grid,
                layer.grid,
                entry.tile,
                entry.on_grid,
                max_error_px=window.max_error_px,
            )
            for iy, ix in assign_frames_to_regions(plan.grid, distinct)
        ]
        tasks += tile_tasks + build_tile_layer_graph(layer_jobs, layer.id, tile_tasks)
    if batch_jobs:
        tasks += build_bundled_region_graph(batch_jobs, "reproject-batches", resources, bundles)
    return tasks


def layer_inputs(
    stores: list[LayerStores],
    corrections: dict[int, tuple[tuple[float, ...], tuple[float, ...]]] | None,
    scales: dict[int, float] | None = None,
) -> list[LayerInput]:
    """Layers with their calibration corrections and two-pass scales."""
    inputs = []
    for entry in stores:
        gain, offset = (corrections or {}).get(entry.layer.id, ((1.0,), (0.0,)))
        inputs.append(LayerInput(entry.layer.id, entry.on_grid, gain, offset, (scales or {}).get(entry.layer.id, 1.0)))
    return inputs


def combine_jobs(
    plan: MosaicPlan,
    stores: list[LayerStores],
    inputs: list[LayerInput],
    out: MosaicStore,
    stack: StackOptions,
    *,
    rewrite: bool = False,
    max_bytes: int | None = None,
    noise: tuple[float, ...] | None = None,
    sky: tuple[float, ...] | None = None,
    shot: tuple[float, ...] | None = None,
) -> list[CombineJob]:
    """One combination job per global region that a layer's frames reach.

    A layer holds data only where its frames do: a region inside a layer's bounding box but
    reached by none of its frames (a sparse SDS batch spread over a wide field, a classic
    tile's corner) gets no job, so an empty region is never scheduled and stays unwritten
    (NaN, zero coverage) in ``out``. ``noise``, ``sky`` and ``shot`` (per channel: the frames'
    typical pixel noise, sky level and shot level) let a ``noise_clip`` rejection across layers judge each
    layer pixel by the noise its coverage gives it.
    """
    by_id = {i.id: i for i in inputs}
    extra: dict[str, Any] = {"max_bytes": int(max_bytes)} if max_bytes else {}
    if noise is not None:
        extra.update(
            noise=tuple(noise),
            sky=tuple(sky) if sky is not None else None,
            shot=tuple(shot) if shot is not None else None,
        )
    jobs = []
    for key, positions in layers_by_region(plan.grid, plan.frames, [entry.layer for entry in stores]).items():
        members = tuple(by_id[stores[p].layer.id] for p in positions)
        region = plan.grid.region(*key)
        jobs.append(CombineJob(region, members, out, plan.n_channels, stack, rewrite=rewrite, **extra))
    return jobs


def combine_trees(
    jobs: list[CombineJob], fan_in: int, *, grid: OutputGrid, n_channels: int, fingerprint: str
) -> list[list[list[CombineJob]]]:
    """Each region's combination as the levels of its tree (:func:`~zemosaic_dask.plans.layer_tree.layer_tree`).

    A region reached by at most ``fan_in`` layers is one level of one job. A deeper one is
    combined in groups of layers, written to the group stores ``groups/<level>/<k>`` (a
    store per group position, shared by every region, each region writing its own
    chunks), then in groups of groups, until the root job writes the region; every node
    keeps the region's stacking options and expected noise. The group stores are made
    (or reopened, to resume) on ``grid`` with the run's ``fingerprint``.
    """
    shapes = [layer_tree(len(job.layers), fan_in) for job in jobs]
    widths: dict[int, int] = {}
    for levels in shapes:
        for level, groups in enumerate(levels[:-1]):
            widths[level] = max(widths.get(level, 0), len(groups))
    keys = [(level, k) for level, width in sorted(widths.items()) for k in range(width)]
    url = jobs[0].out.url if jobs else ""
    specs = [(f"groups/{level}/{k}", grid) for level, k in keys]
    opened = open_mosaic_stores(url, specs, n_channels, fingerprint=fingerprint) if keys else []
    stores = {key: store for key, (store, _) in zip(keys, opened, strict=True)}
    trees = []
    for job, levels in zip(jobs, shapes, strict=True):
        nodes: list[list[CombineJob]] = []
        inputs = job.layers
        for level, groups in enumerate(levels[:-1]):
            nodes.append(
                [
                    dataclasses.replace(job, layers=tuple(inputs[r.start : r.stop]), out=stores[level, k], group=True)
                    for k, r in enumerate(groups)
                ]
            )
            inputs = tuple(LayerInput(k, stores[level, k]) for k in range(len(groups)))
        nodes.append([dataclasses.replace(job, layers=inputs)])
        trees.append(nodes)
    return trees


def combine_layers(trees: list[list[list[CombineJob]]], prefix: str) -> list[Any]:
    """Delayed combinations of the layers, one per region (the root of its tree)."""
    return build_combine_graph(trees, prefix)


def mask_layers(jobs: list[CombineJob], min_layers: float, counts: MosaicStore | None = None) -> list[Any]:
    """Delayed masking of pixels reached by too few layers (counted from ``counts`` when given)."""
    return build_mask_graph(jobs, min_layers, counts)
