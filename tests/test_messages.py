"""Message catalogue: English texts the logs promise, French completeness, field parity, language choice."""

from __future__ import annotations

import json
import string
from importlib import resources

import pytest

from zemosaic_dask import messages
from zemosaic_dask.messages import catalogue, detect_language, get_language, msg, set_language


def _raw(lang: str) -> dict[str, str]:
    return json.loads(resources.files("zemosaic_dask").joinpath("messages", f"{lang}.json").read_text("utf-8"))


def _fields(text: str) -> dict[str, str]:
    return {name: spec for _, name, spec, _ in string.Formatter().parse(text) if name is not None}


# Log lines whose English wording other tests and users grep for.
EXPECTED_EN = {
    "batch_duplicating": "[Batch] Duplicating frames: original={original} -> final={final} for tile {tile}",
    "tile_salvage": "Tile {tile}: salvage mode (n={n}). Relaxing QC and crop.",
    "sds_policy": "SDS: coverage={coverage}, min_size={min_size}, target_size={target_size}.",
    "sds_built": "SDS: built {count} batch(es) with sizes: {sizes}, coverage: {coverage}",
    "sds_error_no_valid_batches": "sds_error_no_valid_batches: {reason}; falling back to Mosaic-First",
    "two_pass_plan": (
        "[TwoPass] plan={source} cpu_workers={cpu_workers} use_gpu={use_gpu} max_chunk_mb={max_chunk_mb:.1f} "
        "gpu_max_chunk_mb={gpu_max_chunk_mb:.1f} rows={rows} gpu_rows={gpu_rows}"
    ),
    "two_pass_gpu_disabled": "[TwoPass] GPU requested but disabled by plan.use_gpu=False -> forcing CPU",
    "two_pass_backend": "[TwoPass] Coverage backend: gpu_all={gpu_all}",
    "dashboard": "Dashboard: {link}",
    "run_done": "Mosaic written to {path} in {seconds:.1f} s",
    "frame_rejected": "Rejected {path}: {reason}",
    "frames_found": "Found {count} input file(s)",
    "mode_selected": "Mode: {mode} ({why})",
    "fallback": "Falling back to {mode}: {reason}",
    "gpu_fallback": "GPU failed for {unit} ({reason}); recomputed on CPU",
    "heartbeat": "[Intertile] heartbeat: {done}/{total} pairs done, {pending} pending (e.g. {sample})",
    "reason_no_wcs": "no WCS and no plate solver",
}
REQUIRED_KEYS = set(EXPECTED_EN) | {
    "run_start",
    "reason_unreadable",
    "reason_not_fits",
    "reason_no_image",
    "reason_invalid_wcs",
    "reason_all_nan",
    "reason_constant",
    "reason_bad_dims",
}


@pytest.fixture(autouse=True)
def restore_language():
    before = get_language()
    yield
    set_language(before)


def test_english_texts_are_exactly_the_promised_ones():
    en = _raw("en")
    assert REQUIRED_KEYS <= set(en)
    for key, text in EXPECTED_EN.items():
        assert en[key] == text, key


def test_every_english_key_is_translated_with_the_same_fields():
    en, fr = _raw("en"), _raw("fr")
    assert set(fr) == set(en)
    for key, text in en.items():
        assert _fields(fr[key]) == _fields(text), key
        assert fr[key].strip(), key


def test_french_is_a_translation():
    en, fr = _raw("en"), _raw("fr")
    translated = [key for key in en if en[key] != fr[key]]
    # Only the purely technical key=value line may read the same in both languages.
    assert set(en) - set(translated) <= {"two_pass_plan"}


def test_msg_formats_in_english_by_default():
    set_language("en")
    assert msg("run_done", path="out/mosaic.fits", seconds=12.345) == "Mosaic written to out/mosaic.fits in 12.3 s"
    assert msg("sds_built", count=2, sizes=[10, 12], coverage=[0.95, 0.93]) == (
        "SDS: built 2 batch(es) with sizes: [10, 12], coverage: [0.95, 0.93]"
    )
    assert msg("reason_no_wcs") == "no WCS and no plate solver"


def test_msg_in_french():
    assert set_language("fr") == "fr"
    assert msg("run_done", path="m.fits", seconds=2.0) == "Mosaïque écrite dans m.fits en 2.0 s"
    assert msg("frames_found", count=4) == "4 fichier(s) d'entrée trouvé(s)"


def test_missing_french_key_falls_back_to_english(monkeypatch):
    fr = dict(_raw("fr"))
    del fr["dashboard"]
    monkeypatch.setattr(messages, "catalogue", lambda lang: fr if lang == "fr" else _raw("en"))
    set_language("fr")
    assert msg("dashboard", link="http://h:8787/status") == "Dashboard: http://h:8787/status"
    assert msg("fallback", mode="classic", reason="x") == "Repli sur classic : x"


def test_unknown_key_and_missing_field_raise_key_error():
    with pytest.raises(KeyError, match="no_such_message"):
        msg("no_such_message")
    with pytest.raises(KeyError, match="count"):
        msg("frames_found")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"LANG": "fr_FR.UTF-8"}, "fr"),
        ({"LANG": "fr_CA"}, "fr"),
        ({"LANG": "en_GB.UTF-8"}, "en"),
        ({"LANG": "de_DE.UTF-8"}, "en"),
        ({"LANG": "C"}, "en"),
        ({}, "en"),
        ({"LC_ALL": "en_US.UTF-8", "LC_MESSAGES": "fr_FR", "LANG": "fr_FR"}, "en"),
        ({"LC_ALL": "", "LC_MESSAGES": "fr_FR.UTF-8", "LANG": "en_US"}, "fr"),
        ({"LC_MESSAGES": "", "LANG": "fr_BE@euro"}, "fr"),
    ],
)
def test_detect_language_follows_the_locale_variables(environ, expected):
    assert detect_language(environ) == expected


def test_set_language_auto_reads_the_environment(monkeypatch):
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.setenv("LC_MESSAGES", "fr_FR.UTF-8")
    assert set_language("auto") == "fr"
    assert msg("mode_selected", mode="sds", why="Seestar") == "Mode : sds (Seestar)"
    monkeypatch.setenv("LC_ALL", "en_US.UTF-8")
    assert set_language("auto") == "en"
    assert msg("mode_selected", mode="sds", why="Seestar") == "Mode: sds (Seestar)"


def test_set_language_refuses_other_languages():
    set_language("en")
    with pytest.raises(ValueError, match="'de'"):
        set_language("de")
    assert get_language() == "en"


def test_catalogue_is_read_only():
    with pytest.raises(TypeError):
        catalogue("en")["dashboard"] = "x"  # type: ignore[index]
