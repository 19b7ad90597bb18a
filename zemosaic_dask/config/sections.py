"""Section dataclasses of the configuration; each validates its fields against the schema on creation."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..errors import ConfigError
from .schema import coerce_value, full_key, load_schema

__all__ = [
    "SECTIONS",
    "AltazConfig",
    "AssemblyConfig",
    "BackgroundConfig",
    "CalibrationConfig",
    "ClassicConfig",
    "ClusterConfig",
    "GridConfig",
    "IngestConfig",
    "LoggingConfig",
    "MappingConfig",
    "OutputConfig",
    "QualityConfig",
    "SdsConfig",
    "StackConfig",
    "TwoPassConfig",
    "field_key",
]


def field_key(section: str, name: str) -> str:
    """Return the schema key of a dataclass field: ``("two-pass", "sigma_px")`` -> ``"two-pass.sigma-px"``."""
    return f"{section}.{name.replace('_', '-')}" if section else name.replace("_", "-")


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class _Section:
    """Validation shared by the section dataclasses: each field is checked against the schema."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        specs = load_schema().keys
        for f in fields(self):  # type: ignore[arg-type]
            spec = specs[field_key(self.section, f.name)]
            object.__setattr__(self, f.name, coerce_value(spec, getattr(self, f.name)))
        self._check()

    def _check(self) -> None:
        """Cross-field checks of the section (none by default)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the section as a JSON-serialisable dict with hyphenated keys."""
        return {f.name.replace("_", "-"): _json(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _require_le(low_key: str, low: float, high_key: str, high: float) -> None:
    if low > high:
        lo, hi = full_key(low_key), full_key(high_key)
        raise ConfigError(f"{lo} ({low}) must be <= {hi} ({high}); lower {lo} or raise {hi}")


@dataclass(frozen=True)
class GridConfig(_Section):
    """The global output grid (``zemosaic.grid``)."""

    section: ClassVar[str] = "grid"
    pixel_scale: float | None
    padding_px: int
    chunk: int
    max_pixels: int


@dataclass(frozen=True)
class IngestConfig(_Section):
    """How inputs are found and read (``zemosaic.ingest``)."""

    section: ClassVar[str] = "ingest"
    extensions: tuple[str, ...]
    recursive: bool
    hot_pixel_correction: bool
    hot_pixel_sigma: float
    default_bayer_pattern: str
    force_seestar: bool
    plate_solve: str
    solve_timeout_s: float


@dataclass(frozen=True)
class MappingConfig(_Section):
    """How input pixels map onto the output grid (``zemosaic.mapping``)."""

    section: ClassVar[str] = "mapping"
    max_error_px: float
    interpolation: str


@dataclass(frozen=True)
class StackConfig(_Section):
    """Normalisation, weighting, rejection and combine of a stack (``zemosaic.stack``)."""

    section: ClassVar[str] = "stack"
    normalisation: str
    weighting: str
    rejection: str
    kappa_low: float
    kappa_high: float
    noise_scale: float
    max_iterations: int
    grow_radius: int
    grow_kappa: float
    combine: str
    radial_weight: bool
    radial_power: float
    radial_floor: float

    def _check(self) -> None:
        if self.radial_weight:
            raise ConfigError(
                "zemosaic.stack.radial-weight: true is not supported yet (the fused resampling kernels take "
                "0/1 footprints); set zemosaic.stack.radial-weight: false"
            )


@dataclass(frozen=True)
class ClassicConfig(_Section):
    """Grouping, batching and master tiles of the classic pipeline (``zemosaic.classic``)."""

    section: ClassVar[str] = "classic"
    cluster_panel_threshold: float
    max_raw_per_master_tile: int
    min_raw_per_master_tile: int
    batch_overlap_pct: float
    allow_batch_duplication: bool
    target_stack: int
    min_safe_stack: int
    quality_crop: bool
    quality_gate: bool

    def _check(self) -> None:
        if self.max_raw_per_master_tile:
            _require_le(
                "classic.min-raw-per-master-tile",
                self.min_raw_per_master_tile,
                "classic.max-raw-per-master-tile",
                self.max_raw_per_master_tile,
            )


@dataclass(frozen=True)
class SdsConfig(_Section):
    """ZeSupaDupStack mega-batches (``zemosaic.sds``)."""

    section: ClassVar[str] = "sds"
    enabled: bool
    coverage_threshold: float
    min_batch_size: int
    target_batch_size: int
    min_coverage_keep: float
    store_batches: bool
    preplan: str | None

    def _check(self) -> None:
        _require_le("sds.min-batch-size", self.min_batch_size, "sds.target-batch-size", self.target_batch_size)


@dataclass(frozen=True)
class AssemblyConfig(_Section):
    """Resources of the assembly onto the global grid (``zemosaic.assembly``)."""

    section: ClassVar[str] = "assembly"
    use_gpu: str | bool
    cpu_load: float
    ram_fraction: float
    vram_fraction: float
    vram_reserve_mb: int
    max_chunk_mb: int
    min_chunk_mb: int
    gpu_min_memory_mb: int
    layer_fan_in: int
    min_part_msamples: float

    def _check(self) -> None:
        _require_le("assembly.min-chunk-mb", self.min_chunk_mb, "assembly.max-chunk-mb", self.max_chunk_mb)


@dataclass(frozen=True)
class CalibrationConfig(_Section):
    """Inter-tile photometric calibration (``zemosaic.calibration``)."""

    section: ClassVar[str] = "calibration"
    intertile: bool
    sky_percentiles: tuple[float, float]
    min_overlap_samples: int
    clip_sigma: float
    max_iterations: int
    anchor: str
    pair_neighbours: int | None
    heartbeat_s: float


@dataclass(frozen=True)
class BackgroundConfig(_Section):
    """The global background model of the frames (``zemosaic.background``)."""

    section: ClassVar[str] = "background"
    model: str
    gains: bool
    block_px: int
    max_points_per_pair: int
    iterations: int


@dataclass(frozen=True)
class QualityConfig(_Section):
    """The per-frame quality gate (``zemosaic.quality``)."""

    section: ClassVar[str] = "quality"
    enabled: bool
    max_fwhm_ratio: float
    max_elongation: float
    min_transparency: float
    max_noise_ratio: float
    min_stars_ratio: float
    salvage: bool


@dataclass(frozen=True)
class TwoPassConfig(_Section):
    """Two-pass coverage renormalisation (``zemosaic.two-pass``)."""

    section: ClassVar[str] = "two-pass"
    enabled: bool
    sigma_px: float
    scale_clip: tuple[float, float]
    gain_clip: tuple[float, float]
    min_luminance_ratio: float
    gpu: bool


@dataclass(frozen=True)
class AltazConfig(_Section):
    """Alt-az edge cleanup of the assembled mosaic (``zemosaic.altaz``)."""

    section: ClassVar[str] = "altaz"
    cleanup: str | bool
    min_coverage: float
    min_coverage_fraction: float
    opening_px: int
    margin_px: int
    decay_px: int


@dataclass(frozen=True)
class OutputConfig(_Section):
    """Products besides ``mosaic.fits`` (``zemosaic.output``)."""

    section: ClassVar[str] = "output"
    preview_max_side: int
    preview_stretch: str
    write_display: bool
    display_stretch: str
    write_aesthetic: bool
    aesthetic_block_px: int
    aesthetic_fill_radius_px: int
    fits_max_pixels: int


@dataclass(frozen=True)
class ClusterConfig(_Section):
    """Where the graph runs (``zemosaic.cluster``)."""

    section: ClassVar[str] = "cluster"
    kind: str
    scheduler: str | None
    scheduler_file: str | None
    n_workers: int | None
    threads_per_worker: int | None
    memory_limit: str | int | float
    processes: bool
    gpus: int
    rmm_pool_size: str | int | float | None
    dashboard_address: str | None
    performance_report: str | None
    jobs: int
    gpu_per_job: int
    worker_timeout_s: float

    def _check(self) -> None:
        if self.scheduler and self.scheduler_file:
            raise ConfigError(
                f"zemosaic.cluster.scheduler ({self.scheduler!r}) and zemosaic.cluster.scheduler-file "
                f"({self.scheduler_file!r}) are both set; keep one of them"
            )
        if self.kind != "local" and (self.scheduler or self.scheduler_file):
            raise ConfigError(
                f"zemosaic.cluster.kind is {self.kind!r} but an existing scheduler is also given; set "
                "zemosaic.cluster.kind to local to connect to it, or unset zemosaic.cluster.scheduler(-file)"
            )


@dataclass(frozen=True)
class LoggingConfig(_Section):
    """Log level and language (``zemosaic.logging``)."""

    section: ClassVar[str] = "logging"
    level: str
    lang: str


SECTIONS: dict[str, type[_Section]] = {
    cls.section: cls
    for cls in (
        GridConfig,
        IngestConfig,
        MappingConfig,
        StackConfig,
        ClassicConfig,
        SdsConfig,
        AssemblyConfig,
        CalibrationConfig,
        BackgroundConfig,
        QualityConfig,
        TwoPassConfig,
        AltazConfig,
        OutputConfig,
        ClusterConfig,
        LoggingConfig,
    )
}
