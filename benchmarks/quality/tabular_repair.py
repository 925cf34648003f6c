"""Guided against unguided repair of the embedded breast-cancer table, through `arpro evaluate` (the paper's tables).

Runs `arpro evaluate --detector NAME` for gaussian and autoencoder at their defaults (bundled
checkpoints, all 212 malignant test rows; quick: gaussian, `--limit 16`) and keeps, per arm, the
medians of Ms, Md, Momega and Momega_bar (lower is better), the hold rate of each metric's
property ("Ms holds" is P1's), the all-hold rate, TNR and the median seconds, from tables.csv.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

KEPT = ("_median", "_holds")


def evaluate(detector: str, limit: int | None, out: Path) -> list[dict]:
    """The rows of ``arpro evaluate``'s tables.csv, one per arm."""
    arpro = str(Path(sys.executable).with_name("arpro"))
    command = [arpro, "evaluate", "--detector", detector, "--out", str(out), "--quiet",
               *(["--limit", str(limit)] if limit else [])]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(out / "tables.csv", newline="") as table:
        return list(csv.DictReader(table))


def run(quick: bool) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for detector in ("gaussian",) if quick else ("gaussian", "autoencoder"):
            for row in evaluate(detector, 16 if quick else None, Path(tmp) / detector):
                rows.append({"detector": detector, "arm": row["arm"], "n": int(row["n"]),
                             **{" ".join(k.rsplit("_", 1)): float(v) for k, v in row.items() if k.endswith(KEPT)},
                             "TNR": float(row["tnr"]), "all hold": float(row["all_hold"]),
                             "median s (arms in one batch)": float(row["median_seconds"])})
    return {"rows": rows}
