"""The plan is the contract: plan.json round-trips exactly and execution options come from it alone."""

import copy
import json

import pytest

from zemosaic_dask.api import make_plan
from zemosaic_dask.config import load_config
from zemosaic_dask.config.policies import stage_options, stage_options_of_plan
from zemosaic_dask.plans import AssemblyPlan
from zemosaic_dask.plans.mosaic import MosaicPlan


@pytest.fixture(scope="module")
def classic_plan(seestar_set):
    config = load_config(overrides={"mode": "classic", "stack.kappa-high": 2.5, "stack.rejection": "kappa_sigma"})
    return make_plan(seestar_set[1][:10], config), config


def test_plan_json_round_trips_exactly(classic_plan):
    plan, _ = classic_plan
    text = json.dumps(plan.to_dict(), sort_keys=True)
    again = MosaicPlan.from_dict(json.loads(text))
    assert again == plan
    assert json.dumps(again.to_dict(), sort_keys=True) == text
    assert again.fingerprint() == plan.fingerprint()
    assert again.layers == plan.layers and len(plan.layers) > 1
    assert isinstance(again.assembly, AssemblyPlan) and again.assembly == plan.assembly


def test_execution_options_come_from_the_plan_alone(classic_plan):
    plan, config = classic_plan
    options = stage_options_of_plan(plan)
    assert options == stage_options(config, plan.n_channels)
    assert options.stack.kappa_high == 2.5 and options.stack.rejection == "kappa_sigma"
    # Editing a stacking setting inside plan.json changes what runs, and the resume fingerprint.
    data = copy.deepcopy(plan.to_dict())
    data["config"]["stack"]["kappa-high"] = 4.0
    edited = MosaicPlan.from_dict(data)
    assert stage_options_of_plan(edited).stack.kappa_high == 4.0
    assert edited.fingerprint() != plan.fingerprint()
    # Where and how it computes does not reach the pixels, nor the fingerprint.
    data = copy.deepcopy(plan.to_dict())
    data["config"]["cluster"]["n-workers"] = 7
    assert MosaicPlan.from_dict(data).fingerprint() == plan.fingerprint()


def test_plan_ingests_a_large_session_on_the_embedded_cluster_with_the_same_frames(seestar_set, monkeypatch, caplog):
    """From ``PLAN_CLUSTER_MIN_FILES`` files ``plan`` reads them on local workers: the frames read in-process."""
    import logging

    from zemosaic_dask import api

    paths = seestar_set[1][:12]
    config = load_config(overrides={"cluster.n-workers": 2, "cluster.threads-per-worker": 1})
    with caplog.at_level(logging.INFO, logger="zemosaic_dask"):
        alone = make_plan(paths, config)
    assert "started local cluster" not in caplog.text  # 12 files: read in this process
    monkeypatch.setattr(api, "PLAN_CLUSTER_MIN_FILES", len(paths))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zemosaic_dask"):
        spread = make_plan(paths, config)
    assert "started local cluster" in caplog.text
    assert spread.frames == alone.frames and spread.rejected == alone.rejected and spread.mode == alone.mode
