"""`train.threads: 0` (the default): torch's intra-op thread count, and so the compiled kernels'
(`kernels.threads()` follows torch), fitted to the cores free when a fit and each of its epochs
start.

Several jobs that each run every core on shared cores oversubscribe them: a parallel region ends at
a barrier that waits for its slowest thread, and a thread the scheduler has set aside holds every
other thread of the region there (docs/DESIGN.md, "A short OpenMP spin and a thread count that
follows the load by default"). Auto gives a fit the cores this process may use minus those other work is
running on right now, at least 1 and at most torch's count when the fit started (`OMP_NUM_THREADS`,
a `torch.set_num_threads` before the fit, else torch's default of every core), and puts that count
back when the fit ends. Results then depend on the thread count only as they do between machines
with different core counts: through the order of float sums. `train.threads: n` or
`train.deterministic` pins the count instead. Without Linux's /proc (macOS, Windows) auto keeps the
count the fit started with.

Example:
    >>> with AutoThreads(on=True) as auto:   # doctest: +SKIP
    ...     n = auto.apply()                  # at each epoch's start
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def _loadavg() -> str | None:
    """/proc/loadavg's text, None where there is none."""
    try:
        return Path("/proc/loadavg").read_text()
    except OSError:
        return None


def _own_running() -> int:
    """This process's runnable threads now (`State:\\tR` under /proc/self/task), at least 1 (the
    caller). Counted rather than taken as 1: OpenMP threads still spinning after the last parallel
    region are runnable too, and counting them as other work would halve a solo job's threads at
    random epochs. A fit has a few dozen threads, so this is a few dozen small reads per epoch."""
    n = 0
    for status in Path("/proc/self/task").glob("*/status"):
        try:
            n += "\nState:\tR" in status.read_text()
        except OSError:  # the thread ended meanwhile
            continue
    return max(n, 1)


def _cores() -> tuple[int, int]:
    """(the cores this process may run on, the machine's cores)."""
    machine = os.cpu_count() or 1
    if sys.platform == "linux":
        return len(os.sched_getaffinity(0)), machine
    return machine, machine


def others_running() -> int | None:
    """The cores other work is running on now, among those this process may use; None without
    /proc/loadavg. Its 4th field `running/total` counts the runnable threads of the whole machine
    at this instant (this process's own are taken off). Where this process may use only some of
    the machine's cores (a CPU affinity, a container's cpuset), the count is scaled to that share,
    as if the other work were spread evenly: other work on the rest of the machine then does not
    take this process's threads."""
    text = _loadavg()
    if text is None:
        return None
    try:
        running = int(text.split()[3].split("/")[0])
    except (IndexError, ValueError):
        return None
    usable, machine = _cores()
    return round(max(0, running - _own_running()) * usable / machine)


def auto_threads(cap: int) -> int:
    """The thread count for now: the cores this process may use less `others_running()`, within
    1..cap; `cap` where /proc gives no load."""
    others = others_running()
    if others is None:
        return cap
    return max(1, min(cap, _cores()[0] - others))


class AutoThreads:
    """`train.threads: 0` over one fit (`on`; otherwise it changes nothing): entering takes torch's
    count as the cap and applies `auto_threads`, `apply()` again at each epoch's start, and leaving
    puts the cap back (also when the fit raises)."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.cap = torch.get_num_threads()

    def __enter__(self) -> AutoThreads:
        self.cap = torch.get_num_threads()
        self.apply()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.on and torch.get_num_threads() != self.cap:
            torch.set_num_threads(self.cap)

    def apply(self) -> int:
        """Set torch's thread count to `auto_threads(cap)` where it differs (setting it is not free;
        logged at debug level) and return the count the process runs with."""
        if self.on:
            n = auto_threads(self.cap)
            if n != torch.get_num_threads():
                log.debug("train.threads auto: %d torch threads (cap %d)", n, self.cap)
                torch.set_num_threads(n)
        return torch.get_num_threads()
