"""The paper's evaluation (section 4): every anomalous test input repaired three ways, then tables.

Per input: Ms, Md, M_omega, M_omega_bar and the P1–P4 verdicts for the paper's baseline
(no in-filling, no guidance), unguided in-filling, and the guided repair, all from the same
noise. Per category: mean ± std, TNR against a conformal threshold from held-out normal
scores, median seconds; across categories, Delta = the median percentage improvement of
guided over the baseline (Tables 1–3, 7).

Runs are resumable: inputs are cut into fixed chunks, each chunk's records are appended
to ``records.jsonl`` in one write, and a restarted run skips complete chunks. Sample ``k``
of a category always draws its noise from ``seed + k``, so results do not depend on how
the run was interrupted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from arpro.api import repair
from arpro.engine import RepairSettings
from arpro.protocols import Dataset, Detector, InputBatch, Repairer, Split
from arpro.result import ARMS

METRICS = ("Ms", "Md", "Momega", "Momega_bar")
PROPERTY_OF = {"Ms": "p1", "Md": "p2", "Momega": "p3", "Momega_bar": "p4"}
RECORDS = "records.jsonl"
TIMINGS = "timings.jsonl"


def conformal_threshold(normal_scores: torch.Tensor, confidence: float = 0.95) -> float:
    """Split-conformal threshold: the ceil((n + 1)·confidence)-th smallest held-out normal score.

    A new normal input scores at or below it with probability >= ``confidence``; a repair
    scoring below it is counted as non-anomalous (TNR, Table 3).
    """
    scores = normal_scores.flatten().sort().values
    n = scores.numel()
    rank = math.ceil((n + 1) * confidence)
    if rank > n:
        return math.inf
    return float(scores[rank - 1])


@dataclass
class Job:
    """One category's evaluation: anomalous inputs, held-out normal scores, models, settings."""

    category: str
    dataset: Dataset
    anomalous: Split
    threshold: float
    detector: Detector
    repairer: Repairer
    settings: RepairSettings
    properties: list[str]
    mask: str
    seed: int
    chunk_size: int


def chunks_of(job: Job) -> list[tuple[int, int]]:
    n = len(job.anomalous)
    return [(start, min(start + job.chunk_size, n)) for start in range(0, n, job.chunk_size)]


def repair_chunk(job: Job, start: int, stop: int, progress: bool = False):
    """The :class:`RepairResult` of inputs ``start:stop`` of the job, seeded by their indices."""
    split = job.anomalous
    mask = split.masks[start:stop] if job.mask == "truth" else job.mask
    ids = split.ids[start:stop] if split.ids else [str(k) for k in range(start, stop)]
    return repair(
        split.x[start:stop],
        job.detector,
        job.repairer,
        properties=job.properties,
        settings=job.settings,
        mask=mask,
        seed=job.seed + start,
        ids=ids,
        progress=progress,
    )


GALLERY_SIZE = 4


def write_gallery(job: Job, out_dir: Path) -> list[Path]:
    """The domain's figures for the first few inputs of a category, in ``gallery/CATEGORY/``."""
    folder = out_dir / "gallery" / job.category
    folder.mkdir(parents=True, exist_ok=True)
    stop = min(GALLERY_SIZE, len(job.anomalous))
    result = repair_chunk(job, 0, stop)
    return job.dataset.write_repairs(result, folder, InputBatch(result.x_bad, result.ids))


def run_chunk(job: Job, start: int, stop: int, progress: bool = False) -> tuple[list[dict], list[dict]]:
    """Repair inputs ``start:stop`` of the job: one deterministic record per input, and its timings.

    Wall-clock seconds are kept apart from the records so that the same seed and command
    give byte-identical ``records.jsonl``.
    """
    result = repair_chunk(job, start, stop, progress)
    records, timings = result.rows(), []
    for offset, record in enumerate(records):
        record["category"] = job.category
        record["index"] = start + offset
        record["chunk"] = start
        timing = {"category": job.category, "index": start + offset}
        for arm_name, arm in result.arms.items():
            score = float(arm.score[offset])
            record[arm_name]["score"] = score
            record[arm_name]["non_anomalous"] = score < job.threshold
            timing[arm_name] = record[arm_name].pop("seconds")
        timings.append(timing)
    return records, timings


