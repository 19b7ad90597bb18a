"""Configuration: defaults, layering and precedence, aliases, validation messages, schema sync."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from importlib import resources
from pathlib import Path

import dask.config
import pytest
import yaml

from zemosaic_dask.config import (
    ConfigEntry,
    ZeMosaicConfig,
    default_config,
    describe_config,
    load_config,
)
from zemosaic_dask.errors import ConfigError
from zemosaic_dask.io.scan import DEFAULT_EXTENSIONS

PACKAGE = resources.files("zemosaic_dask")


def _read_yaml(name: str) -> dict:
    return yaml.safe_load(PACKAGE.joinpath(name).read_text(encoding="utf-8"))


def _leaves(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_leaves(value, f"{key}."))
        else:
            out[key] = value
    return out


def _schema_leaves(node: dict, prefix: str = "") -> dict:
    out = {}
    for name, child in node["properties"].items():
        if child.get("type") == "object":
            out.update(_schema_leaves(child, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = child
    return out


DEFAULTS = _leaves(_read_yaml("zemosaic.yaml")["zemosaic"])
SCHEMA = _schema_leaves(_read_yaml("zemosaic-schema.yaml")["properties"]["zemosaic"])


@pytest.fixture(autouse=True)
def isolated_dask_config(monkeypatch):
    """Give each test the environment without DASK_ZEMOSAIC__ variables and restore dask.config after it."""
    for var in list(os.environ):
        if var.startswith("DASK_ZEMOSAIC"):
            monkeypatch.delenv(var)
    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def _write(tmp_path: Path, data: dict, name: str = "user.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_defaults_load_into_dask_config_and_dataclasses():
    cfg = load_config()
    assert dask.config.get("zemosaic.sds.min-batch-size") == DEFAULTS["sds.min-batch-size"]
    assert dask.config.get("zemosaic.two-pass.gain-clip") == DEFAULTS["two-pass.gain-clip"]
    assert cfg.mode == "auto"
    assert cfg.sds.min_batch_size == 5 and cfg.sds.target_batch_size == 10
    assert cfg.sds.coverage_threshold == pytest.approx(0.92)
    assert cfg.grid.pixel_scale is None and cfg.grid.chunk == 512
    assert cfg.ingest.extensions == DEFAULT_EXTENSIONS and {".fits.gz", ".fits.fz"} <= set(DEFAULT_EXTENSIONS)
    assert cfg.two_pass.gain_clip == (0.85, 1.18)
    assert cfg.calibration.sky_percentiles == (30.0, 70.0)
    assert cfg.assembly.use_gpu == "auto"
    assert cfg.cluster.dashboard_address == ":8787"
    assert isinstance(cfg, ZeMosaicConfig)
    assert cfg == default_config()


def test_every_default_is_in_effect():
    flat = load_config().flat()
    assert set(flat) == set(DEFAULTS)
    for key, value in DEFAULTS.items():
        expected = list(value) if isinstance(value, list) else value
        assert flat[key] == expected, key


def test_user_file_merges_over_defaults(tmp_path):
    path = _write(tmp_path, {"zemosaic": {"sds": {"min-batch-size": 3}, "grid": {"pixel_scale": 2.5}}})
    cfg = load_config(path)
    assert cfg.sds.min_batch_size == 3
    assert cfg.grid.pixel_scale == 2.5
    assert cfg.sds.target_batch_size == DEFAULTS["sds.target-batch-size"]


def test_user_file_passes_other_dask_sections_through(tmp_path):
    path = _write(
        tmp_path,
        {
            "zemosaic": {"cluster": {"kind": "slurm"}},
            "jobqueue": {"slurm": {"cores": 8, "memory": "24GB", "queue": "astro"}},
            "distributed": {"worker": {"memory": {"target": 0.7}}},
        },
    )
    cfg = load_config(path)
    assert cfg.cluster.kind == "slurm"
    assert dask.config.get("jobqueue.slurm.cores") == 8
    assert dask.config.get("jobqueue.slurm.queue") == "astro"
    assert dask.config.get("distributed.worker.memory.target") == 0.7


def test_misspelt_top_level_section_is_refused(tmp_path):
    path = _write(tmp_path, {"zemosiac": {"sds": {"min-batch-size": 3}}})
    with pytest.raises(ConfigError, match="zemosiac.*did you mean zemosaic"):
        load_config(path)


def test_missing_and_malformed_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("zemosaic: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_environment_override_after_refresh(monkeypatch):
    monkeypatch.setenv("DASK_ZEMOSAIC__SDS__MIN_BATCH_SIZE", "3")
    monkeypatch.setenv("DASK_ZEMOSAIC__TWO_PASS__SIGMA_PX", "20")
    monkeypatch.setenv("DASK_ZEMOSAIC__STACK__REJECTION", "none")
    dask.config.refresh()
    assert dask.config.get("zemosaic.sds.min-batch-size") == 3
    cfg = load_config()
    assert cfg.sds.min_batch_size == 3
    assert cfg.two_pass.sigma_px == 20.0
    assert cfg.stack.rejection == "none"


def test_environment_is_read_without_refresh(monkeypatch):
    monkeypatch.setenv("DASK_ZEMOSAIC__SDS__TARGET_BATCH_SIZE", "12")
    assert load_config().sds.target_batch_size == 12


def test_unknown_environment_key_names_the_variable(monkeypatch):
    monkeypatch.setenv("DASK_ZEMOSAIC__SDS__MIN_BATCH_SISE", "3")
    with pytest.raises(ConfigError) as info:
        load_config()
    text = str(info.value)
    assert "zemosaic.sds.min-batch-sise" in text
    assert "did you mean zemosaic.sds.min-batch-size?" in text
    assert "DASK_ZEMOSAIC__SDS__MIN_BATCH_SISE" in text


def test_cli_overrides_accept_dotted_prefixed_and_underscored_keys():
    cfg = load_config(
        overrides={"sds.min-batch-size": 4, "zemosaic.classic.target-stack": 7, "two_pass.sigma_px": "33"}
    )
    assert cfg.sds.min_batch_size == 4
    assert cfg.classic.target_stack == 7
    assert cfg.two_pass.sigma_px == 33.0


def test_precedence_defaults_file_env_cli(tmp_path, monkeypatch):
    path = _write(tmp_path, {"zemosaic": {"sds": {"min-batch-size": 4, "target-batch-size": 20}}})
    assert load_config().sds.min_batch_size == 5
    assert load_config(path).sds.min_batch_size == 4
    monkeypatch.setenv("DASK_ZEMOSAIC__SDS__MIN_BATCH_SIZE", "6")
    assert load_config(path).sds.min_batch_size == 6
    cfg = load_config(path, overrides={"sds.min-batch-size": 7})
    assert cfg.sds.min_batch_size == 7
    assert cfg.sds.target_batch_size == 20


def test_dask_config_set_is_honoured_below_the_file(tmp_path):
    with dask.config.set({"zemosaic.sds.min-batch-size": 2}):
        assert load_config().sds.min_batch_size == 2
        path = _write(tmp_path, {"zemosaic": {"sds": {"min-batch-size": 4}}})
        assert load_config(path).sds.min_batch_size == 4


# ZeMosaic key -> (our key, value given, value expected): the flat names its users know.
ZEMOSAIC_ALIASES = {
    "sds_coverage_threshold": ("sds.coverage-threshold", 0.8, 0.8),
    "sds_min_batch_size": ("sds.min-batch-size", 2, 2),
    "sds_target_batch_size": ("sds.target-batch-size", 30, 30),
    "sds_min_coverage_keep": ("sds.min-coverage-keep", 0.25, 0.25),
    "sds_mode": ("sds.enabled", False, False),
    "sds_enabled": ("sds.enabled", False, False),
    "min_safe_stack": ("classic.min-safe-stack", 2, 2),
    "target_stack": ("classic.target-stack", 9, 9),
    "batch_overlap_pct": ("classic.batch-overlap-pct", 25, 25.0),
    "allow_batch_duplication": ("classic.allow-batch-duplication", False, False),
    "cluster_panel_threshold": ("classic.cluster-panel-threshold", 0.1, 0.1),
    "max_raw_per_master_tile": ("classic.max-raw-per-master-tile", 0, 0),
    "stacking_normalize_method": ("stack.normalisation", "linear_fit", "linear_fit"),
    "stacking_weighting_method": ("stack.weighting", "noise_variance", "noise_variance"),
    "stacking_rejection_algorithm": ("stack.rejection", "winsorized_sigma_clip", "winsorized_sigma_clip"),
    "stacking_kappa_low": ("stack.kappa-low", 2.5, 2.5),
    "stacking_kappa_high": ("stack.kappa-high", 2.5, 2.5),
    "stacking_final_combine": ("stack.combine", "median", "median"),
    "apply_radial_weight": ("stack.radial-weight", True, True),
    "radial_shape_power": ("stack.radial-power", 2.0, 2.0),
    "min_radial_weight_floor": ("stack.radial-floor", 0.3, 0.3),
    "intertile_photometric_match": ("calibration.intertile", True, True),
    "intertile_sky_percentile": ("calibration.sky-percentiles", [25.0, 75.0], [25.0, 75.0]),
    "two_pass_coverage_renorm": ("two-pass.enabled", True, True),
    "two_pass_cov_sigma_px": ("two-pass.sigma-px", 80, 80.0),
    "two_pass_cov_gain_clip": ("two-pass.gain-clip", [0.9, 1.1], [0.9, 1.1]),
    "use_gpu_phase5": ("assembly.use-gpu", False, False),
    "altaz_cleanup_enabled": ("altaz.cleanup", True, True),
    "assembly_process_workers": ("cluster.n-workers", 4, 4),
    "force_seestar_mode": ("ingest.force-seestar", True, True),
    "preplan_master_groups": ("sds.preplan", "groups.json", "groups.json"),
}


@pytest.mark.parametrize("alias", sorted(ZEMOSAIC_ALIASES))
def test_zemosaic_alias_in_overrides(alias):
    key, given, expected = ZEMOSAIC_ALIASES[alias]
    if alias == "apply_radial_weight":  # mapped to stack.radial-weight, which refuses true for now
        with pytest.raises(ConfigError, match="zemosaic.stack.radial-weight: true is not supported"):
            load_config(overrides={alias: given})
        return
    assert load_config(overrides={alias: given}).get(key) == expected
    assert load_config().get(key) != expected


def test_zemosaic_aliases_in_a_file_at_top_level_and_under_zemosaic(tmp_path):
    path = _write(
        tmp_path,
        {
            "sds_min_batch_size": 2,
            "stacking_rejection_algorithm": "kappa_sigma",
            "zemosaic": {"target_stack": 8, "stacking_normalize_method": "sky_mean"},
        },
    )
    cfg = load_config(path)
    assert cfg.sds.min_batch_size == 2
    assert cfg.stack.rejection == "kappa_sigma"
    assert cfg.classic.target_stack == 8
    assert cfg.stack.normalisation == "sky_mean"


def test_schema_declares_exactly_these_aliases():
    declared = {alias: key for key, node in SCHEMA.items() for alias in node.get("aliases", [])}
    assert declared == {alias: key for alias, (key, _, _) in ZEMOSAIC_ALIASES.items()}


@pytest.mark.parametrize(
    ("key", "given", "expected"),
    [
        ("stack.rejection", "Kappa-Sigma", "kappa_sigma"),
        ("stack.rejection", "winsorized", "winsorized_sigma_clip"),
        ("stack.normalisation", "linear", "linear_fit"),
        ("stack.weighting", "noise_var", "noise_variance"),
        ("stack.combine", "average", "mean"),
        ("mode", "mosaic_first", "mosaic-first"),
        ("logging.level", "debug", "DEBUG"),
        ("ingest.default-bayer-pattern", "rggb", "RGGB"),
        ("assembly.use-gpu", "true", True),
    ],
)
def test_other_spellings_of_values_map_to_ours(key, given, expected):
    assert load_config(overrides={key: given}).get(key) == expected


def test_zero_workers_means_auto(tmp_path):
    path = _write(tmp_path, {"zemosaic": {"cluster": {"n-workers": 3}}})
    assert load_config(path).cluster.n_workers == 3
    assert load_config(path, overrides={"assembly_process_workers": 0}).cluster.n_workers is None


def test_same_key_twice_in_one_source_is_refused():
    with pytest.raises(ConfigError, match="sds_min_batch_size=3.*sds.min-batch-size=4"):
        load_config(overrides={"sds_min_batch_size": 3, "sds.min-batch-size": 4})


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"sds.min-batch-sise": 3})
    assert "unknown key zemosaic.sds.min-batch-sise; did you mean zemosaic.sds.min-batch-size?" in str(info.value)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = _write(tmp_path, {"zemosaic": {"stack": {"kapa-low": 2}}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "zemosaic.stack.kapa-low" in str(info.value)
    assert "did you mean zemosaic.stack.kappa-low?" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_section_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown key sdss; did you mean zemosaic.sds?"):
        load_config(overrides={"sdss": {"min-batch-size": 3}})


def test_bad_value_in_a_file_names_the_file(tmp_path):
    path = _write(tmp_path, {"zemosaic": {"classic": {"batch-overlap-pct": 95}}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "zemosaic.classic.batch-overlap-pct must be a number between 0 and 70, got 95" in str(info.value)
    assert f"file:{path}" in str(info.value)


def test_unrelated_unknown_key_has_no_suggestion():
    with pytest.raises(ConfigError, match="unknown key zemosaic.grid.colour-profile") as info:
        load_config(overrides={"grid.colour-profile": "srgb"})
    assert "did you mean" not in str(info.value)


def test_bad_value_message_names_key_value_and_accepted():
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"sds.min-batch-size": 0})
    assert "zemosaic.sds.min-batch-size must be an integer >= 1, got 0 (set zemosaic.sds.min-batch-size)" in str(
        info.value
    )


def test_bad_choice_lists_every_accepted_value():
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"stack.rejection": "kapa"})
    text = str(info.value)
    assert "zemosaic.stack.rejection" in text and "'kapa'" in text
    for accepted in SCHEMA["stack.rejection"]["enum"]:
        assert accepted in text


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("grid.chunk", 100),
        ("grid.chunk", 16384),
        ("sds.coverage-threshold", 0.0),
        ("sds.coverage-threshold", 1.5),
        ("classic.batch-overlap-pct", 80),
        ("calibration.sky-percentiles", [70, 30]),
        ("calibration.sky-percentiles", [30, 70, 90]),
        ("two-pass.gain-clip", [1.2, 0.9]),
        ("ingest.extensions", ["fits"]),
        ("cluster.memory-limit", "plenty"),
        ("cluster.n-workers", -2),
        ("stack.radial-weight", "maybe"),
        ("stack.kappa-low", True),
        ("grid.pixel-scale", float("nan")),
    ],
)
def test_out_of_range_values_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"zemosaic.{key} must be"):
        load_config(overrides={key: value})


@pytest.mark.parametrize("key", sorted(k for k, n in SCHEMA.items() if "minimum" in n or "exclusiveMinimum" in n))
def test_every_lower_bound_is_enforced(key):
    node = SCHEMA[key]
    below = node["minimum"] - 1 if "minimum" in node else node["exclusiveMinimum"]
    if below in node.get("null-values", []):
        below -= 1
    with pytest.raises(ConfigError, match=f"zemosaic.{key} must be .*got {below:g}"):
        load_config(overrides={key: below})


def test_min_batch_size_above_target_names_both_keys():
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"sds.min-batch-size": 12, "sds.target-batch-size": 10})
    text = str(info.value)
    assert "zemosaic.sds.min-batch-size (12)" in text and "zemosaic.sds.target-batch-size (10)" in text
    assert load_config(overrides={"sds.min-batch-size": 10, "sds.target-batch-size": 10}).sds.min_batch_size == 10


def test_scheduler_and_scheduler_file_are_exclusive():
    with pytest.raises(ConfigError, match="scheduler.*scheduler-file"):
        load_config(overrides={"cluster.scheduler": "tcp://h:8786", "cluster.scheduler-file": "/s.json"})


def test_schema_and_defaults_have_the_same_keys():
    assert set(SCHEMA) == set(DEFAULTS)


def test_every_schema_key_has_description_type_and_accepted_values():
    for key, node in SCHEMA.items():
        assert len(node.get("description", "").strip()) > 15, key
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        assert set(types) <= {"string", "integer", "number", "boolean", "array", "null"}, key
        if {"integer", "number"} & set(types) and "format" not in node:
            assert "minimum" in node or "exclusiveMinimum" in node, f"{key} has no range"
        if types == ["string"]:
            assert "enum" in node, f"{key} lists no accepted values"
        if "array" in types:
            assert "items" in node and "minItems" in node, key


def test_every_default_validates_and_is_canonical():
    cfg = default_config()
    for key, value in DEFAULTS.items():
        again = load_config(overrides={key: value})
        assert again == cfg, key


def test_dataclass_fields_cover_the_schema():
    assert set(default_config().flat()) == set(SCHEMA)


def test_to_dict_is_json_and_round_trips_through_a_file(tmp_path):
    cfg = load_config(overrides={"sds.min-batch-size": 3, "two-pass.gain-clip": [0.9, 1.1]})
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["sds"]["min-batch-size"] == 3
    assert data["two-pass"]["gain-clip"] == [0.9, 1.1]
    assert all("_" not in key for section in data.values() if isinstance(section, dict) for key in section)
    assert load_config(_write(tmp_path, {"zemosaic": data})) == cfg


def test_describe_config_reports_each_source(tmp_path, monkeypatch):
    path = _write(tmp_path, {"zemosaic": {"grid": {"padding-px": 16}, "sds": {"min-batch-size": 4}}})
    monkeypatch.setenv("DASK_ZEMOSAIC__SDS__MIN_BATCH_SIZE", "6")
    with dask.config.set({"zemosaic.output.preview-max-side": 1024}):
        entries = describe_config(path, overrides={"stack.kappa-high": 3.5})
    by_key = {entry.key: entry for entry in entries}
    assert all(isinstance(entry, ConfigEntry) for entry in entries)
    assert [e.key for e in entries] == [f"zemosaic.{k}" for k in SCHEMA]
    assert by_key["zemosaic.grid.padding-px"] == ConfigEntry("zemosaic.grid.padding-px", 16, f"file:{path}")
    assert by_key["zemosaic.sds.min-batch-size"] == ConfigEntry(
        "zemosaic.sds.min-batch-size", 6, "env:DASK_ZEMOSAIC__SDS__MIN_BATCH_SIZE"
    )
    assert by_key["zemosaic.stack.kappa-high"] == ConfigEntry("zemosaic.stack.kappa-high", 3.5, "cli")
    assert by_key["zemosaic.output.preview-max-side"].source == "dask-config"
    changed = {"grid.padding-px", "sds.min-batch-size", "stack.kappa-high", "output.preview-max-side"}
    for key in set(SCHEMA) - changed:
        assert by_key[f"zemosaic.{key}"].source == "default", key


def test_config_is_frozen_and_validated_on_replace():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sds.min_batch_size = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mode = "sds"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="zemosaic.sds.min-batch-size must be"):
        dataclasses.replace(cfg.sds, min_batch_size=0)
    assert dataclasses.replace(cfg.sds, min_batch_size=2).min_batch_size == 2
    assert hash(cfg) == hash(load_config())


def test_fits_size_limit_is_read_and_checked(monkeypatch):
    assert load_config().output.fits_max_pixels == 1_000_000_000
    monkeypatch.setenv("DASK_ZEMOSAIC__OUTPUT__FITS_MAX_PIXELS", "5000")
    assert load_config().output.fits_max_pixels == 5000
    monkeypatch.setenv("DASK_ZEMOSAIC__OUTPUT__FITS_MAX_PIXELS", "0")
    with pytest.raises(ConfigError, match="zemosaic.output.fits-max-pixels"):
        load_config()
