"""Time to a first explanation from nothing but the data: one `arpro repair` with the training-free repairer, per domain and detector.

    python -m benchmarks run first_explanation [--quick]

A user who has installed arpro and has a dataset on disk types one command, ``arpro repair
--detector NAME --dataset ... --data-root ... --out DIR``: with no checkpoints, the detector is
trained now and the repair takes the domain's training-free repairer (``nearest-patches``,
``nearest-window``), since the default repairer has no checkpoint for the data. Its wall time, in a
fresh process on one thread, is the time to a first explanation (8 anomalous inputs, the guided
arm), beside the bar of 60 s, with the repair's P1 and all-hold rates. Per domain the default detector and the baseline: KolektorSDD
(``mvtec:commutator``; ``patchcore``, ``patchnn``) and the Tennessee Eastman data (``ts-csv``;
``gpt2``, ``pca``), read from ``../shared/data`` (or ``ARPRO_SHARED_DATA``). Quick: the baselines only.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from benchmarks.speed.first_verdict import DATA, timed

BAR_S = 60  # issue 31: a first explanation with the training-free repairer within a minute of installing


def run(quick: bool) -> dict:
    cases = [("kolektorsdd", ["--dataset", "mvtec:commutator"], ["patchnn"] if quick else ["patchcore", "patchnn"]),
             ("tep", ["--dataset", "ts-csv"], ["pca"] if quick else ["gpt2", "pca"])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for domain, dataset, detectors in cases:
            for detector in detectors:
                row = {"domain": domain, "detector": detector}
                if not (DATA / domain).is_dir():
                    rows.append({**row, "skipped": f"no data at {DATA / domain}"})
                    continue
                out = Path(tmp) / f"{domain}-{detector}"
                seconds, proc = timed(["repair", "--detector", detector, *dataset, "--data-root", str(DATA / domain),
                                       "--out", str(out)], threads=1)
                row["wall_s"] = round(seconds, 1)
                if proc.returncode != 0:
                    rows.append({**row, "failed": (proc.stderr.strip().splitlines() or ["?"])[-1]})
                    continue
                row["repairer"] = json.loads((out / "report.json").read_text())["spec"]["repairer"]
                p1 = re.search(r"P1 Ms\s*│\s*\S+ \(([0-9.]+)\)", proc.stdout)
                held = re.search(r"all hold\s*│\s*([0-9.]+)", proc.stdout)
                row.update(p1=float(p1.group(1)) if p1 else None, all_hold=float(held.group(1)) if held else None,
                           met=seconds <= BAR_S)
                rows.append(row)
    return {"rows": rows, "bar_s": BAR_S}
