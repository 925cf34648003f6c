"""Statistics over evaluation records, and the paper's tables (1–3, 7) as Markdown and CSV.

The metrics and verdicts shown are those of the properties in the run, named as their
plugins name them; nothing here lists P1–P4.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from arpro.algorithm.settings import ARMS
from arpro.io.outputs import strict_json, write_atomic
from arpro.metrics import localisation_stats
from arpro.plugin_api.result import MIN_TNR, p1_warning

MIN_GROUP = 5  # a category or kind of fewer inputs is too small to warn about


def flagged(record: dict) -> bool:
    """Whether the detector flags the input (its score is at or above the TNR threshold) and there is
    something to repair: the inputs a repair is judged on first."""
    return not record.get("input_non_anomalous", False) and not record.get("nothing_to_repair", False)


def arm_stats(rows: list[dict], arm: str, properties: list[dict], seconds: list[float]) -> dict:
    """Of one arm over ``rows``: each metric's mean, std and median and how often its property holds,
    the all-hold rate, failures, best-of-K's draw violation rate, TNR and median seconds."""
    stats = {}
    for prop in properties:
        values = [v for r in rows if (v := r[arm]["metrics"].get(prop["metric"])) is not None]
        if values:
            stats[prop["metric"]] = {
                "mean": statistics.fmean(values),
                "std": statistics.pstdev(values),
                "median": statistics.median(values),
                "holds": statistics.fmean(r[arm]["holds"][prop["name"]] for r in rows),
            }
    stats["all_hold"] = statistics.fmean(r[arm]["all_hold"] for r in rows)
    stats["failed"] = sum(r[arm].get("failed", False) for r in rows)
    rates = [r[arm]["samples"]["violation_rate"] for r in rows if "samples" in r[arm]]
    if rates:  # best-of-K: the mean share of draws that broke a constraint
        stats["draw_violation_rate"] = statistics.fmean(rates)
    stats["tnr"] = statistics.fmean(r[arm]["non_anomalous"] for r in rows)
    stats["median_seconds"] = statistics.median(seconds or [math.nan])
    return stats


def summarize(records: list[dict], timings: list[dict], properties: list[dict]) -> dict:
    """Per category, for all inputs and, under ``flagged``, for those the detector flags (:func:`flagged`):
    mean ± std and median of each metric per arm, how often each property holds, TNR, all-hold rate,
    median seconds; how many inputs scored below the TNR threshold before any repair; warnings when too
    many flagged inputs' guided repairs fail P1, inputs score normal already, or a kind's (else a
    category's) repairs rarely score as normal; and Delta, over categories the median of the percentage
    improvement of guided's mean over the baseline's (all inputs, and flagged ones). ``properties``:
    ``{"name", "metric", "label"}`` of each property reported in the run."""
    seconds: dict[tuple[str, str, int], float] = {}
    for t in timings:
        for arm in ARMS:
            if arm in t:
                seconds[(t["category"], arm, t["index"])] = t[arm]
    categories: dict[str, list[dict]] = {}
    for record in records:
        categories.setdefault(record["category"], []).append(record)
    arms = [a for a in ARMS if records and a in records[0]]

    def group(rows: list[dict], category: str) -> dict:
        return {"n": len(rows), **{arm: arm_stats(rows, arm, properties, [seconds[k] for r in rows
                                                                          if (k := (category, arm, r.get("index"))) in seconds])
                                   for arm in arms}}

    table = {}
    for category, rows in categories.items():
        entry = {**group(rows, category), "inputs_non_anomalous": sum(r.get("input_non_anomalous", False) for r in rows),
                 "nothing_to_repair": sum(r.get("nothing_to_repair", False) for r in rows)}
        chosen = [r for r in rows if flagged(r)]
        entry["flagged"] = group(chosen, category) if chosen else {"n": 0}
        if located := localisation_stats(rows):  # omega against the labelled defect, where the dataset labels it
            entry["omega_on_truth"], entry["flagged"]["omega_on_truth"] = located, localisation_stats(chosen)
        table[category] = entry
    metrics = [p["metric"] for p in properties]
    delta = {metric: median_gain([e for e in table.values()], metric) for metric in metrics}
    delta_flagged = {metric: median_gain([e["flagged"] for e in table.values()], metric) for metric in metrics}
    judged = [r for r in records if flagged(r) and not r.get("guided", {}).get("failed")]  # failures are reported apart
    warnings = [p1_warning([r["guided"]["holds"]["p1"] for r in judged if "p1" in r.get("guided", {}).get("holds", {})])]
    if 2 * sum(below := [r["input_non_anomalous"] for r in records if "input_non_anomalous" in r]) > len(below):
        warnings.append(f"{sum(below)} of {len(below)} anomalous inputs already score below the TNR threshold before any "
                        "repair: the detector hardly tells them from normal ones, so TNR says little; run `arpro check`")
    kinds = by_kind(records, arms)
    groups = kinds or table
    rare = [f"{name} ({entry['guided']['tnr']:.2f} of {entry['n']})" for name, entry in groups.items()
            if "guided" in entry and entry["n"] >= MIN_GROUP and entry["guided"]["tnr"] < MIN_TNR]
    if rare:
        warnings.append(f"guided repairs rarely score as normal (TNR below {MIN_TNR}) for {', '.join(rare)}: there a repair "
                        "shows what changes within omega, not what a normal input would look like")
    return {"categories": table, "delta": delta, "delta_flagged": delta_flagged, "arms": arms, "properties": properties,
            "by_kind": kinds, "warnings": [w for w in warnings if w]}


