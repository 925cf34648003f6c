"""``arpro check``: before explaining anything, can the detector detect, does the repairer in-fill
better than a naive fill, and does the default repair keep P1–P4? It ends with one verdict.

An explanation of a detector at chance, made by a repairer that in-fills worse than the
training mean, misleads whoever reads it; this says so before anyone does. The detector is
judged first, against its domain's baseline (a simple, strong detector such as PCA, fitted on
the same training split: a detector that loses to it is not worth explaining). Where the domain's
default repairer has no checkpoint, the training-free one is checked (seconds, not the minutes
to hours of training on a CPU); a repairer named on purpose is trained only if the detector can
be trusted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection
from pathlib import Path

import torch

from arpro._version import __version__
from arpro.errors import ArproError
from arpro.io.checked import read_record, record_path, sha256
from arpro.io.checkpoint import obtain_model
from arpro.io.outputs import strict_json, write_atomic
from arpro.io.run_spec import RunSpec, load_dataset, obtain_models, resolve, training_free_fallback
from arpro.metrics import auroc, f1, localisation_stats, omega_on_truth, region_detail, scores, tnr_threshold
from arpro.plugin_api import registry
from arpro.plugin_api.protocols import Dataset, Split
from arpro.plugin_api.result import MIN_TNR, P1_FAILURE_SHARE
from arpro.runtime.progress import progress_phase
from arpro.workflows import infill_quality

NEAR_CHANCE_AUROC = 0.6  # below: the detector is near chance
WEAK_AUROC = 0.8  # below: it detects, but too poorly to explain
MIN_ALL_HOLD = 0.5  # the share of repairs that must satisfy every property
CHECK_LIMIT = 16  # anomalous test inputs repaired by default
BASELINE_MARGIN = 0.01  # AUROC within which a detector counts as level with the baseline, not worse


def kind_aurocs(test: Split, values: torch.Tensor) -> dict[str, float]:
    """Each anomaly kind's AUROC against all the normal test samples ({} where the dataset names no kinds)."""
    if not test.kinds:
        return {}
    normal = test.labels == 0
    kinds = dict.fromkeys(k for k, label in zip(test.kinds, test.labels.tolist(), strict=True) if label == 1)
    return {kind: auroc(test.labels[keep], values[keep])
            for kind in kinds for keep in [normal | torch.tensor([k == kind for k in test.kinds])]}


def baseline_detection(spec: RunSpec, dataset: Dataset, detection: dict, *, progress: bool) -> dict | None:
    """The domain's baseline detector fitted on the same training split, and its AUROC on the same test
    split; the checked detector's own figures when it is the baseline; None when the domain has none."""
    cls = registry.get_baseline(dataset.domain)
    if cls is None:
        return None
    if cls.name == spec.detector:
        return {"detector": cls.name, "auroc": detection["auroc"], "kinds": detection["kinds"], "is_checked": True}
    if progress:
        print(f"note: fitting the {cls.name} baseline on the same training split, to compare", file=sys.stderr)
    try:
        baseline = obtain_model("detector", cls.name, dataset, seed=spec.seed, progress=progress)
    except ArproError as error:
        print(f"note: the {cls.name} baseline was not measured: {error}", file=sys.stderr)
        return None
    test = dataset.test()
    with progress_phase(f"scoring the test samples with {cls.name}", enabled=progress):
        values = scores(baseline, test.x)
    return {"detector": cls.name, "auroc": auroc(test.labels, values), "kinds": kind_aurocs(test, values),
            "is_checked": False}


def reference_infill(spec: RunSpec, dataset: Dataset, held_out: torch.Tensor, *, progress: bool) -> dict | None:
    """The in-fill ratio of the domain's training-free repairer on ``held_out``, beside a trained one's: fitted on the
    training split less the samples ``arpro train repairer`` holds out, so that it never saw ``held_out``."""
    cls = registry.get_baseline(dataset.domain, "repairer")
    if cls is None:
        return None
    try:
        with progress_phase(f"indexing the training-free {cls.name} to compare in-fills", enabled=progress):
            reference = cls.for_dataset(dataset)
            reference.fit(infill_quality.split(dataset)[0], seed=spec.seed, progress=progress)
    except ArproError as error:  # e.g. a picture size its patches do not tile
        print(f"note: the training-free {cls.name} was not measured: {error}", file=sys.stderr)
        return None
    figure = infill_quality.measure(reference.eval(), held_out, settings=spec.settings, seed=spec.seed, progress=progress)
    return {"repairer": cls.name, "ratio": figure["ratio"]}


def repair_detail(dataset: Dataset, x_bad: torch.Tensor, x_fix: torch.Tensor, omega_input: torch.Tensor,
                  test: Split) -> dict[str, torch.Tensor] | None:
    """Per repair, the detail (``Dataset.detail_map``) inside ω of the input, of the repair and of normal test samples there."""
    normal = test.x[test.labels == 0][:32]
    maps = [dataset.detail_map(x) for x in (x_bad, x_fix, normal)]
    if maps[0] is None or len(normal) == 0:
        return None
    (before, there, has), after = region_detail(maps[0], maps[2], omega_input), region_detail(maps[1], maps[2], omega_input)[0]
    return {"input": before, "repair": after, "normal": there, "has": has}


