"""The paper's eq. 1 with a guarantee: Learn-then-Test over the repair settings θ.

Eq. 1 asks for the repair that minimises E[s(x_fix)] subject to P(L2 ≤ δ2, L3 ≤ 0, L4 ≤ 0)
≥ 1 − δ. ``arpro calibrate`` tries every θ of a small grid (guidance scale × the λ of the
constraint properties × K draws) on a calibration split of anomalous inputs, computes each
θ's violation count (inputs whose returned repair breaks any property but P1), and tests
H_θ: risk(θ) > δ with the binomial tail p-value P(Bin(n, δ) ≤ violations). Bonferroni over
the grid bounds the chance of certifying any θ whose risk exceeds δ by γ = 1 − confidence
(Angelopoulos et al., 2021). The certified θ with the lowest mean score is chosen.

The guarantee, for test inputs exchangeable with the calibration inputs (same dataset,
detector, repairer and the chosen settings): with probability ≥ 1 − γ over the draw of the
calibration inputs, the chosen θ's violation risk is at most δ.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from arpro._version import __version__
from arpro.algorithm.best_of import OBJECTIVE, binomial_cdf, choose
from arpro.algorithm.settings import MAX_SAMPLES
from arpro.errors import ArproError, RunFailed
from arpro.io.checked import sha256
from arpro.io.outputs import strict_json, write_atomic
from arpro.io.run_spec import RunSpec, resolve
from arpro.runtime.progress import progress_bar

SPLIT_SEED = 0  # the calibration/test split of anomalous inputs is fixed, so runs agree on it


def needed_inputs(risk: float, confidence: float, grid_size: int) -> int:
    """The fewest calibration inputs with which a θ without a single violation is certified."""
    return math.ceil(math.log((1 - confidence) / grid_size) / math.log(1 - risk))


def calibration_ids(ids: list[str], fraction: float) -> list[str]:
    """The anomalous inputs calibration uses: a fixed seeded ``fraction`` of them."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
    return sorted(ids[i] for i in order[: int(round(fraction * len(ids)))])


def certify(violations: int, n: int, risk: float, level: float) -> tuple[float, bool]:
    """The binomial tail p-value of H: risk > δ, and whether it is rejected at ``level``."""
    p_value = binomial_cdf(violations, n, risk)
    return p_value, p_value <= level


