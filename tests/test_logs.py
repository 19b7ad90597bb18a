"""Teardown noise: asyncio's reports of unread connection futures stay off the terminal."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from click.testing import CliRunner

from zemosaic_dask.cli import main
from zemosaic_dask.logs import UnretrievedTeardownFilter


def _collect_unread_future(error: BaseException) -> None:
    """Let asyncio collect a future whose exception nobody read (as a closed comm leaves it)."""
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        future.set_exception(error)
        del future
        gc.collect()
    finally:
        loop.close()


@pytest.fixture
def filtered_asyncio():
    log = logging.getLogger("asyncio")
    added = UnretrievedTeardownFilter()
    log.addFilter(added)
    yield
    log.removeFilter(added)


@pytest.mark.parametrize("error", [TimeoutError("comm timed out"), ConnectionResetError("closed")])
def test_an_unread_connection_failure_is_dropped(filtered_asyncio, caplog, error):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _collect_unread_future(error)
    assert not [r for r in caplog.records if r.name == "asyncio"]


def test_any_other_unread_failure_is_still_reported(filtered_asyncio, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _collect_unread_future(ValueError("a real bug"))
    reports = [r for r in caplog.records if r.name == "asyncio"]
    assert len(reports) == 1 and "never retrieved" in reports[0].getMessage()


def test_without_the_filter_asyncio_reports_the_timeout(caplog):
    """The case the filter exists for is real: asyncio does report it."""
    log = logging.getLogger("asyncio")
    saved = list(log.filters)
    for f in saved:
        log.removeFilter(f)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            _collect_unread_future(TimeoutError("comm timed out"))
    finally:
        for f in saved:
            log.addFilter(f)
    assert any("never retrieved" in r.getMessage() for r in caplog.records if r.name == "asyncio")


def test_the_command_line_installs_the_filter_once():
    log = logging.getLogger("asyncio")
    before = [f for f in log.filters if isinstance(f, UnretrievedTeardownFilter)]
    for f in before:
        log.removeFilter(f)
    try:
        for _ in range(2):
            CliRunner().invoke(main, ["simulate", "--help"])
        assert sum(isinstance(f, UnretrievedTeardownFilter) for f in log.filters) == 1
    finally:
        for f in [f for f in log.filters if isinstance(f, UnretrievedTeardownFilter)]:
            log.removeFilter(f)
        for f in before:
            log.addFilter(f)
