"""Monotone progress, heartbeat and the futures watcher (the last one on an in-process cluster)."""

from __future__ import annotations

import io
import logging
import os
import random
import time

import distributed
import pytest

from zemosaic_dask.progress import MonotoneProgress, TerminalBar, render_bar, watch_futures


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def heartbeat_records(caplog):
    return [r for r in caplog.records if r.name == "zemosaic_dask.progress" and "heartbeat" in r.getMessage()]


def test_count_is_monotone_whatever_the_order_and_duplicates():
    rng = random.Random(4)
    keys = [f"intertile-pair-{k}" for k in range(200)]
    arrivals = keys + rng.sample(keys, 60)  # retried tasks report twice
    rng.shuffle(arrivals)
    seen = []
    progress = MonotoneProgress(len(keys), label="Intertile", keys=keys, on_update=lambda d, t: seen.append((d, t)))
    accepted = [progress.done(key) for key in arrivals]
    assert seen == [(n, 200) for n in range(1, 201)]
    assert sum(accepted) == 200 and progress.finished == progress.n_done == 200
    assert progress.pending_keys() == []


def test_failures_are_logged_counted_and_not_pending(caplog):
    keys = ["a", "b", "c", "d"]
    progress = MonotoneProgress(4, label="Intertile", keys=keys)
    with caplog.at_level(logging.WARNING, logger="zemosaic_dask"):
        progress.done("b")
        assert progress.failed("c", "ValueError: overlap is empty")
        assert not progress.failed("c", "again")
        assert not progress.done("c")
    assert (
        progress.finished == 2 and progress.n_failed == 1 and progress.failures == {"c": "ValueError: overlap is empty"}
    )
    assert progress.pending_keys() == ["a", "d"]
    failure_lines = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failure_lines) == 1 and "c" in failure_lines[0] and "overlap is empty" in failure_lines[0]


def test_unknown_and_surplus_keys_are_not_counted():
    progress = MonotoneProgress(2, label="Intertile", keys=["x", "y"])
    assert not progress.done("z")
    anonymous = MonotoneProgress(1, label="Intertile")
    assert anonymous.done("first") and not anonymous.done("second")
    assert anonymous.finished == 1


def test_heartbeat_only_when_quiet_and_at_most_once_per_interval(caplog):
    clock = FakeClock()
    keys = [f"k{n}" for n in range(10)]
    progress = MonotoneProgress(10, label="Intertile", heartbeat_s=10.0, clock=clock, keys=keys)
    for key in keys[:3]:
        progress.done(key)
    logged = []
    with caplog.at_level(logging.INFO, logger="zemosaic_dask"):
        for clock.now in (5.0, 9.9, 10.0, 12.0, 19.9, 20.0):
            logged.append(progress.maybe_heartbeat())
        assert logged == [False, False, True, False, False, True]
        clock.now = 21.0
        progress.done("k3")
        assert not progress.maybe_heartbeat()  # something just finished
        clock.now = 30.9
        assert not progress.maybe_heartbeat()
        clock.now = 31.0
        assert progress.maybe_heartbeat()
    lines = [r.getMessage() for r in heartbeat_records(caplog)]
    assert lines[0] == "[Intertile] heartbeat: 3/10 pairs done, 7 pending (e.g. k3, k4, k5)"
    assert lines[-1] == "[Intertile] heartbeat: 4/10 pairs done, 6 pending (e.g. k4, k5, k6)"
    assert len(lines) == progress.heartbeats == 3
    for key in keys[4:]:
        progress.done(key)
    clock.now = 100.0
    assert not progress.maybe_heartbeat()  # all done: nothing to report


def test_eta_and_validation():
    clock = FakeClock()
    progress = MonotoneProgress(4, label="Intertile", clock=clock)
    assert progress.eta_s() is None
    clock.now = 10.0
    progress.done(1)
    assert progress.eta_s() == pytest.approx(30.0)
    with pytest.raises(ValueError, match="total"):
        MonotoneProgress(-1, label="x")
    with pytest.raises(ValueError, match="heartbeat_s"):
        MonotoneProgress(1, label="x", heartbeat_s=0)


def test_render_bar():
    line = render_bar(25, 100, 3725.0, width=20)
    assert line.isascii()
    assert line.startswith("[#####...............]")
    assert " 25/100 " in line and "25%" in line and line.endswith("ETA 1h02m")
    assert render_bar(0, 10, None, width=10) == "[..........]  0/10   0% ETA --"
    assert render_bar(12, 10, 0.0, width=4, label="Intertile") == "Intertile [####] 12/10 100% ETA 0s"
    assert render_bar(3, 7, 59.4, width=7).endswith("ETA 59s")


def test_terminal_bar_redraws_in_place():
    clock = FakeClock()
    stream = io.StringIO()
    bar = TerminalBar(stream, label="Intertile", clock=clock, in_place=True)
    clock.now = 2.0
    bar(1, 2)
    clock.now = 4.0
    bar(2, 2)
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("ETA 0s\n")
    assert "1/2  50% ETA 2s" in text