def calibrate(spec: RunSpec, out: Path, *, risk: float, scales: list[float], weights: list[float],
              samples: list[int], fraction: float = 0.5, overwrite: bool = False, progress: bool = True) -> dict:
    """Learn-then-Test over ``scales × weights × samples`` on the calibration split, at the spec's
    ``settings.confidence`` (1 − γ); writes and returns ``calibration.json``'s content. Raises
    :class:`RunFailed` (after writing) when no θ is certified."""
    confidence = spec.settings.confidence
    if not (0 < risk < 1 and 0 < confidence < 1 and 0 < fraction < 1):
        raise ArproError("--risk, --confidence and --fraction must lie strictly between 0 and 1")
    if Path(out).exists() and not overwrite:
        raise ArproError(f"{out} already exists; pass --overwrite to replace it")
    thetas = list(itertools.product(scales, weights, sorted(set(samples))))
    run = resolve(spec, progress=progress)
    anomalous = run.dataset.test().anomalous()
    if len(anomalous) == 0:
        raise ArproError(f"dataset {run.dataset.name!r} has no anomalous test inputs to calibrate on")
    ids = anomalous.ids or [str(i) for i in range(len(anomalous))]
    chosen_ids = set(calibration_ids(ids, fraction))
    keep = torch.tensor([i in chosen_ids for i in ids])
    x, n, need = anomalous.x[keep], int(keep.sum()), needed_inputs(risk, confidence, len(thetas))
    if n < need:
        raise ArproError(f"calibrating {len(thetas)} settings at --risk {risk} and --confidence {confidence} needs at "
                         f"least {need} anomalous calibration inputs; {run.dataset.name!r} gives {n} "
                         f"({fraction:.0%} of {len(ids)}): use a larger dataset, fewer settings or a larger --risk")
    base, level, rows = run.spec.settings, (1 - confidence) / len(thetas), []
    constraints = [p.name for p in run.spec.guiding if p.guides and p.name != OBJECTIVE]  # the lambdas of the grid
    with progress_bar("calibrating", total=len(scales) * len(weights), enabled=progress) as advance:
        for scale, weight in itertools.product(scales, weights):
            settings = replace(base, guidance_scale=base.guidance_scale * scale,
                               samples=max(samples),
                               weights={**base.weights, **{p: weight for p in constraints}})
            arm = run.repair(x, settings=settings, arms=("guided",), progress=False).arms["guided"]
            draws = arm.draws  # K draws [K, B]; with K = 1 there are none, and the arm is its only draw
            score, holds, failed = (draws.score, draws.holds, draws.failed) if draws is not None else (
                arm.score[None], {p: v[None] for p, v in arm.holds.items()}, arm.failed[None])
            for k in sorted(set(samples)):  # the first k of the draws are exactly a k-draw run's draws
                chosen, violations = choose(score[:k], {p: v[:k] for p, v in holds.items()}, failed[:k])
                broken = int((violations[chosen, torch.arange(n)] > 0).sum())
                p_value, certified = certify(broken, n, risk, level)
                mean_score = float(score[:k][chosen, torch.arange(n)].mean())
                rows.append({"guidance_scale": settings.guidance_scale, "weights": settings.weights, "samples": k,
                             "violations": broken, "risk": broken / n, "p_value": p_value, "certified": certified,
                             "mean_score": mean_score if math.isfinite(mean_score) else None})
            advance()
    certified = [r for r in rows if r["certified"] and r["mean_score"] is not None]
    best = min(certified, key=lambda r: r["mean_score"]) if certified else None
    record = {
        "arpro_version": __version__, "spec": spec.to_dict(), "risk": risk, "confidence": confidence,
        "method": "Learn-then-Test: binomial tail p-values, Bonferroni over the grid",
        "n": n, "level": level, "calibration_ids": sorted(chosen_ids), "grid": rows,
        "chosen": None if best is None else {k: best[k] for k in ("guidance_scale", "weights", "samples")},
        "guarantee": guarantee(risk, confidence, best is not None),
    }
    write_atomic(Path(out), strict_json(record, indent=2) + "\n")
    if best is None:
        raise RunFailed(f"no setting is certified at --risk {risk} with --confidence {confidence} "
                        f"(the lowest violation rate was {min(r['risk'] for r in rows):.2f}); wrote {out}")
    return record


def guarantee(risk: float, confidence: float, certified: bool = True) -> str:
    """The statement the chosen settings carry, in words."""
    if not certified:
        return "none: no setting of the grid was certified"
    return (f"With probability at least {confidence:g} over the calibration inputs, a repair with these settings breaks "
            f"a constraint (any property but P1) for at most {risk:g} of inputs exchangeable with them "
            "(same dataset, detector, repairer and settings).")


CERTIFIED = {"guidance_scale": "--guidance-scale", "weights": "--weight", "samples": "--samples"}
SAME_MODELS = ("detector", "repairer", "dataset", "data_root", "properties")  # another of these: another certificate


