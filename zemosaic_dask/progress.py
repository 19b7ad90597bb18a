"""Monotone progress and a heartbeat for long waits on many tasks (e.g. inter-tile pair fits).

Tasks on a cluster finish in any order, some twice (a retried task), some with an error.
:class:`MonotoneProgress` counts each key once, so the number shown only ever grows from 0 to
``total``; a failure is logged with its key and counted as finished, and the run goes on. When
nothing finishes for ``heartbeat_s`` seconds it logs one heartbeat line naming a few pending
keys, so a stalled task is visible instead of a frozen bar. :func:`watch_futures` drives it from
``distributed`` futures; :func:`render_bar` / :class:`TerminalBar` draw the terminal bar.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import IO, Any

from .messages import msg

__all__ = [
    "MonotoneProgress",
    "TerminalBar",
    "exception_of",
    "render_bar",
    "stage_progress",
    "results_or_first_error",
    "watch_futures",
]

log = logging.getLogger(__name__)

_SAMPLE_KEYS = 3


class MonotoneProgress:
    """Count finished tasks once each, in any order, and log a heartbeat while nothing finishes.

    Parameters
    ----------
    total : int
        Number of tasks expected.
    label : str
        Short name of the stage, used in log lines and the bar (``"Intertile"``).
    heartbeat_s : float, optional
        Quiet time after which :meth:`maybe_heartbeat` logs a line, and the least time between
        two heartbeat lines.
    clock : callable, optional
        Seconds as a float (``time.monotonic``; a fake clock in tests).
    on_update : callable, optional
        Called as ``on_update(finished, total)`` each time the finished count grows.
    message : str, optional
        Catalogue key of the heartbeat line (``heartbeat`` for inter-tile pairs, ``stage_heartbeat``
        for other stages).
    keys : iterable, optional
        The expected task keys (also settable with :meth:`expect`); :meth:`pending_keys` lists
        those not finished yet.

    Raises
    ------
    ValueError
        When ``total`` is negative or ``heartbeat_s`` is not positive.
    """

    def __init__(
        self,
        total: int,
        *,
        label: str,
        heartbeat_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_update: Callable[[int, int], None] | None = None,
        keys: Iterable[Hashable] | None = None,
        message: str = "heartbeat",
    ) -> None:
        if total < 0:
            raise ValueError(f"progress total must be >= 0, got {total}")
        if not heartbeat_s > 0:
            raise ValueError(
                f"heartbeat_s must be > 0 seconds, got {heartbeat_s} (set zemosaic.calibration.heartbeat-s)"
            )
        self.total = int(total)
        self.label = label
        self.heartbeat_s = float(heartbeat_s)
        self._clock = clock
        self._on_update = on_update
        self._message = message
        self._expected: dict[Hashable, None] = {}
        self._done: set[Hashable] = set()
        self._failures: dict[Hashable, str] = {}
        self._started = clock()
        self._last_activity = self._started
        self._last_heartbeat = -math.inf
        self.heartbeats = 0
        if keys is not None:
            self.expect(keys)

    def expect(self, keys: Iterable[Hashable]) -> None:
        """Register the keys of the tasks to wait for (order kept for :meth:`pending_keys`)."""
        for key in keys:
            self._expected.setdefault(key, None)

    @property
    def n_done(self) -> int:
        """Tasks finished successfully."""
        return len(self._done)

    @property
    def n_failed(self) -> int:
        """Tasks finished with a failure."""
        return len(self._failures)

    @property
    def finished(self) -> int:
        """Tasks finished either way: the monotone count shown, never above ``total``."""
        return len(self._done) + len(self._failures)

    @property
    def failures(self) -> dict[Hashable, str]:
        """Failed keys and their reasons."""
        return dict(self._failures)

    def elapsed(self) -> float:
        """Seconds since the progress started."""
        return self._clock() - self._started

    def eta_s(self) -> float | None:
        """Seconds left at the average rate so far, or None before the first task finishes."""
        finished = self.finished
        if finished == 0:
            return None
        return self.elapsed() / finished * (self.total - finished)

    def done(self, key: Hashable) -> bool:
        """Mark ``key`` finished successfully; return False when it was already counted."""
        return self._finish(key, None)

    def failed(self, key: Hashable, reason: str) -> bool:
        """Mark ``key`` finished with a failure (logged with its key); return False if already counted."""
        return self._finish(key, str(reason))

    def pending_keys(self) -> list[Hashable]:
        """Expected keys not finished yet, in the order they were registered."""
        return [key for key in self._expected if key not in self._done and key not in self._failures]

    def maybe_heartbeat(self) -> bool:
        """Log one heartbeat line if nothing finished for ``heartbeat_s`` and none was logged since.

        Returns
        -------
        bool
            True when a line was logged.
        """
        now = self._clock()
        if self.finished >= self.total:
            return False
        if now - self._last_activity < self.heartbeat_s or now - self._last_heartbeat < self.heartbeat_s:
            return False
        pending = self.pending_keys()
        n_pending = len(pending) if self._expected else self.total - self.finished
        sample = ", ".join(str(key) for key in pending[:_SAMPLE_KEYS]) or "-"
        log.info(
            msg(self._message, label=self.label, done=self.finished, total=self.total, pending=n_pending, sample=sample)
        )
        self._last_heartbeat = now
        self.heartbeats += 1
        return True

    def _finish(self, key: Hashable, reason: str | None) -> bool:
        if key in self._done or key in self._failures:
            return False
        if self._expected and key not in self._expected:
            log.warning("[%s] ignoring an unexpected task %s", self.label, key)
            return False
        if self.finished >= self.total:
            log.warning("[%s] task %s finished beyond the expected total %d; not counted", self.label, key, self.total)
            return False
        if reason is None:
            self._done.add(key)
        else:
            self._failures[key] = reason
            log.warning("[%s] task %s failed: %s (the other tasks go on)", self.label, key, reason)
        self._last_activity = self._clock()
        if self._on_update is not None:
            self._on_update(self.finished, self.total)
        return True


def render_bar(done: int, total: int, eta_s: float | None, *, width: int = 30, label: str = "") -> str:
    """Return a one-line ASCII progress bar.

    Examples
    --------
    >>> render_bar(3, 12, 95.0, width=12)
    '[###.........]  3/12  25% ETA 1m35s'
    >>> render_bar(0, 0, None, width=4, label="Intertile")
    'Intertile [####] 0/0 100% ETA --'
    """
    fraction = 1.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    filled = int(fraction * width)
    digits = len(str(max(total, 0)))
    count = f"{done:>{digits}}/{total}"
    bar = f"[{'#' * filled}{'.' * (width - filled)}] {count} {fraction * 100:3.0f}% ETA {_duration(eta_s)}"
    return f"{label} {bar}" if label else bar


class TerminalBar:
    """An ``on_update`` callback that draws :func:`render_bar` on a text stream, at a bounded rate.

    On a terminal the bar is redrawn in place (``\\r``) at most every ``min_interval_s``
    (0.1 s); on a file or pipe (a batch job's log, a benchmark's capture) it writes a line
    at most every 10 s, so a stage of 16,000 tasks leaves a few lines, not 16,000 redraws.
    The first update and the last (``done >= total``) are always drawn.

    Parameters
    ----------
    stream : text stream
        Where to draw (the CLI passes ``sys.stderr``).
    label : str, optional
        Shown before the bar.
    clock : callable, optional
        For the ETA and the rate (``time.monotonic``).
    in_place : bool, optional
        Redraw in place; by default when ``stream`` is a terminal.
    min_interval_s : float, optional
        Least time between two drawings; by default 0.1 s in place, 10 s otherwise.
    """

    def __init__(
        self,
        stream: IO[str],
        label: str = "",
        clock: Callable[[], float] = time.monotonic,
        *,
        in_place: bool | None = None,
        min_interval_s: float | None = None,
    ) -> None:
        self._stream = stream
        self._label = label
        self._clock = clock
        self._started = clock()
        if in_place is None:
            isatty = getattr(stream, "isatty", None)
            in_place = bool(isatty is not None and isatty())
        self._in_place = in_place
        self._interval = (0.1 if in_place else 10.0) if min_interval_s is None else float(min_interval_s)
        self._last: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        final = done >= total
        if not final and self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        elapsed = now - self._started
        eta = elapsed / done * (total - done) if done > 0 else None
        line = render_bar(done, total, eta, label=self._label)
        if self._in_place:
            self._stream.write("\r" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()


def stage_progress(count: int, label: str, show_progress: bool) -> MonotoneProgress:
    """The progress of a stage of ``count`` tasks: a terminal bar when asked, a heartbeat line every minute."""
    bar = TerminalBar(sys.stderr, label) if show_progress else None
    return MonotoneProgress(count, label=label, heartbeat_s=60.0, on_update=bar, message="stage_heartbeat")


def results_or_first_error(outcomes: Mapping[Hashable, Any], keys: Iterable[Hashable]) -> list[Any]:
    """The results of ``keys`` in order, or the first failed task's exception raised (after all finished)."""
    ordered = [outcomes[key] for key in keys]
    for outcome in ordered:
        if isinstance(outcome, BaseException):
            raise outcome
    return ordered


