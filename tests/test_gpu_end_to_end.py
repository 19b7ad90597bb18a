"""A run on a real GPU: the stacking units and the two-pass units run on cupy, with no fallback.

Needs a CUDA device and cupy (``-m gpu``, run on the device machine). The same CLI run on the CPU
gives the same mosaic within float32 rounding: one code path through array-module dispatch.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from e2e import Mosaic

pytestmark = pytest.mark.gpu


def _cli(frames, out, *flags):
    command = [sys.executable, "-m", "zemosaic_dask.cli", "run", *frames, "-o", str(out), "--no-progress", *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("mode", ["mosaic-first", "classic", "sds"])
def test_units_run_on_the_gpu_and_match_the_cpu(seestar_set, tmp_path, cpu_and_gpu_workers, mode):
    import cupy

    assert cupy.cuda.runtime.getDeviceCount() >= 1
    frames = seestar_set[1][:12]
    common = ["--mode", mode, "--chunk", "128"]
    extra = ["--config", str(_two_pass_config(tmp_path))] if mode == "classic" else []
    address = cpu_and_gpu_workers.scheduler_address
    gpu = _cli(frames, tmp_path / "gpu", *common, *extra, "--use-gpu", "true", "--scheduler", address)
    cpu = _cli(frames, tmp_path / "cpu", *common, *extra, "--use-gpu", "false", "--n-workers", "1")
    assert gpu["assembly_plan"]["use_gpu"] is True and gpu["gpu_fallbacks"] == []
    assert cpu["assembly_plan"]["use_gpu"] is False
    if mode == "sds":  # fused region tasks: each batch stacked on the GPU
        assert gpu["sds_execution"]["fused"] and gpu["region_backends"] == ["cupy"]
    elif mode == "mosaic-first":
        assert gpu["region_backends"] == ["cupy"]
    else:
        assert gpu["two_pass"]["use_gpu"] and gpu["two_pass"]["gpu_all"] and not gpu["two_pass"]["fallbacks"]
    on_gpu, on_cpu = Mosaic.load(tmp_path / "gpu").image, Mosaic.load(tmp_path / "cpu").image
    assert np.array_equal(np.isfinite(on_gpu), np.isfinite(on_cpu))
    finite = np.isfinite(on_cpu)
    scale = np.nanpercentile(np.abs(on_cpu), 99)
    assert np.max(np.abs(on_gpu[finite] - on_cpu[finite])) < 1e-4 * scale


def _two_pass_config(folder):
    path = folder / "two-pass.yaml"
    path.write_text("zemosaic:\n  two-pass:\n    enabled: true\n")
    return path
