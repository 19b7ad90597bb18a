"""The one place where configuration becomes the options that planning and execution take.

Planning takes policies (:func:`grouping_policy`, :func:`batch_policy`, :func:`sds_policy`,
:func:`assembly_targets`, :func:`altaz_policy`); execution takes one :class:`StageOptions` built by
:func:`stage_options` from a plan's own settings (:func:`stage_options_of_plan`), never from
the configuration in effect when the plan runs, so ``plan.json`` is what runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..plans.altaz import AltazPolicy
from ..plans.assembly import AssemblyTargets
from ..plans.batches import BatchPolicy
from ..plans.groups import GroupingPolicy
from ..plans.quality_gate import QualityGatePolicy
from ..plans.sds import SdsPolicy
from ..plans.sds_execution import SdsExecutionPolicy
from ..plans.sections import PlanningPolicies
from ..tasks.altaz_edges import EdgeCleanupOptions
from ..tasks.stacking import StackOptions
from ..units.frame_window import FrameWindowOptions
from . import ZeMosaicConfig, config_of_plan, default_config
from .sections import BackgroundConfig, CalibrationConfig, TwoPassConfig

if TYPE_CHECKING:
    from ..clusters import ClusterOptions
    from ..io.finished_products import FinishingOptions
    from ..io.frames import IngestOptions
    from ..plans.mosaic import MosaicPlan

__all__ = [
    "StageOptions",
    "altaz_cleanup_options",
    "altaz_policy",
    "assembly_targets",
    "batch_policy",
    "cluster_options",
    "finishing_options",
    "grouping_policy",
    "planning_policies",
    "quality_gate_policy",
    "ingest_options",
    "sds_policy",
    "stack_options",
    "stage_options",
    "stage_options_of_plan",
    "window_options",
]

MiB = 1024 * 1024


@dataclass(frozen=True)
class StageOptions:
    """Every setting the execution stages take, resolved once.

    Attributes
    ----------
    stack : StackOptions
        Stacking of frames (regions, master tiles, batch mosaics).
    layer_combine : StackOptions
        Combination of the layers (classic master tiles, SDS batch mosaics) on the global
        grid: coverage-weighted, outliers rejected across layers against the noise each
        layer's coverage gives it (a trail a tile or batch kept where it held one frame).
    window : FrameWindowOptions
        Frame preparation and resampling.
    background : BackgroundConfig
        The global background model.
    calibration : CalibrationConfig
        Inter-layer gain and offset calibration.
    two_pass : TwoPassConfig
        The two-pass coverage renormalisation.
    sds_min_coverage_keep : float
        Fraction of the deepest batch count below which an SDS pixel is masked.
    assembly_targets : AssemblyTargets
        For a plan saved without an assembly plan: the targets to derive one from the workers.
    altaz : EdgeCleanupOptions
        Thresholds and widths of the alt-az edge mask.
    altaz_policy : AltazPolicy
        For a plan saved without an ``altaz`` section: the setting to decide the cleanup from.
    layer_fan_in : int
        Most layers one task combines on a region; deeper regions combine as a tree
        (:func:`~zemosaic_dask.plans.layer_tree.layer_tree`).
    """

    stack: StackOptions
    layer_combine: StackOptions
    window: FrameWindowOptions
    background: BackgroundConfig
    calibration: CalibrationConfig
    two_pass: TwoPassConfig
    sds_min_coverage_keep: float
    assembly_targets: AssemblyTargets
    altaz: EdgeCleanupOptions
    altaz_policy: AltazPolicy
    layer_fan_in: int


def stack_options(config: ZeMosaicConfig) -> StackOptions:
    """Stacking options from the ``zemosaic.stack`` section."""
    s = config.stack
    return StackOptions(
        normalisation=s.normalisation,
        weighting=s.weighting,
        rejection=s.rejection,
        kappa_low=s.kappa_low,
        kappa_high=s.kappa_high,
        max_iterations=s.max_iterations,
        combine=s.combine,
        noise_scale=s.noise_scale,
        grow_radius=s.grow_radius,
        grow_kappa=s.grow_kappa,
        min_samples_for_rejection=2 if s.rejection == "noise_clip" else 3,
    )


def window_options(config: ZeMosaicConfig, n_channels: int) -> FrameWindowOptions:
    """Frame preparation options from the ``ingest`` and ``mapping`` sections."""
    return FrameWindowOptions(
        max_error_px=config.mapping.max_error_px,
        hot_pixel_correction=config.ingest.hot_pixel_correction,
        hot_pixel_sigma=config.ingest.hot_pixel_sigma,
        n_channels=n_channels,
        interpolation=config.mapping.interpolation,
    )


def stage_options(config: ZeMosaicConfig, n_channels: int) -> StageOptions:
    """All execution options of a configuration, for a mosaic of ``n_channels`` channels.

    SDS batch mosaics are combined coverage-weighted with the configured rejection across
    batches: a batch spreads its few frames over the whole field, so a pixel of one batch
    mosaic is often a stack of one or two frames, too few to reject a satellite trail there;
    the rejection across batches removes it (no rejection under 3 batches).
    """
    stack = stack_options(config)
    return StageOptions(
        stack=stack,
        layer_combine=dataclasses.replace(stack, normalisation="none", weighting="none"),
        window=window_options(config, n_channels),
        background=config.background,
        calibration=config.calibration,
        two_pass=config.two_pass,
        sds_min_coverage_keep=config.sds.min_coverage_keep,
        assembly_targets=assembly_targets(config, n_channels),
        altaz=altaz_cleanup_options(config),
        altaz_policy=altaz_policy(config),
        layer_fan_in=config.assembly.layer_fan_in,
    )


def altaz_policy(config: ZeMosaicConfig) -> AltazPolicy:
    """Whether to clean the alt-az edges (``auto``, true, false), from the ``zemosaic.altaz`` section."""
    return AltazPolicy(cleanup=config.altaz.cleanup)


def altaz_cleanup_options(config: ZeMosaicConfig) -> EdgeCleanupOptions:
    """Thresholds and widths of the alt-az edge mask, from the ``zemosaic.altaz`` section."""
    a = config.altaz
    return EdgeCleanupOptions(
        min_coverage=a.min_coverage,
        min_coverage_fraction=a.min_coverage_fraction,
        opening_px=a.opening_px,
        margin_px=a.margin_px,
        decay_px=a.decay_px,
    )


def stage_options_of_plan(plan: MosaicPlan) -> StageOptions:
    """The execution options a plan runs with: from its own recorded settings alone."""
    return stage_options(config_of_plan(plan.config, default_config()), plan.n_channels)


def assembly_targets(config: Any, n_channels: int) -> AssemblyTargets:
    """Assembly targets from the ``zemosaic.assembly`` section."""
    a = config.assembly
    return AssemblyTargets(
        cpu_load=a.cpu_load,
        ram_fraction=a.ram_fraction,
        vram_fraction=a.vram_fraction,
        vram_reserve_bytes=int(a.vram_reserve_mb * MiB),
        max_chunk_bytes=int(a.max_chunk_mb * MiB),
        min_chunk_bytes=int(a.min_chunk_mb * MiB),
        gpu_min_memory_bytes=int(a.gpu_min_memory_mb * MiB),
        n_channels=n_channels,
        min_part_samples=round(a.min_part_msamples * 1_000_000),
        force_cpu=a.use_gpu is False,
        gpu_requested=a.use_gpu is not False,
    )


def grouping_policy(config: Any) -> GroupingPolicy:
    """Classic grouping of frames into master tiles, from the ``zemosaic.classic`` section."""
    c = config.classic
    return GroupingPolicy.from_values(c.cluster_panel_threshold, c.max_raw_per_master_tile, c.min_raw_per_master_tile)


def batch_policy(config: Any) -> BatchPolicy:
    """Classic batches inside master tiles, from the ``zemosaic.classic`` section."""
    c = config.classic
    return BatchPolicy.from_values(c.batch_overlap_pct, c.allow_batch_duplication, c.target_stack, c.min_safe_stack)


def sds_policy(config: Any) -> SdsPolicy:
    """SDS batch formation, from the ``zemosaic.sds`` section."""
    s = config.sds
    return SdsPolicy.from_values(s.coverage_threshold, s.min_batch_size, s.target_batch_size)


def quality_gate_policy(config: ZeMosaicConfig) -> QualityGatePolicy:
    """The per-frame quality gate, from the ``quality`` section (salvage groups as the ``classic`` master tiles)."""
    q, c = config.quality, config.classic
    return QualityGatePolicy(
        enabled=q.enabled,
        max_fwhm_ratio=q.max_fwhm_ratio,
        max_elongation=q.max_elongation,
        min_transparency=q.min_transparency,
        max_noise_ratio=q.max_noise_ratio,
        min_stars_ratio=q.min_stars_ratio,
        salvage=q.salvage,
        min_safe_stack=c.min_safe_stack,
        group_threshold_deg=c.cluster_panel_threshold,
    )


def planning_policies(config: ZeMosaicConfig, n_channels: int) -> PlanningPolicies:
    """Everything planning takes from the configuration, for a mosaic of ``n_channels`` channels."""
    return PlanningPolicies(
        grouping=grouping_policy(config),
        batching=batch_policy(config),
        sds=sds_policy(config),
        assembly=assembly_targets(config, n_channels),
        altaz=altaz_policy(config),
        sds_execution=SdsExecutionPolicy(
            store_batches=config.sds.store_batches,
            intertile=config.calibration.intertile,
            two_pass=config.two_pass.enabled,
            fan_in=config.assembly.layer_fan_in,
        ),
    )


def ingest_options(config: ZeMosaicConfig, wcs_cache_dir: str | None = None) -> IngestOptions:
    """Ingest options; plate-solved WCS are cached in ``wcs_cache_dir`` (never in the inputs)."""
    from ..io.frames import IngestOptions

    return IngestOptions(
        default_bayer_pattern=config.ingest.default_bayer_pattern,
        force_seestar=config.ingest.force_seestar,
        plate_solve=config.ingest.plate_solve,
        solve_timeout_s=config.ingest.solve_timeout_s,
        wcs_cache_dir=wcs_cache_dir,
        measure_quality=config.quality.enabled,
    )


def cluster_options(config: ZeMosaicConfig) -> ClusterOptions:
    """Cluster options from the ``zemosaic.cluster`` configuration section."""
    from ..clusters import ClusterOptions

    c = config.cluster
    return ClusterOptions(
        kind=c.kind,
        scheduler=c.scheduler,
        scheduler_file=c.scheduler_file,
        n_workers=c.n_workers,
        threads_per_worker=c.threads_per_worker,
        memory_limit=c.memory_limit,
        processes=c.processes,
        gpus=c.gpus,
        rmm_pool_size=c.rmm_pool_size,
        dashboard_address=c.dashboard_address,
        jobs=c.jobs,
        gpu_per_job=c.gpu_per_job,
        worker_timeout=c.worker_timeout_s,
    )


def finishing_options(config: ZeMosaicConfig) -> FinishingOptions:
    """The finished products to write beside ``mosaic.fits`` (``zemosaic.output``)."""
    from ..io.finished_products import FinishingOptions

    o = config.output
    return FinishingOptions(
        write_display=o.write_display,
        display_stretch=o.display_stretch,
        write_aesthetic=o.write_aesthetic,
        background_block_px=o.aesthetic_block_px,
        fill_radius_px=o.aesthetic_fill_radius_px,
    )