def test_terminal_bar_draws_at_a_bounded_rate_and_always_the_last_update():
    clock = FakeClock()
    stream = io.StringIO()
    bar = TerminalBar(stream, label="sky", clock=clock, in_place=True)
    for done in range(1, 16_001):  # 16,000 tasks finishing over 8 s
        clock.now = done * 0.0005
        bar(done, 16_000)
    drawn = stream.getvalue().split("\r")[1:]
    assert 70 <= len(drawn) <= 90  # one drawing per 0.1 s, not one per task
    assert drawn[-1].startswith("sky [") and " 16000/16000 100% " in drawn[-1] and drawn[-1].endswith("\n")


def test_terminal_bar_writes_lines_to_a_file_every_ten_seconds():
    clock = FakeClock()
    stream = io.StringIO()  # not a terminal
    bar = TerminalBar(stream, label="sky", clock=clock)
    for done in range(1, 1_001):  # 1,000 tasks over 100 s
        clock.now = done * 0.1
        bar(done, 1_000)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and 10 <= len(lines) <= 12
    assert " 1/1000 " in lines[0] and " 1000/1000 100% " in lines[-1]


def _quick(n: int) -> int:
    return n * n


def _stall(seconds: float) -> str:
    time.sleep(seconds)
    return "late"


def _fail(n: int) -> int:
    raise ValueError(f"pair {n} has no overlap")


def test_watch_futures_heartbeat_failure_and_results(caplog):
    with (
        distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        futures = {
            f"intertile-pair-{n}-{n + 1}": client.submit(_quick, n, key=f"intertile-pair-{n}-{n + 1}") for n in range(6)
        }
        futures["intertile-pair-stalled"] = client.submit(_stall, 1.5, key="intertile-pair-stalled")
        futures["intertile-pair-broken"] = client.submit(_fail, 7, key="intertile-pair-broken")
        counts = []
        progress = MonotoneProgress(
            len(futures), label="Intertile", heartbeat_s=0.3, on_update=lambda d, t: counts.append(d)
        )
        with caplog.at_level(logging.INFO, logger="zemosaic_dask"):
            results = watch_futures(futures, progress, poll_s=0.05)
    assert {key: results[key] for key in futures if key.startswith("intertile-pair-") and key[-1].isdigit()} == {
        f"intertile-pair-{n}-{n + 1}": n * n for n in range(6)
    }
    assert results["intertile-pair-stalled"] == "late"
    assert isinstance(results["intertile-pair-broken"], ValueError)
    assert counts == list(range(1, 9))
    assert progress.n_done == 7 and progress.n_failed == 1
    failure = [
        r.getMessage() for r in caplog.records if r.name == "zemosaic_dask.progress" and "failed" in r.getMessage()
    ]
    assert len(failure) == 1 and "intertile-pair-broken" in failure[0] and "no overlap" in failure[0]
    beats = heartbeat_records(caplog)
    assert len(beats) >= 2, [r.getMessage() for r in caplog.records]
    assert all("intertile-pair-stalled" in r.getMessage() and "7/8 pairs done" in r.getMessage() for r in beats)
    gaps = [later.created - earlier.created for earlier, later in zip(beats, beats[1:], strict=False)]
    assert min(gaps) >= 0.3 - 0.01, gaps  # never more than one per interval


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _stage_into(results: list, handle, tasks: list, window: int | None) -> None:
    from zemosaic_dask.execute.compute import compute

    results.extend(compute(handle, tasks, label="nap", show_progress=False, max_in_flight=window))


@pytest.mark.parametrize("window", [None, 1])
def test_futures_of_a_client_other_than_the_default_are_seen_to_finish(window):
    """A session's own client (a notebook's, a test's) is the default one; the run's futures are another's.

    ``as_completed`` tracks futures on the default client's event loop unless told otherwise;
    the run's client's futures are then awaited, and their results gathered through its
    connections, from a loop they do not belong to, and the stage may wait forever (it did,
    now and then, once the run's client had talked to its scheduler). Both ways of waiting
    (all at once, and in a window) must see every round finish.
    """
    import threading

    import dask

    from zemosaic_dask.cluster_options import ClusterHandle

    options = {"processes": False, "n_workers": 1, "threads_per_worker": 1, "dashboard_address": ":0"}
    with (
        distributed.LocalCluster(**options) as session_cluster,
        distributed.Client(session_cluster),  # entered: the default client of this context
        distributed.LocalCluster(**{**options, "processes": True}) as run_cluster,
    ):
        run_client = distributed.Client(run_cluster, set_as_default=False)
        handle = ClusterHandle(client=run_client, cluster=run_cluster, dashboard_link=None, kind="local")
        try:
            for round_ in range(6):  # the lost wake-up is a race: several rounds make it near certain
                run_client.run(os.getpid)  # a comm of the run's client's pool, opened on its loop
                tasks = [dask.delayed(_nap)(0.01 * k, dask_key_name=f"nap-{round_}-{k}") for k in range(12)]
                results: list = []
                waiter = threading.Thread(target=_stage_into, args=(results, handle, tasks, window), daemon=True)
                waiter.start()
                waiter.join(timeout=20)
                assert not waiter.is_alive(), f"round {round_}: the stage never saw its futures finish"
                assert results == [0.01 * k for k in range(12)]
        finally:
            run_client.close()