def watch_futures(
    futures_by_key: Mapping[Hashable, Any], progress: MonotoneProgress, *, poll_s: float = 0.5
) -> dict[Hashable, Any]:
    """Wait for ``distributed`` futures, feeding ``progress`` and its heartbeat as they finish.

    Parameters
    ----------
    futures_by_key : mapping
        Task key (e.g. ``"intertile-pair-3-7"``) to its future.
    progress : MonotoneProgress
        Receives ``done``/``failed`` per key; its keys are registered here.
    poll_s : float, optional
        Longest sleep while nothing is ready (shortened to a third of the heartbeat interval).

    Returns
    -------
    dict
        Key to the task's result, or to the exception it raised (a failed or cancelled task does
        not stop the others).
    """
    from distributed import as_completed

    progress.expect(futures_by_key)
    keys_of: dict[Any, list[Hashable]] = {}
    for key, future in futures_by_key.items():
        keys_of.setdefault(future.key, []).append(key)
    results: dict[Hashable, Any] = {}
    if not futures_by_key:
        return results
    pause = max(0.005, min(poll_s, progress.heartbeat_s / 3.0))
    futures = list(futures_by_key.values())
    # Tracked on the futures' own client's loop: without ``loop``, ``as_completed`` takes the
    # default client's, and where that is another client (a notebook's, a test's) the futures'
    # events belong to a different loop and their completion may never be seen.
    pending = as_completed(futures, loop=futures[0].client.loop, with_results=True, raise_errors=False)
    while not pending.is_empty():
        batch = pending.next_batch(block=False)
        if not batch:
            progress.maybe_heartbeat()
            _wait_for_completion(pending, pause)
            continue
        for future, outcome in batch:
            for key in keys_of[future.key]:
                # A result in hand counts as done even if its worker died since (status "lost").
                if future.status not in ("error", "cancelled") and not isinstance(outcome, BaseException):
                    results[key] = outcome
                    progress.done(key)
                else:
                    error = exception_of(outcome)
                    results[key] = error
                    progress.failed(key, f"{type(error).__name__}: {error}")
    return results


def _wait_for_completion(pending: Any, timeout: float) -> None:
    """Sleep until a future of ``pending`` (an ``as_completed``) finishes, or ``timeout`` seconds.

    ``as_completed`` notifies its condition after queueing a finished future; checking the
    queue while holding the condition means no notification is missed, so the caller wakes
    as soon as a task ends rather than at the next poll.
    """
    condition = getattr(pending, "thread_condition", None)
    if condition is None:
        time.sleep(min(timeout, 0.02))
        return
    with condition:
        if not pending.has_ready():
            condition.wait(timeout=timeout)


def exception_of(outcome: Any) -> BaseException:
    """The exception of a failed or cancelled future as ``as_completed(with_results=True)`` gives it."""
    if isinstance(outcome, BaseException):
        return outcome
    if isinstance(outcome, tuple) and len(outcome) == 3 and isinstance(outcome[1], BaseException):
        return outcome[1]
    return RuntimeError(f"task did not finish: {outcome!r}")


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
