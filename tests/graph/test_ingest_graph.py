"""The ingest graph inspects every file once, in runs of files per task, and keeps their order."""

from __future__ import annotations

import dask
import pytest

from zemosaic_dask.graph.ingest import MAX_FILES_PER_TASK, build_ingest_graph, files_per_task
from zemosaic_dask.io.frames import FrameRejection, IngestOptions


@pytest.mark.parametrize("n", [0, 1, 255, 511, 512, 1000, 4000, 16_000, 100_000])
def test_files_per_task_keeps_at_least_256_tasks_and_at_most_32_files_each(n):
    step = files_per_task(n)
    tasks = -(-n // step)
    assert 1 <= step <= MAX_FILES_PER_TASK
    assert tasks >= min(n, 256)
    if n >= 256 * MAX_FILES_PER_TASK:
        assert step == MAX_FILES_PER_TASK  # at survey sizes every task is as fat as allowed


def test_every_file_is_inspected_once_in_order(tmp_path):
    paths = [str(tmp_path / f"missing_{k:04d}.fits") for k in range(700)]  # 2 files per task
    (tmp_path / "missing_0003.fits").write_bytes(b"not a FITS file")
    graph = build_ingest_graph(paths, IngestOptions())
    assert len(graph) == 350
    results = [r for batch in dask.compute(*graph, scheduler="sync") for r in batch]
    assert [r.path for r in results] == paths
    assert all(isinstance(r, FrameRejection) for r in results)
    assert results[3].reason != results[4].reason  # each file judged on its own
