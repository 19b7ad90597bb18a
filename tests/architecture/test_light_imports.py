"""Plans and tasks stay free of dask, distributed and cupy: checked in a fresh interpreter."""

import json
import subprocess
import sys

HEAVY = ("dask", "distributed", "cupy")

PROBE = f"""
import json, sys
import zemosaic_dask.plans
import zemosaic_dask.tasks
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps(loaded))
"""


def test_plans_and_tasks_do_not_import_dask_distributed_or_cupy():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"planning/tasks layer imported {loaded}"


def test_the_probe_detects_a_heavy_import():
    # The same probe reports a module it should flag, so an empty answer above means something.
    probe = PROBE.replace("import zemosaic_dask.tasks", "import zemosaic_dask.tasks\nimport dask")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "dask" in json.loads(result.stdout.strip().splitlines()[-1])