def load_complete_records(path: Path, expected: dict[tuple[str, int], int]) -> list[dict]:
    """Records of chunks that finished; rewrite the file without partial chunks or torn lines."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by kill -9
    by_chunk: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        by_chunk.setdefault((record["category"], record["chunk"]), []).append(record)
    complete = [r for key, rs in by_chunk.items() if expected.get(key) == len(rs) for r in rs]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in complete))
    os.replace(tmp, path)
    return complete


def append_records(path: Path, records: list[dict]) -> None:
    with path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def shard_path(out_dir: Path, name: str, rank: int, world: int) -> Path:
    return out_dir / (name if world == 1 else name.replace(".jsonl", f".rank{rank}.jsonl"))


def evaluate(
    jobs: list[Job],
    out_dir: Path,
    *,
    advance: Callable[[int], None] = lambda n: None,
    shard: tuple[int, int] = (0, 1),
) -> list[dict]:
    """Run every chunk of every job not already recorded in ``out_dir``; return this shard's records.

    ``shard = (rank, world_size)`` runs only chunks ``rank, rank + world_size, ...``; each
    rank writes its own files, and :func:`merge_shards` joins them in order.
    """
    rank, world = shard
    path = shard_path(out_dir, RECORDS, rank, world)
    timings_path = shard_path(out_dir, TIMINGS, rank, world)
    work = [(job, start, stop) for job in jobs for start, stop in chunks_of(job)][rank::world]
    expected = {(job.category, start): stop - start for job, start, stop in work}
    done = load_complete_records(path, expected)
    finished = {(r["category"], r["chunk"]) for r in done}
    advance(len(done))
    for job, start, stop in work:
        if (job.category, start) in finished:
            continue
        records, timings = run_chunk(job, start, stop)
        append_records(timings_path, timings)
        append_records(path, records)
        done.extend(records)
        advance(len(records))
    return sort_records(done)


def merge_shards(out_dir: Path, world: int) -> None:
    """Join per-rank files into ``records.jsonl`` and ``timings.jsonl``, ordered by input."""
    if world == 1:
        return
    for name in (RECORDS, TIMINGS):
        rows = []
        for rank in range(world):
            part = shard_path(out_dir, name, rank, world)
            if part.exists():
                rows += [json.loads(line) for line in part.read_text().splitlines() if line.strip()]
        tmp = out_dir / f"{name}.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in sort_records(rows)))
        os.replace(tmp, out_dir / name)
        for rank in range(world):
            shard_path(out_dir, name, rank, world).unlink(missing_ok=True)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def sort_records(records: Iterable[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (r["category"], r["index"]))


def summarize(records: list[dict], timings: list[dict]) -> dict:
    """Per category: mean ± std of each metric per arm, TNR, all-hold rate, median seconds; and Delta."""
    seconds: dict[tuple[str, str], list[float]] = {}
    for t in timings:
        for arm in ARMS:
            if arm in t:
                seconds.setdefault((t["category"], arm), []).append(t[arm])
    categories: dict[str, list[dict]] = {}
    for record in records:
        categories.setdefault(record["category"], []).append(record)
    arms = [a for a in ARMS if records and a in records[0]]
    table = {}
    for category, rows in categories.items():
        entry = {"n": len(rows)}
        for arm in arms:
            stats = {}
            for metric in METRICS:
                values = [r[arm]["metrics"][metric] for r in rows if metric in r[arm]["metrics"]]
                if values:
                    stats[metric] = {
                        "mean": statistics.fmean(values),
                        "std": statistics.pstdev(values),
                        "median": statistics.median(values),
                        "holds": statistics.fmean(r[arm]["holds"][PROPERTY_OF[metric]] for r in rows),
                    }
            stats["all_hold"] = statistics.fmean(r[arm]["all_hold"] for r in rows)
            stats["tnr"] = statistics.fmean(r[arm]["non_anomalous"] for r in rows)
            stats["median_seconds"] = statistics.median(seconds.get((category, arm), [math.nan]))
            entry[arm] = stats
        table[category] = entry
    delta = {}
    for metric in METRICS:
        gains = []
        for entry in table.values():
            if metric not in entry.get("baseline", {}) or metric not in entry.get("guided", {}):
                continue
            base, guided = entry["baseline"][metric]["mean"], entry["guided"][metric]["mean"]
            if base != 0:
                gains.append(100.0 * (base - guided) / abs(base))
        delta[metric] = statistics.median(gains) if gains else None
    return {"categories": table, "delta": delta, "arms": arms}


def markdown_tables(summary: dict) -> str:
    """Tables 1/2 (metrics, mean ± std, then a row of medians), 3 (TNR) and 7 (median seconds) in the paper's layout."""
    arms = summary["arms"]
    names = {"Ms": "Ms", "Md": "Md", "Momega": "Mω", "Momega_bar": "Mω̄"}
    head = "| category | n | " + " | ".join(f"{names[m]} {a}" for m in METRICS for a in arms) + " |"
    lines = [head, "|" + "---|" * (2 + len(METRICS) * len(arms))]
    for category, entry in summary["categories"].items():
        cells = []
        for metric in METRICS:
            for arm in arms:
                s = entry[arm].get(metric)
                cells.append(f"{s['mean']:.4g} ± {s['std']:.3g}" if s else "–")
        lines.append(f"| {category} | {entry['n']} | " + " | ".join(cells) + " |")
        medians = [f"{entry[a][m]['median']:.4g}" if m in entry[a] else "–" for m in METRICS for a in arms]
        lines.append("| median | | " + " | ".join(medians) + " |")
    delta = summary["delta"]
    delta_cells = []
    for metric in METRICS:
        for arm in arms:
            value = delta.get(metric)
            delta_cells.append(f"Δ {value:+.1f}%" if arm == "guided" and value is not None else "")
    lines.append("| Δ (guided vs baseline) | | " + " | ".join(delta_cells) + " |")
    lines += ["", "| category | " + " | ".join(f"{a} TNR" for a in arms) + " | "
              + " | ".join(f"{a} all P1–P4 hold" for a in arms) + " | "
              + " | ".join(f"{a} median s" for a in arms) + " |",
              "|" + "---|" * (1 + 3 * len(arms))]
    for category, entry in summary["categories"].items():
        lines.append(
            f"| {category} | "
            + " | ".join(f"{entry[a]['tnr']:.2f}" for a in arms) + " | "
            + " | ".join(f"{entry[a]['all_hold']:.2f}" for a in arms) + " | "
            + " | ".join(f"{entry[a]['median_seconds']:.3f}" for a in arms) + " |"
        )
    return "\n".join(lines) + "\n"