def _number(value: object, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def read_calibration(path: Path) -> dict:
    """``calibration.json``, checked key by key (types and ranges) before anything trusts it."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ArproError(f"--calibration {path} is not a calibration.json written by arpro calibrate: {error}") from None
    spec = record.get("spec") if isinstance(record, dict) else None
    chosen = record.get("chosen") if isinstance(record, dict) else None
    checks = {
        "risk": isinstance(record, dict) and _number(record.get("risk"), 1e-12, 1 - 1e-12),
        "confidence": isinstance(record, dict) and _number(record.get("confidence"), 1e-12, 1 - 1e-12),
        "guarantee": isinstance(record, dict) and isinstance(record.get("guarantee"), str),
        "calibration_ids": isinstance(record, dict) and isinstance(record.get("calibration_ids"), list)
        and all(isinstance(i, str) for i in record["calibration_ids"]),
        "spec": isinstance(spec, dict) and isinstance(spec.get("settings"), dict) and isinstance(spec.get("detector"), str),
        "chosen": chosen is None or (isinstance(chosen, dict) and _number(chosen.get("guidance_scale"), 0, math.inf)
                                     and isinstance(chosen.get("weights"), dict)
                                     and all(isinstance(k, str) and _number(v, 0, math.inf) for k, v in chosen["weights"].items())
                                     and isinstance(chosen.get("samples"), int) and _number(chosen["samples"], 1, MAX_SAMPLES)),
    }
    broken = [key for key, ok in checks.items() if not ok]
    if broken:
        raise ArproError(f"--calibration {path} is not a valid calibration.json: {broken[0]!r} is missing or out of range")
    return record


def apply(spec: RunSpec, path: Path | None, allow_uncertified: bool = False) -> tuple[RunSpec, dict | None]:
    """``spec`` with the certified settings of ``calibration.json`` at ``path``, and the file's
    content with its SHA-256 (``spec`` and None without a file).

    The certified settings (guidance scale, λ, K) cannot be overridden. Any other difference from
    the calibrated run that changes the repair (``--steps``, ``--mask``, a checkpoint, ...) voids the
    guarantee: it is refused, unless ``allow_uncertified``; then the record's ``uncertified`` lists
    the differences, and no guarantee is claimed."""
    if path is None:
        return spec, None
    record = read_calibration(path)
    chosen, calibrated, current = record["chosen"], record["spec"], spec.to_dict()
    if chosen is None:
        raise ArproError(f"--calibration {path} certifies no setting; recalibrate with a larger --risk")
    for key in SAME_MODELS:
        if calibrated.get(key) != current.get(key):
            raise ArproError(f"--calibration {path} was made for {key} {calibrated.get(key)!r}, not {current.get(key)!r}")
    was, now = calibrated["settings"], current["settings"]
    for key, flag in CERTIFIED.items():
        if key in was and now.get(key) != was[key]:
            raise ArproError(f"{flag} is certified by --calibration {path} (it chose {chosen[key]!r}); it cannot be "
                             "overridden: drop it, or recalibrate")
    changed = [f"--{key.replace('_', '-')} {now.get(key)!r} (certified with {was[key]!r})" for key in was
               if key not in CERTIFIED and now.get(key) != was[key]]
    changed += [f"--{key.replace('_', '-')} {current.get(key)!r} (certified with {calibrated.get(key)!r})"
                for key in ("detector_checkpoint", "repairer_checkpoint", "dataset_options")
                if calibrated.get(key) != current.get(key)]
    if changed and not allow_uncertified:
        raise ArproError(f"{changed[0]} changes the repair that --calibration {path} certified; drop it, or pass "
                         "--allow-uncertified (then no guarantee is given)")
    if changed:
        print(f"warning: these settings are not the certified ones ({'; '.join(changed)}): --calibration {path} gives "
              "no guarantee for them", file=sys.stderr)
    settings = replace(spec.settings, guidance_scale=chosen["guidance_scale"], weights=chosen["weights"],
                       samples=chosen["samples"])
    return replace(spec, settings=settings), {**record, "file": str(path), "sha256": sha256(Path(path)),
                                              "uncertified": changed}


def applied(record: dict | None) -> dict | None:
    """What a run records of the calibration it applied: the file, its SHA-256, and the guarantee (None when
    the run's settings were not the certified ones)."""
    if record is None:
        return None
    return {"file": record["file"], "sha256": record["sha256"], "risk": record["risk"],
            "confidence": record["confidence"], "guarantee": None if record["uncertified"] else record["guarantee"],
            "uncertified": record["uncertified"]}