def relative_detail(detail: dict[str, torch.Tensor], keep: torch.Tensor) -> dict | None:
    """The repairs' and inputs' detail in ω over the normal samples' there, summed over ``keep`` (1: as much)."""
    if not keep.any():
        return None
    normal = detail["normal"][keep].sum().clamp_min(1e-12)
    return {"repair": float(detail["repair"][keep].sum() / normal), "input": float(detail["input"][keep].sum() / normal),
            "n": int(keep.sum())}


def run_check(spec: RunSpec, *, limit: int = CHECK_LIMIT, progress: bool = True) -> dict:
    """Every figure of the check, the problems found (each with what to do) and the verdict."""
    if limit < 1:
        raise ArproError("--limit must be at least 1")
    dataset = load_dataset(spec.dataset, spec.data_root, domain=spec.domain, **spec.dataset_options)
    spec = training_free_fallback(spec, dataset, progress=progress)
    test = dataset.test()
    if not (test.labels == 0).any() or not (test.labels == 1).any():
        raise ArproError(f"dataset {dataset.name!r} has no labelled test split with both normal and anomalous "
                         "samples; arpro check needs one (--dataset, --data-root)")
    detector = obtain_models(spec, dataset, ("detector",), progress=progress)["detector"]
    with progress_phase(f"scoring the held-out and test samples with {detector.name}", enabled=progress):
        threshold = tnr_threshold(dataset, detector)
        test_scores = scores(detector, test.x)
    anomalous_scores = test_scores[test.labels == 1]
    detection = {"auroc": auroc(test.labels, test_scores), "f1": f1(test.labels, test_scores >= threshold), "threshold": threshold,
                 "n_normal": int((test.labels == 0).sum()), "n_anomalous": int((test.labels == 1).sum()),
                 "anomalous_below_threshold": int((anomalous_scores < threshold).sum()),
                 "kinds": kind_aurocs(test, test_scores)}
    baseline = baseline_detection(spec, dataset, detection, progress=progress)
    provenance = detector.provenance()

    repairer_cls = registry.get("repairer", spec.repairer)
    repairer_path = spec.repairer_checkpoint or repairer_cls.bundled_checkpoint(dataset)
    training_free = registry.get_baseline(dataset.domain, "repairer") is repairer_cls  # its fit takes seconds
    if repairer_path is None and not training_free and detection["auroc"] < WEAK_AUROC:  # no training for nothing
        print(f"note: the repair was not checked: no repairer checkpoint, and a detector at AUROC {detection['auroc']:.3f} "
              "cannot be trusted whatever the repairer does; pass --repairer-checkpoint FILE to check it too",
              file=sys.stderr)
        infill = repair = None
    else:
        if repairer_path is None and not training_free and progress:  # what is known already, before minutes of training
            print(f"note: detector AUROC {detection['auroc']:.3f}"
                  + (f" (baseline {baseline['detector']} {baseline['auroc']:.3f})" if baseline else "")
                  + "; no repairer checkpoint, so one is trained now to check the repair (--repairer-checkpoint FILE "
                  "skips this)", file=sys.stderr)
        run = resolve(spec, dataset=dataset, progress=progress, detector=detector)
        infill = infill_quality.recorded(repairer_path)
        if infill is None:
            held_out = dataset.validation()
            normal = held_out.x if held_out is not None and len(held_out) else test.x[test.labels == 0]
            infill = {**infill_quality.measure(run.repairer, normal, settings=spec.settings, seed=spec.seed,
                                               progress=progress), "source": "measured now on held-out normal samples"}
        else:
            normal = infill_quality.split(dataset)[1]  # the samples `arpro train repairer` measured it on
            infill["source"] = "recorded when the repairer was trained"
        if not training_free and normal is not None:
            infill["reference"] = reference_infill(spec, dataset, normal, progress=progress)
        anomalous = test.anomalous()
        chosen = anomalous.subset(anomalous.spread(limit))
        result = run.repair(chosen.x, truth=chosen.masks, ids=chosen.ids or None, arms=("guided",), progress=progress, valid=chosen.valid)
        guided = result.arms["guided"]
        flagged = (result.score_bad >= threshold) & ~result.nothing_to_repair  # the inputs a repair is judged on
        located = [None] * len(chosen) if chosen.masks is None else omega_on_truth(
            result.omega, result.alpha_bad, detector.feature_mask(chosen.masks.float()),
            None if chosen.valid is None else detector.feature_mask(chosen.valid.float()))

        detail = repair_detail(dataset, chosen.x, guided.x_fix, result.omega_input, test)

        def figures(keep: torch.Tensor) -> dict:
            return {"n": int(keep.sum()), "holds": {p: float(v[keep].float().mean()) for p, v in guided.holds.items()},
                    "all_hold": float(guided.all_hold[keep].float().mean()),
                    "tnr": float((guided.score[keep] < threshold).float().mean()),
                    "omega_on_truth": localisation_stats([{"omega_on_truth": located[i]} for i in keep.nonzero().flatten()]),
                    "detail": None if detail is None else relative_detail(detail, keep & detail["has"])}

        repair = {**figures(torch.ones_like(flagged)), "flagged": figures(flagged) if flagged.any() else {"n": 0}}

    name = f"{dataset.name}:{dataset.category}" if dataset.category else dataset.name
    report = {"arpro_version": __version__, "spec": spec.to_dict(), "dataset": name, "detection": detection,
              "baseline": baseline, "provenance": provenance, "infill": infill, "repair": repair,
              "problems": problems(detection, infill, repair, detector.config_parameters() or {}, baseline,
                                   provenance.get("problem"))}
    report["verdict"] = "; ".join(report["problems"]) or "ok"
    return report