def csv_rows(summary: dict) -> list[dict]:
    """One flat row per (category, arm) for the CSV table."""
    rows = []
    for category, entry in summary["categories"].items():
        for arm in summary["arms"]:
            row = {"category": category, "arm": arm, "n": entry["n"]}
            for metric in METRICS:
                s = entry[arm].get(metric)
                if s:
                    row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_median"] = s["mean"], s["std"], s["median"]
                    row[f"{metric}_holds"] = s["holds"]
            row.update(tnr=entry[arm]["tnr"], all_hold=entry[arm]["all_hold"], median_seconds=entry[arm]["median_seconds"])
            rows.append(row)
    return rows


def build_jobs(
    *,
    detector: str,
    repairer: str | None,
    dataset: str | None,
    data_root: Path | None,
    categories: list[str],
    dataset_options: dict | None = None,
    settings: RepairSettings,
    properties: list[str],
    mask: str,
    seed: int,
    chunk_size: int,
    limit: int | None,
    detector_checkpoint: Path | None = None,
    repairer_checkpoint: Path | None = None,
    progress: bool = True,
) -> list[Job]:
    """One job per category: its anomalous test inputs, fitted models and conformal threshold."""
    from arpro import plugins
    from arpro.api import obtain_model
    from arpro.errors import ArproError
    from arpro.session import load_dataset

    registry = plugins.registry()
    detector_cls = registry.get("detector", detector)
    domain = detector_cls.domain
    repairer_cls = registry.get("repairer", repairer) if repairer else registry.default("repairer", domain)
    for name in properties:
        registry.get("property", name)
    if mask not in ("train", "top", "truth"):
        raise ArproError(f"--mask for evaluate must be train, top or truth, not {mask!r}")
    dataset_options = dataset_options or {}
    base = load_dataset(dataset, data_root, domain=domain, **dataset_options)
    wanted = categories or base.categories() or [""]
    if len(wanted) > 1 and (detector_checkpoint or repairer_checkpoint):
        raise ArproError("--detector-checkpoint/--repairer-checkpoint need a single --category")
    jobs = []
    for category in wanted:
        spec = f"{base.name}:{category}" if category else base.name
        data = load_dataset(spec, data_root, domain=domain, **dataset_options)
        det = obtain_model("detector", detector_cls.name, data, checkpoint_path=detector_checkpoint, seed=seed, progress=progress)
        rep = obtain_model("repairer", repairer_cls.name, data, checkpoint_path=repairer_checkpoint, seed=seed, progress=progress)
        test = data.test()
        held_out = data.validation()
        normal = held_out.x if held_out is not None else test.x[test.labels == 0]
        if len(normal) == 0:
            raise ArproError(f"dataset {spec!r} has no held-out normal samples to calibrate the TNR threshold on")
        with torch.no_grad():
            threshold = conformal_threshold(torch.cat([det.score(b) for b in normal.split(64)]))
        anomalous = test.anomalous()
        if mask == "truth" and anomalous.masks is None:
            raise ArproError(f"dataset {spec!r} has no ground-truth masks for --mask truth")
        if limit is not None:
            anomalous = Split(
                anomalous.x[:limit],
                anomalous.labels[:limit],
                None if anomalous.masks is None else anomalous.masks[:limit],
                anomalous.ids[:limit],
            )
        jobs.append(Job(category or base.name, data, anomalous, threshold, det, rep, settings, properties, mask, seed, chunk_size))
    return jobs


