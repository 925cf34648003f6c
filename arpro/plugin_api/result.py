"""What a repair returns: x_fix, omega, and each property's metric and verdict, per arm."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

# More than this share of guided repairs raising the score (P1 failing) is warned about: the
# explanations of such a run say more about the repairer than about the input.
P1_FAILURE_SHARE = 0.1
MIN_TNR = 0.5  # the share of repairs that must score as normal: the counterfactual must look like one


def p1_warning(p1_holds: list[bool]) -> str | None:
    """The warning for guided repairs whose P1 verdicts are ``p1_holds``, or ``None`` when few fail."""
    failed = sum(not ok for ok in p1_holds)
    if not p1_holds or failed / len(p1_holds) <= P1_FAILURE_SHARE:
        return None
    return (f"the guided repair raised the detector's score (P1 fails) for {failed} of {len(p1_holds)} inputs "
            f"({failed / len(p1_holds):.0%}, more than {P1_FAILURE_SHARE:.0%}): these explanations are not to be "
            "trusted; run `arpro check` to see whether the detector or the repairer is at fault")


@dataclass
class Draws:
    """All K repairs of a best-of-K arm (``[K, B, ...]``), and what the choice among them says."""

    x_fix: Tensor  # [K, B, *X]
    score: Tensor  # [K, B]
    metrics: dict[str, Tensor]  # [K, B] each
    holds: dict[str, Tensor]  # [K, B] each
    failed: Tensor  # [K, B]
    chosen: Tensor  # [B] the draw returned as x_fix
    feasible: Tensor  # [B] True: some draw met every constraint (the lowest score among those was chosen)
    violation_rate: Tensor  # [B] share of draws breaking a constraint
    violation_bound: Tensor  # [B] its one-sided Clopper-Pearson upper bound at settings.confidence
    diversity: Tensor  # [B] mean pairwise L2 distance of the draws within omega

    def row(self, i: int) -> dict[str, Any]:
        """Input ``i``'s draws, JSON-ready."""
        return {
            "chosen": int(self.chosen[i]),
            "case": "lowest score among draws meeting every constraint" if self.feasible[i]
                    else "no draw met every constraint: fewest violations, then lowest score",
            "violation_rate": float(self.violation_rate[i]),
            "violation_bound": float(self.violation_bound[i]),
            "diversity": float(self.diversity[i]),
            "draws": [{"score": _finite(self.score[k, i]), "failed": bool(self.failed[k, i]),
                       "metrics": {m: _finite(v[k, i]) for m, v in self.metrics.items()},
                       "holds": {p: bool(v[k, i]) for p, v in self.holds.items()}} for k in range(self.score.shape[0])],
        }


def _finite(value: Tensor) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass
class ArmResult:
    """One arm's repairs for a batch."""

    x_fix: Tensor  # [B, *X]
    score: Tensor  # [B] s(x_fix)
    metrics: dict[str, Tensor]  # metric name (Ms, Md, ...) -> [B]
    holds: dict[str, Tensor]  # property name (p1, ...) -> [B] bool; never true for a failed repair
    seconds: float  # wall time of the batch it ran in; arms run together share one batch and its time
    failed: Tensor  # [B] bool: the repair is not finite (NaN or Inf), so it is no repair at all
    draws: Draws | None = None  # best-of-K: every draw (None for one sample per input)

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
    alpha_bad: Tensor | None = None  # [B, *F] alpha(x_bad), which omega was chosen from

    def __len__(self) -> int:
        return self.x_bad.shape[0]

    @property
    def nothing_to_repair(self) -> Tensor:
        """[B] bool: omega is empty or the input scores 0, so no repair can lower its score: not a P1 failure."""
        return (self.omega.flatten(1).sum(1) == 0) | (self.score_bad == 0)

    def select(self, rows: list[int]) -> RepairResult:
        """The inputs at ``rows`` alone (best-of-K's other draws left out): the few a gallery draws."""
        arms = {name: ArmResult(a.x_fix[rows], a.score[rows], {m: v[rows] for m, v in a.metrics.items()},
                                {p: v[rows] for p, v in a.holds.items()}, a.seconds, a.failed[rows])
                for name, a in self.arms.items()}
        return replace(self, x_bad=self.x_bad[rows], omega=self.omega[rows], omega_input=self.omega_input[rows],
                       score_bad=self.score_bad[rows], arms=arms, ids=[self.ids[r] for r in rows] if self.ids else [],
                       messages=[], alpha_bad=None if self.alpha_bad is None else self.alpha_bad[rows])

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
                "score_bad": float(self.score_bad[i]),  # written as null (and listed under non_finite) if it overflowed
                "omega_fraction": float(self.omega[i].float().mean()),
                "nothing_to_repair": bool(self.nothing_to_repair[i]),
            }
            for arm_name, arm in self.arms.items():
                record[arm_name] = {
                    "failed": bool(arm.failed[i]),
                    "metrics": {m: _finite(v[i]) for m, v in arm.metrics.items()},
                    "holds": {p: bool(v[i]) for p, v in arm.holds.items()},
                    "all_hold": bool(arm.all_hold[i]),
                    "seconds": arm.seconds / len(self),
                }
                if arm.draws is not None:
                    record[arm_name]["samples"] = arm.draws.row(i)
            records.append(record)
        return records

    def failures(self) -> list[str]:
        """``"ARM repair of ID"`` for every repair that ended non-finite."""
        return [f"{name} repair of {self.ids[i] if self.ids else i}"
                for name, arm in self.arms.items() for i in arm.failed.nonzero().flatten().tolist()]

    def warnings(self) -> list[str]:
        """What makes these repairs untrustworthy: too many guided repairs that fail P1 (non-finite
        ones are reported as failures instead, and inputs with nothing to repair are not counted)."""
        guided = self.arms.get("guided")
        if guided is None or "p1" not in guided.holds:
            return []
        warning = p1_warning(guided.holds["p1"][~guided.failed & ~self.nothing_to_repair].tolist())
        nothing = int(self.nothing_to_repair.sum())
        note = (f"{nothing} of {len(self)} inputs had nothing to repair (an empty omega, or a score of 0): their P1 "
                "cannot hold and is not counted as a failure") if nothing else None
        return [w for w in (warning, note) if w]

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "metric_names": self.metric_names,
            "messages": self.messages,
            "warnings": self.warnings(),
            "inputs": self.rows(),
        }