def problems(detection: dict, infill: dict | None, repair: dict | None, detector_options: Collection[str] = (),
             baseline: dict | None = None, weights_problem: str | None = None) -> list[str]:
    """The verdict's parts, each with what to do (the detector's from its ``detector_options``; ``None``: not checked)."""
    found = []
    score = detection["auroc"]
    how = "near chance" if score < NEAR_CHANCE_AUROC else "weak" if score < WEAK_AUROC else None
    worse = baseline is not None and not baseline["is_checked"] and score < baseline["auroc"] - BASELINE_MARGIN
    if how or worse:
        ways = [f"use --detector {baseline['detector']}"] if worse else []
        ways += [f"train it longer (--model-option {key}=N)" for key in ("train_steps", "epochs") if key in detector_options][:1]
        ways += ["give it pretrained backbone_weights"] * ("backbone_weights" in detector_options)
        advice = ", ".join([*ways, "or choose another detector"]) if ways else "choose another detector"
        if worse and how:
            what = f"{how} (AUROC {score:.3f}) and worse than the {baseline['detector']} baseline ({baseline['auroc']:.3f})"
        elif worse:
            what = f"worse than the {baseline['detector']} baseline (AUROC {score:.3f} vs {baseline['auroc']:.3f})"
        else:
            what = f"{how} (AUROC {score:.3f})"
        found.append(f"detector {what}: {advice}")
    if weights_problem:
        found.append(weights_problem)
    if infill is None or repair is None:
        return found
    repair = repair["flagged"] if repair.get("flagged", {}).get("n") else repair  # judged on the flagged inputs first
    reference = infill.get("reference")
    if not infill["beats_naive"]:
        found.append(f"repairer in-fills worse than the naive fill, the training mean (error ratio {infill['ratio']:.2f}): "
                     "train it longer (arpro train repairer --model-option train_steps=N)"
                     + (f" or use --repairer {reference['repairer']}" if reference and reference["ratio"] < 1 else ""))
    elif reference and infill["ratio"] > reference["ratio"]:
        found.append(f"repairer in-fills worse than the training-free {reference['repairer']} (error ratio "
                     f"{infill['ratio']:.2f} vs {reference['ratio']:.2f}): train it longer or use --repairer "
                     f"{reference['repairer']}")
    p1 = repair["holds"].get("p1", 1.0)
    if 1 - p1 > P1_FAILURE_SHARE:
        found.append(f"guided repair raises the score (P1 fails) for {1 - p1:.0%} of inputs: raise --guidance-scale "
                     "or --weight p1, or draw several repairs (--samples K)")
    if repair["all_hold"] < MIN_ALL_HOLD:
        weakest = min(repair["holds"], key=repair["holds"].get)
        found.append(f"P1–P4 all hold for only {repair['all_hold']:.0%} of repairs ({weakest.upper()} holds for "
                     f"{repair['holds'][weakest]:.0%}): see what it depends on in docs/concepts.md, or try --samples K "
                     "or arpro calibrate")
    if repair["tnr"] < MIN_TNR:
        found.append(f"repairs rarely score as normal (TNR {repair['tnr']:.0%}): they do not show what a normal input "
                     "would look like; train the repairer longer, or widen omega (--mask, --mask-quantile)")
    return found


def record(spec: RunSpec, report: dict) -> Path | None:
    """Write the check's record beside the checkpoint named by ``--detector-checkpoint``; never beside one
    arpro found itself (a bundled one). A folder that cannot be written gets a note instead."""
    if spec.detector_checkpoint is None:
        return None
    path = Path(spec.detector_checkpoint)
    summary = {"sha256": sha256(path), "detector": spec.detector, "dataset": report["dataset"],
               "verdict": report["verdict"], "detection": report["detection"], "baseline": report["baseline"],
               "provenance": report["provenance"], "arpro_version": __version__}
    run = report["spec"]  # one entry per dataset, dataset options and settings: a later check of others keeps it
    key = json.dumps([report["dataset"], run["data_root"], run["dataset_options"], run["settings"]], sort_keys=True)
    earlier = (read_record(path) or {}).get("checks", {})
    summary["checks"] = {**earlier, key: {k: summary[k] for k in ("dataset", "verdict", "detection", "baseline")}}
    try:
        write_atomic(record_path(path), strict_json(summary, indent=2) + "\n")
    except ArproError as error:
        print(f"note: the check was not recorded: {error}", file=sys.stderr)
        return None
    return record_path(path)
