"""The workers' peak resident memory, stage by stage.

A worker's ``VmHWM`` (``/proc/self/status``) is its peak since it started; writing ``5`` to
``/proc/self/clear_refs`` (Linux) sets it back to the memory resident now. Read and reset at
each stage's start and end, it gives the peak of each stage alone; the whole run's peak per
worker is the largest of them. Where the reset is not possible (another system, or a worker
living in the client's own process, whose peak the report also gives) the figures are the
peaks since start, an upper bound, and the report says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WorkerPeaks", "peak_rss_mib", "read_and_reset_peak_mib"]


def _vm_hwm_mib() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # in kB
    except OSError:
        return None
    return None


def _ru_maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (the client's, or a worker's through ``client.run``).

    Read from ``VmHWM`` of ``/proc/self/status``, which belongs to this program's memory;
    ``getrusage``'s ``ru_maxrss`` (the fallback off Linux) survives ``fork`` and ``exec``,
    so a run started by a large parent would report the parent's peak.
    """
    peak = _vm_hwm_mib()
    return round(_ru_maxrss_mib() if peak is None else peak, 1)


def read_and_reset_peak_mib(client_pid: int) -> tuple[float, bool]:
    """This process's peak resident memory in MiB since the last reset, then reset it (run by ``client.run``).

    Parameters
    ----------
    client_pid : int
        The submitting process: a worker in that process is read but never reset, so the
        client's own peak stays whole.

    Returns
    -------
    peak : float
        ``VmHWM`` in MiB (``ru_maxrss`` where there is no ``/proc``).
    reset : bool
        Whether the peak was set back to the resident memory.
    """
    peak = _vm_hwm_mib()
    if peak is None:
        return _ru_maxrss_mib(), False
    if os.getpid() == client_pid:
        return peak, False
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return peak, False
    return peak, True


@dataclass
class WorkerPeaks:
    """Peaks of the workers of ``client`` between successive :meth:`take` calls, and over the run.

    Attributes
    ----------
    client : distributed.Client
        The run's client.
    overall : dict
        Worker address -> largest peak seen so far, in MiB.
    reset : bool
        False once a worker could not reset its peak (the stage figures are then peaks since start).
    """

    client: Any
    overall: dict[str, float] = field(default_factory=dict)
    reset: bool = True

    def take(self) -> dict[str, float]:
        """Each worker's peak since the previous call, in MiB (folded into :attr:`overall`)."""
        replies = self.client.run(read_and_reset_peak_mib, os.getpid())
        peaks = {}
        for address, (peak, reset) in replies.items():
            peaks[address] = round(float(peak), 1)
            self.overall[address] = max(self.overall.get(address, 0.0), peaks[address])
            self.reset = self.reset and bool(reset)
        return peaks
