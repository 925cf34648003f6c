"""One line for every benchmark: the thread count it ran with, and the machine's load while it ran."""

from __future__ import annotations

import os

import torch

from arpro.runtime.threads import choose_threads, usable_cpus


def describe() -> str:
    """torch's thread count (and what the thread policy would pick), usable CPUs, load averages."""
    chosen, reason = choose_threads()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"torch threads {torch.get_num_threads()} (policy: {chosen} from {reason}); "
            f"{usable_cpus()} usable CPUs; load average {load}")
