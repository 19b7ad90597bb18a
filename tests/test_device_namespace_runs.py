"""Whole runs whose stacking units take the GPU road, on the fake cupy of ``tests/_fakecupy.py``.

The fake module computes with numpy but refuses any numpy call on its arrays, as cupy refuses
implicit host conversion: a unit that mixes host and device arrays fails here as it would on a
GPU. Every step of the units runs (the background planes subtracted from each frame window, the
resampling, the rejection, the weighted mean), and the mosaic equals the CPU run's.
"""

import numpy as np
import pytest
from e2e import THREADS, run

from zemosaic_dask.units import mosaic_region, sds_region

CASES = [
    ("mosaic-first", "noise_clip"),
    ("mosaic-first", "none"),  # the streamed weighted mean
    ("classic", "noise_clip"),
    ("sds", "noise_clip"),  # fused regions: each batch stacked on the device
    ("sds", "none"),
]


@pytest.mark.parametrize(("mode", "rejection"), CASES)
def test_units_on_a_device_namespace_give_the_cpu_mosaic(seestar_set, tmp_path, fakecupy, monkeypatch, mode, rejection):
    settings = {"mode": mode, "grid.chunk": 128, "stack.rejection": rejection}
    cpu = run(seestar_set[1], tmp_path / "cpu", THREADS, **settings)
    units = []

    def on_the_device(real):
        def run_unit(unit, work, *, use_gpu):
            units.append(unit)
            return real(unit, work, use_gpu=True, namespace=lambda: fakecupy)

        return run_unit

    for module in (mosaic_region, sds_region):
        monkeypatch.setattr(module, "run_with_gpu_fallback", on_the_device(module.run_with_gpu_fallback))
    device = run(seestar_set[1], tmp_path / "device", THREADS, **settings)
    assert device.report["mode"] == cpu.report["mode"] == mode and device.report["gpu_fallbacks"] == []
    assert len(units) >= device.report["regions"]["total"] > 1
    # The same background planes, subtracted on both roads.
    background = [{k: v for k, v in r.report["background"].items() if k != "diagnostics"} for r in (cpu, device)]
    assert background[0] == background[1] and background[0]["model"].startswith("plane")
    assert np.array_equal(np.isfinite(device.image), np.isfinite(cpu.image))
    finite = np.isfinite(cpu.image)
    assert finite.mean() > 0.5
    np.testing.assert_allclose(device.image[finite], cpu.image[finite], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(device.coverage, cpu.coverage)