def median_gain(entries: list[dict], metric: str) -> float | None:
    """Over ``entries`` (categories), the median of the percentage improvement of guided's mean of ``metric``
    over the baseline's (the paper's Delta); None where no entry has both arms."""
    gains = []
    for entry in entries:
        if metric not in entry.get("baseline", {}) or metric not in entry.get("guided", {}):
            continue
        base, guided = entry["baseline"][metric]["mean"], entry["guided"][metric]["mean"]
        if base != 0:
            gains.append(100.0 * (base - guided) / abs(base))
    return statistics.median(gains) if gains else None


def by_kind(records: list[dict], arms: list[str]) -> dict:
    """Per category and anomaly kind (where records name more than one kind): n, and per arm TNR, the
    all-hold rate and how often P1 holds; it shows which kinds a repair cannot bring below the threshold."""
    if len({r["kind"] for r in records if "kind" in r}) < 2:
        return {}
    groups: dict[str, list[dict]] = {}
    for record in sorted((r for r in records if "kind" in r), key=lambda r: (r["category"], r["kind"])):
        groups.setdefault(f"{record['category']}/{record['kind']}", []).append(record)
    return {group: {"n": len(rows), **{arm: {"tnr": statistics.fmean(r[arm]["non_anomalous"] for r in rows),
                                              "all_hold": statistics.fmean(r[arm]["all_hold"] for r in rows),
                                              "p1": statistics.fmean(r[arm]["holds"].get("p1", math.nan) for r in rows)}
                                        for arm in arms}}
            for group, rows in groups.items()}


def all_hold_label(summary: dict) -> str:
    """What the all-hold column covers, e.g. ``all hold (P1 P2 P3 P4)``."""
    return f"all hold ({' '.join(p['name'].upper() for p in summary['properties'])})"


