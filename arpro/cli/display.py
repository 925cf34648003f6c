"""What the command line prints: rich tables of repairs, evaluations and ablations."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from arpro.errors import RunFailed

if TYPE_CHECKING:  # `arpro list-plugins` prints with this console and must not import torch
    from arpro.plugin_api.result import RepairResult

console = Console(width=None if sys.stdout.isatty() else 240)  # piped or logged: don't squash wide tables to 80


def print_plugins(as_json: bool) -> None:
    """``arpro list-plugins``: every registered entry as a table, or as a JSON list."""
    import json

    from arpro.plugin_api import registry

    keys = ("kind", "name", "domain", "distribution", "version", "description")
    entries = [{key: getattr(e, key) for key in keys} for e in registry.registry()]
    if as_json:
        return print(json.dumps(entries, indent=2))
    table = Table("kind", "name", "domain", "distribution", "description")
    for e in entries:
        table.add_row(e["kind"], e["name"], e["domain"], f"{e['distribution']} {e['version']}", e["description"])
    console.print(table)


def print_report(result: RepairResult, labels: dict[str, str]) -> None:
    """Each property per arm: the mean metric and how often the property holds.

    ``labels``: property name -> how to show its metric (e.g. ``"P3 Mω"``).
    """
    table = Table(title=f"{len(result)} input(s): mean metric (fraction where the property holds)")
    table.add_column("property")
    for arm in result.arms:
        table.add_column(arm, justify="right")
    for prop, metric in result.metric_names.items():
        cells = [f"{arm.metrics[metric].mean().item():.4g} ({arm.holds[prop].float().mean().item():.2f})"
                 for arm in result.arms.values()]
        table.add_row(labels[prop], *cells)
    table.add_row("all hold", *[f"{a.all_hold.float().mean().item():.2f}" for a in result.arms.values()])
    seconds = next(iter(result.arms.values())).seconds  # the arms ran as one batch: its time, not each arm's
    table.add_row("seconds" + (" (one batch)" if len(result.arms) > 1 else ""), f"{seconds:.1f}", *[""] * (len(result.arms) - 1))
    console.print(table)


def print_trust(result: RepairResult) -> None:
    """On stderr: a ``warning:`` when too many guided repairs fail P1, and what ``arpro check`` said
    of the detector (a ``hint:`` to run it when it never did)."""
    from arpro.io.checked import hint

    for warning in result.warnings():
        print("warning: " + warning, file=sys.stderr)
    line = hint(result.settings["detector"], result.settings.get("detector_checkpoint"))
    if line:
        print(line, file=sys.stderr)


def print_summary(summary: dict) -> None:
    """The paper's tables of tables.md (:func:`arpro.workflows.summary.paper_tables`), a row per quantity where wider than tall."""
    from arpro.workflows.summary import paper_tables

    for (head, rows), title in zip(paper_tables(summary), ("mean ± std; lower is better", "verdicts, TNR, seconds", "by anomaly kind")):
        if len(head) > len(rows) + 1:
            head, *rows = [list(column) for column in zip(head, *rows)]
        table = Table(*head, title=title)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for warning in summary.get("warnings", []):
        print("warning: " + warning, file=sys.stderr)


def print_ablation(rows: list[dict], labels: dict[str, str], title: str) -> None:
    """One row per (parameter, value): the mean of each metric (``labels``: metric -> label)."""
    table = Table("parameter", "value", *labels.values(), "all hold", title=title)
    for r in rows:
        table.add_row(r["parameter"], f"{r['value']:g}", *[f"{r[m]:.4g}" for m in labels], f"{r['all_hold']:.2f}")
    console.print(table)


def check_failures(failures: list[str], keep_going: bool, where: str) -> None:
    """Non-finite repairs end the command with exit status 1, unless ``--keep-going``."""
    if not failures:
        return
    shown = ", ".join(failures[:3]) + (f" and {len(failures) - 3} more" if len(failures) > 3 else "")
    message = (f"{len(failures)} repair(s) ended non-finite (NaN or Inf) and are marked failed in {where}: {shown}; "
               "lower --guidance-scale or the --weight values, or check the models")
    if not keep_going:
        raise RunFailed(message + " (--keep-going exits 0)")
    print("warning: " + message, file=sys.stderr)


def print_check(report: dict) -> None:
    """The check's figures as a table, then the verdict line."""
    d, base, infill, r = report["detection"], report["baseline"], report["infill"], report["repair"]
    table = Table("check", "result", title="arpro check")
    for key, value in report["provenance"].items():
        if key != "problem":
            table.add_row(f"detector {key}", value)
    table.add_row("detector AUROC (test split)", f"{d['auroc']:.3f} ({d['n_normal']} normal, {d['n_anomalous']} anomalous)")
    if base is not None:
        table.add_row(f"baseline {base['detector']} AUROC, same split",
                      "the checked detector is the baseline" if base["is_checked"] else f"{base['auroc']:.3f}")
    for kind, value in d["kinds"].items():
        other = "" if base is None or base["is_checked"] else f" (baseline {base['kinds'].get(kind, float('nan')):.3f})"
        table.add_row(f"  AUROC, {kind}", f"{value:.3f}{other}")
    table.add_row("detector F1 at the TNR threshold", f"{d['f1']:.3f} (threshold {d['threshold']:.4g})")
    table.add_row("anomalous inputs already below it", f"{d['anomalous_below_threshold']} of {d['n_anomalous']}")
    if infill is None or r is None:
        table.add_row("repairer and default repair", "not checked: no repairer checkpoint, and the detector cannot be trusted")
    else:
        for kind, m in infill["masks"].items():
            other = f" (linear interpolation {m['linear interpolation']:.3g})" if "linear interpolation" in m else ""
            table.add_row(f"in-fill MSE, {kind}", f"repairer {m['repairer']:.3g} vs training mean {m['training mean']:.3g}{other}")
        table.add_row("in-fill ratio to the naive fill", f"{infill['ratio']:.2f} ({infill['source']}, {infill['n']} samples)")
        if infill.get("reference"):
            table.add_row(f"  training-free {infill['reference']['repairer']}, same samples", f"{infill['reference']['ratio']:.2f}")
        for what, part in (("flagged by the detector", r["flagged"]), ("all", r)):
            holds = " ".join(f"{p.upper()} {v:.2f}" for p, v in part.get("holds", {}).items())
            table.add_row(f"default repair, {part['n']} anomalous inputs ({what})",
                          f"{holds}; all hold {part['all_hold']:.2f}; TNR {part['tnr']:.2f}" if part["n"] else "none")
            if located := part.get("omega_on_truth"):
                auc = "–" if located["alpha_auroc"] is None else f"{located['alpha_auroc']:.3f}"
                table.add_row(f"  ω on the labelled defect ({located['n']} inputs)",
                              f"touches it {located['touches']:.2f}; precision {located['precision']:.3f}, recall "
                              f"{located['recall']:.3f}; AUROC of α on the mask {auc}")
            if detail := part.get("detail"):
                table.add_row(f"  detail in ω over normal samples' there ({detail['n']} inputs)",
                              f"repair {detail['repair']:.2f}, input {detail['input']:.2f} (1: as much fine detail)")
    console.print(table)
    print(f"verdict: {report['verdict']}", flush=True)  # one line, however wide the terminal