RUN_FILES = ("settings.json", RECORDS, TIMINGS, "summary.json", "tables.md", "tables.csv", "report.html")


def check_run_dir(out: Path, config: dict, overwrite: bool) -> bool:
    """Can a run with ``config`` go into ``out``? True: resume the run already there."""
    from arpro.errors import ArproError

    if out.exists() and not out.is_dir():
        raise ArproError(f"--out {out} is a file, not a directory")
    settings = out / "settings.json"
    if overwrite or not out.exists() or not any(out.iterdir()):
        return False
    if not settings.exists():
        raise ArproError(f"{out} already holds other files; choose an empty directory or pass --overwrite")
    if json.loads(settings.read_text()) != config:
        raise ArproError(f"{out} holds a run with other settings; pass --overwrite to start it over")
    return True


def start_run_dir(out: Path, config: dict, resume: bool) -> None:
    """Create ``out`` for a fresh run (removing only arpro's own run files) or keep it to resume."""
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        return
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for part in out.glob("*.rank*.jsonl"):
        part.unlink()
    shutil.rmtree(out / "gallery", ignore_errors=True)
    write_atomic(out / "settings.json", json.dumps(config, indent=2) + "\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_tables(out: Path, summary: dict) -> None:
    """summary.json, tables.md and tables.csv, each written whole or not at all."""
    import csv
    import io

    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(out / "tables.md", markdown_tables(summary))
    rows = csv_rows(summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "tables.csv", buffer.getvalue())