def paper_tables(summary: dict) -> list[tuple[list[str], list[list[str]]]]:
    """Header and rows of cells of Tables 1/2 (each metric's mean ± std per category, a row of
    medians, then Δ) and 3/7 (TNR, all-hold rate, median seconds, each property's hold rate): the
    inputs the detector flags first (``CATEGORY, flagged``), then all inputs (``CATEGORY, all``)."""
    arms, props = summary["arms"], summary["properties"]
    metrics = [p["metric"] for p in props]
    several = len(summary["categories"]) > 1
    head = ["inputs", "n", *[f"{p['label']} {a}" for p in props for a in arms]]
    rows = []
    for category, entry in summary["categories"].items():
        for label, part in ((f"{category}, flagged", entry.get("flagged", {"n": 0})), (f"{category}, all", entry)):
            if not part["n"]:
                rows.append([label, "0", *["–" for _ in metrics for _ in arms]])
                continue
            rows.append([label, str(part["n"]), *[f"{part[a][m]['mean']:.4g} ± {part[a][m]['std']:.3g}"
                                                  if m in part[a] else "–" for m in metrics for a in arms]])
            rows.append([f"median, {label.rpartition(', ')[2]}", "",
                         *[f"{part[a][m]['median']:.4g}" if m in part[a] else "–" for m in metrics for a in arms]])
    what = "median over categories of the % improvement of the mean" if several else "% improvement of the mean"
    for label, delta in (("flagged", summary.get("delta_flagged", {})), ("all", summary["delta"])):
        rows.append([f"Δ, {label} ({what}, guided vs baseline)", "",
                     *[f"{delta[m]:+.1f}%" if a == "guided" and delta.get(m) is not None else "" for m in metrics for a in arms]])
    seconds = "median s" + (" (arms in one batch)" if len(arms) > 1 else "")  # stacked arms share one time
    columns = [("TNR", "tnr", ".2f"), (all_hold_label(summary), "all_hold", ".2f"), (seconds, "median_seconds", ".3f")]
    verdict_head = ["inputs", "n", *[f"{a} {label}" for label, _, _ in columns for a in arms],
                    *[f"{p['name'].upper()} holds {a}" for p in props for a in arms], "inputs already below threshold"]
    verdicts = []
    for category, entry in summary["categories"].items():
        for label, part in ((f"{category}, flagged", entry.get("flagged", {"n": 0})), (f"{category}, all", entry)):
            cells = [f"{part[a][key]:{fmt}}" if part["n"] else "–" for _, key, fmt in columns for a in arms]
            cells += [f"{part[a][m]['holds']:.2f}" if part["n"] and m in part[a] else "–" for m in metrics for a in arms]
            below = f"{entry.get('inputs_non_anomalous', 0)} of {entry['n']}" if part is entry else "–"
            verdicts.append([label, str(part["n"]), *cells, below])
    tables = [(head, rows), (verdict_head, verdicts)]
    if any("omega_on_truth" in e for e in summary["categories"].values()):
        tables.append(localisation_table(summary))
    if kinds := summary.get("by_kind"):
        kind_head = ["category/kind", "n", *[f"{a} {label}" for label in ("TNR", "all hold", "P1 holds") for a in arms]]
        tables.append((kind_head, [[name, str(e["n"]), *[f"{e[a][key]:.2f}" for key in ("tnr", "all_hold", "p1") for a in arms]]
                                   for name, e in kinds.items()]))
    return tables


def localisation_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Where the dataset labels the defect: how well omega finds it, flagged inputs first."""
    head = ["inputs", "n with a labelled defect", "ω touches it", "ω precision (mean)", "ω recall (mean)",
            "AUROC of α on the mask (mean per input)"]
    rows = []
    for category, entry in summary["categories"].items():
        for label, part in ((f"{category}, flagged", entry.get("flagged", {})), (f"{category}, all", entry)):
            s = part.get("omega_on_truth")
            rows.append([label, *(["0", "–", "–", "–", "–"] if not s else [
                str(s["n"]), f"{s['touches']:.2f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}",
                "–" if s["alpha_auroc"] is None else f"{s['alpha_auroc']:.3f}"])])
    return head, rows


def guarantee_text(summary: dict) -> str:
    """The calibrated guarantee and its check on the test split, in words ("" without calibration)."""
    g = summary.get("guarantee")
    if not g:
        return ""
    verdict = "within" if g["within_risk"] else "ABOVE"
    return (f"Guarantee (arpro calibrate, Learn-then-Test): {g['statement']} On the {g['n_test']} test inputs the "
            f"guided violation rate is {g['test_violation_rate']:.3f}, {verdict} the risk {g['risk']:g}.")


def markdown_tables(summary: dict) -> str:
    """:func:`paper_tables` as Markdown, then the guarantee when the run was calibrated."""
    blocks = [f"**Warning:** {w}" for w in summary.get("warnings", [])]
    blocks += [guarantee_text(summary)] if summary.get("guarantee") else []
    for head, rows in paper_tables(summary):
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        blocks.append("\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]))
    return "\n\n".join(blocks) + "\n"


def csv_rows(summary: dict) -> list[dict]:
    """One flat row per (category, arm) for the CSV table."""
    rows = []
    for category, entry in summary["categories"].items():
        for arm in summary["arms"]:
            row = {"category": category, "arm": arm, "n": entry["n"], "inputs_non_anomalous": entry.get("inputs_non_anomalous", 0)}
            for metric in [p["metric"] for p in summary["properties"]]:
                s = entry[arm].get(metric)
                if s:
                    row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_median"] = s["mean"], s["std"], s["median"]
                    row[f"{metric}_holds"] = s["holds"]
            row.update(tnr=entry[arm]["tnr"], all_hold=entry[arm]["all_hold"], median_seconds=entry[arm]["median_seconds"])
            rows.append(row)
    return rows


def write_tables(out: Path, summary: dict) -> None:
    """summary.json, tables.md and tables.csv, each written whole or not at all."""
    write_atomic(out / "summary.json", strict_json(summary, indent=2) + "\n")
    write_atomic(out / "tables.md", markdown_tables(summary))
    rows = csv_rows(summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "tables.csv", buffer.getvalue())
