"""What a repair returns: x_fix, omega, and each property's metric and verdict, per arm."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

# The three arms, in the order they are reported. "baseline" is the paper's: the same
# start, no guidance, no in-filling; "infill" adds in-filling; "guided" adds guidance.
ARMS = ("baseline", "infill", "guided")


@dataclass
class ArmResult:
    """One arm's repairs for a batch."""

    x_fix: Tensor  # [B, *X]
    score: Tensor  # [B] s(x_fix)
    metrics: dict[str, Tensor]  # metric name (Ms, Md, ...) -> [B]
    holds: dict[str, Tensor]  # property name (p1, ...) -> [B] bool; never true for a failed repair
    seconds: float  # wall time for the whole batch
    failed: Tensor  # [B] bool: the repair is not finite (NaN or Inf), so it is no repair at all

    @property
    def all_hold(self) -> Tensor:
        """[B] bool: every reported property holds."""
        verdicts = list(self.holds.values())
        out = verdicts[0].clone()
        for v in verdicts[1:]:
            out &= v
        return out


@dataclass
class RepairResult:
    """Repairs of a batch of anomalous inputs, by arm, with everything needed to judge them."""

    x_bad: Tensor  # [B, *X]
    omega: Tensor  # [B, *F] anomalous-feature mask
    omega_input: Tensor  # [B, *X] the same mask on the input
    score_bad: Tensor  # [B] s(x_bad)
    arms: dict[str, ArmResult]
    metric_names: dict[str, str]  # property name -> metric name
    settings: dict[str, Any]
    ids: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.x_bad.shape[0]

    @property
    def x_fix(self) -> Tensor:
        """The guided repair (or the last arm run, when guidance was off)."""
        return self.arms[list(self.arms)[-1]].x_fix

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready record per input: its score, mask size, and every arm's metrics and verdicts."""
        records = []
        for i in range(len(self)):
            record: dict[str, Any] = {
                "id": self.ids[i] if self.ids else str(i),
                "score_bad": float(self.score_bad[i]),
                "omega_fraction": float(self.omega[i].float().mean()),
            }
            for arm_name, arm in self.arms.items():
                record[arm_name] = {
                    "failed": bool(arm.failed[i]),
                    "metrics": {m: float(v[i]) if math.isfinite(v[i]) else None for m, v in arm.metrics.items()},
                    "holds": {p: bool(v[i]) for p, v in arm.holds.items()},
                    "all_hold": bool(arm.all_hold[i]),
                    "seconds": arm.seconds / len(self),
                }
            records.append(record)
        return records

    def failures(self) -> list[str]:
        """``"ARM repair of ID"`` for every repair that ended non-finite."""
        return [f"{name} repair of {self.ids[i] if self.ids else i}"
                for name, arm in self.arms.items() for i in arm.failed.nonzero().flatten().tolist()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "metric_names": self.metric_names,
            "messages": self.messages,
            "inputs": self.rows(),
        }
