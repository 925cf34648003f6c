"""How many intra-op threads torch runs with: one policy, so a shared machine is never oversubscribed.

In order: ``--threads N``; ``ARPRO_NUM_THREADS``; ``OMP_NUM_THREADS`` (which torch itself reads);
else the cores this process may use (its CPU affinity, capped by a cgroup v2 CPU quota) less the
one-minute load average, rounded down, at least 1. Threads beyond the free cores do not run in
parallel but wait for each other at every operation (docs/reference/behaviour.md, "Threads").
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from arpro.errors import ArproError

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # "QUOTA PERIOD", or "max PERIOD" for no quota


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup CPU quota where one is set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
        return cpus if quota == "max" else min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file (macOS, cgroup v1): the affinity alone
        return cpus


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """The thread count the policy picks, and what decided it."""
    if requested is not None:
        if requested < 1:
            raise ArproError(f"--threads must be at least 1, not {requested}")
        return requested, "--threads"
    for variable in ("ARPRO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ArproError(f"{variable}={value!r} is not a positive whole number of threads")
            return int(value), variable
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, math.floor(usable_cpus() - load)), "free cores"


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count by the policy; returns it."""
    import torch

    threads, _ = choose_threads(requested)
    torch.set_num_threads(threads)
    return threads
