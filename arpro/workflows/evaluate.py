"""The paper's evaluation (section 4): every anomalous test input repaired three ways
(baseline, infill, guided) from the same noise, one record per input, then the tables of
:mod:`arpro.workflows.summary` with TNR against a conformal threshold from held-out normal scores.

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
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from arpro._version import __version__
from arpro.algorithm.best_of import OBJECTIVE
from arpro.algorithm.settings import ARMS, MASK_RULES
from arpro.errors import ArproError
from arpro.io.outputs import LOCK_FILE, exclusive, strict_json, write_atomic
from arpro.io.run_spec import Run, RunSpec, dataset_class, load_dataset, resolve, without
from arpro.metrics import omega_on_truth, tnr_threshold
from arpro.plugin_api.protocols import InputBatch, Split
from arpro.plugin_api.result import RepairResult
from arpro.runtime.devices import launch_fabric
from arpro.runtime.progress import progress_bar
from arpro.workflows.summary import summarize, write_tables

RECORDS = "records.jsonl"
TIMINGS = "timings.jsonl"
RUN_FILES = ("settings.json", RECORDS, TIMINGS, "summary.json", "tables.md", "tables.csv", "report.html")
GALLERY_SIZE = 4


@dataclass
class Job:
    """One category's evaluation: the resolved run, its anomalous inputs and the TNR threshold."""

    category: str
    run: Run
    anomalous: Split
    threshold: float
    chunk_size: int

    def chunks(self) -> list[tuple[int, int]]:
        n = len(self.anomalous)
        return [(start, min(start + self.chunk_size, n)) for start in range(0, n, self.chunk_size)]

    def repair_inputs(self, indices: Sequence[int], progress: bool = False) -> RepairResult:
        """The inputs at ``indices`` repaired, input ``k`` seeded by ``seed + k`` wherever it is repaired."""
        split = self.anomalous.subset(list(indices))
        return self.run.repair(split.x, truth=split.masks, ids=split.ids or [str(k) for k in indices],
                               seed=[self.run.spec.seed + k for k in indices], progress=progress, valid=split.valid)


def build_jobs(spec: RunSpec, categories: list[str], limit: int | None, chunk_size: int, progress: bool = True,
               exclude: list[str] = ()) -> list[Job]:
    """One job per category: its resolved run, anomalous test inputs (less ``exclude``, a
    calibration split) and conformal threshold; each category's data is loaded once."""
    if spec.settings.mask not in (*MASK_RULES, "truth"):
        raise ArproError(f"--mask for evaluate must be {', '.join(MASK_RULES)} or truth, not {spec.settings.mask!r}")
    base = load_dataset(spec.dataset, spec.data_root, domain=spec.domain, **spec.dataset_options)
    wanted = categories or ([base.category] if base.category else base.categories()) or [""]
    if len(wanted) > 1 and (spec.detector_checkpoint or spec.repairer_checkpoint):
        raise ArproError("--detector-checkpoint/--repairer-checkpoint need a single --category")
    jobs = []
    for category in wanted:
        named = spec if category == (base.category or "") else replace(spec, dataset=f"{base.name}:{category}")
        run = resolve(named, dataset=base if named is spec else None, progress=progress)
        threshold = tnr_threshold(run.dataset, run.detector)
        anomalous = without(run.dataset.test().anomalous(), exclude)
        if spec.settings.mask == "truth" and anomalous.masks is None:
            raise ArproError(f"dataset {run.dataset.name!r} has no ground-truth masks for --mask truth")
        if limit is not None:
            anomalous = anomalous.subset(anomalous.spread(limit))
        jobs.append(Job(category or base.name, run, anomalous, threshold, chunk_size))
    return jobs


def write_gallery(job: Job, result: RepairResult, start: int, out_dir: Path) -> list[Path]:
    """The domain's files and figures, in ``gallery/CATEGORY/``, for the gallery's inputs (a few, of every
    kind where kinds are known) among those of the chunk from ``start`` that ``result`` repaired: the
    run's own repairs, nothing repaired twice. Files are named by the chunk, so chunks never collide."""
    rows = [k - start for k in job.anomalous.spread(GALLERY_SIZE) if start <= k < start + len(result)]
    if not rows:
        return []
    folder = out_dir / "gallery" / job.category
    folder.mkdir(parents=True, exist_ok=True)
    shown, masks = result.select(rows), job.anomalous.masks
    batch = InputBatch(shown.x_bad, shown.ids, {} if masks is None else {"truth": masks[[start + r for r in rows]]})
    files = job.run.dataset.write_repairs(shown, folder, batch) + job.run.dataset.draw_repairs(shown, folder, batch)
    return [p.rename(p.with_name(f"{p.stem}-from-{start}{p.suffix}")) for p in files]


def run_chunk(job: Job, start: int, stop: int, out_dir: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Repair inputs ``start:stop`` of the job: one deterministic record per input, and its timings;
    given ``out_dir``, the gallery's inputs among them are drawn there (:func:`write_gallery`).

    Wall-clock seconds are kept apart from the records so that the same seed and command
    give byte-identical ``records.jsonl``.
    """
    result, masks, valid = job.repair_inputs(range(start, stop)), job.anomalous.masks, job.anomalous.valid
    if out_dir is not None:
        write_gallery(job, result, start, out_dir)
    records, timings = result.rows(), []
    located = [None] * len(records) if masks is None else omega_on_truth(
        result.omega, result.alpha_bad, job.run.detector.feature_mask(masks[start:stop].float()),
        None if valid is None else job.run.detector.feature_mask(valid[start:stop].float()))
    for offset, record in enumerate(records):
        record.update(category=job.category, index=start + offset, chunk=start,
                      input_non_anomalous=record["score_bad"] < job.threshold)  # scored normal before any repair
        if located[offset]:  # omega against the labelled defect
            record["omega_on_truth"] = located[offset]
        if job.anomalous.kinds:  # the anomaly kind, where the dataset knows it: tables.md breaks TNR down by it
            record["kind"] = job.anomalous.kinds[start + offset]
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
    records = read_jsonl(path, ("category", "chunk", "index"))
    by_chunk: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        by_chunk.setdefault((record["category"], record["chunk"]), []).append(record)
    complete = [r for key, rs in by_chunk.items() if expected.get(key) == len(rs) for r in rs]
    write_atomic(path, "".join(strict_json(r) + "\n" for r in complete))
    return complete


def append_records(path: Path, records: list[dict]) -> None:
    with path.open("a") as f:
        f.write("".join(strict_json(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def shard_path(out_dir: Path, name: str, rank: int, world: int) -> Path:
    return out_dir / (name if world == 1 else name.replace(".jsonl", f".rank{rank}.jsonl"))


def evaluate(jobs: list[Job], out_dir: Path, *, advance: Callable[[], None] = lambda: None,
             shard: tuple[int, int] = (0, 1)) -> None:
    """Run every chunk of every job not already recorded in ``out_dir``.

    ``shard = (rank, world_size)`` runs only chunks ``rank, rank + world_size, ...``; each
    rank writes its own files, and :func:`merge_shards` joins them in order.
    """
    rank, world = shard
    path, timings_path = shard_path(out_dir, RECORDS, rank, world), shard_path(out_dir, TIMINGS, rank, world)
    work = [(job, start, stop) for job in jobs for start, stop in job.chunks()][rank::world]
    done = load_complete_records(path, {(job.category, start): stop - start for job, start, stop in work})
    finished = {(r["category"], r["chunk"]) for r in done}
    kept = {(r["category"], r["index"]) for r in done}  # timings of the records kept, once each
    timings = {(t["category"], t["index"]): t for t in read_jsonl(timings_path) if (t["category"], t["index"]) in kept}
    write_atomic(timings_path, "".join(strict_json(t) + "\n" for t in timings.values()))
    for job, start, stop in work:
        if (job.category, start) not in finished:
            records, timings = run_chunk(job, start, stop, out_dir)
            append_records(timings_path, timings)
            append_records(path, records)
        for _ in range(stop - start):
            advance()


def merge_shards(out_dir: Path, world: int) -> None:
    """Join per-rank files into ``records.jsonl`` and ``timings.jsonl``, ordered by input."""
    for name in (RECORDS, TIMINGS) if world > 1 else ():
        rows = [row for rank in range(world) for row in read_jsonl(shard_path(out_dir, name, rank, world))]
        rows.sort(key=lambda r: (r["category"], r["index"]))
        write_atomic(out_dir / name, "".join(strict_json(r) + "\n" for r in rows))
        for rank in range(world):
            shard_path(out_dir, name, rank, world).unlink(missing_ok=True)


def read_jsonl(path: Path, required: Sequence[str] = ("category", "index")) -> list[dict]:
    """The records of one of the run's JSONL files. A line that does not parse was torn by a killed
    run and is skipped (its input is repaired again); a line that parses to anything but a record
    with the ``required`` keys is not arpro's, and is refused rather than guessed at."""
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if row is None:
            continue
        if not isinstance(row, dict) or not all(key in row for key in required):
            raise ArproError(f"{path} line {number} is not an arpro record ({line[:40]!r}): the file was edited or is "
                             "another tool's; move it away, or choose another --out")
        rows.append(row)
    return rows


def check_guarantee(records: list[dict], calibration: dict) -> dict:
    """The calibrated guarantee in words, and the test split's guided violation rate against its risk."""
    broken = [any(not ok for p, ok in r["guided"]["holds"].items() if p != OBJECTIVE) for r in records]
    rate = sum(broken) / len(broken) if broken else math.nan
    return {"statement": calibration["guarantee"], "risk": calibration["risk"], "confidence": calibration["confidence"],
            "n_test": len(broken), "test_violation_rate": rate, "within_risk": rate <= calibration["risk"]}


def failed_repairs(out_dir: Path) -> list[str]:
    """``"ARM repair of CATEGORY/ID"`` for every recorded repair that ended non-finite."""
    return [f"{arm} repair of {r['category']}/{r['id']}" for r in read_jsonl(out_dir / RECORDS, ("category", "id"))
            for arm in ARMS if r.get(arm, {}).get("failed")]


def check_run_dir(out: Path, config: dict, overwrite: bool) -> bool:
    """Can a run with ``config`` go into ``out``? True: resume the run already there."""
    if out.exists() and not out.is_dir():
        raise ArproError(f"--out {out} is a file, not a directory")
    settings = out / "settings.json"
    if overwrite or not out.exists() or not any(p for p in out.iterdir() if p.name != LOCK_FILE):
        return False
    if not settings.exists():
        raise ArproError(f"{out} already holds other files; choose an empty directory or pass --overwrite")
    try:
        previous = json.loads(settings.read_text())
    except json.JSONDecodeError:
        raise ArproError(f"{settings} is not valid JSON; pass --overwrite to start the run over") from None
    if previous != config:
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
    write_atomic(out / "settings.json", strict_json(config, indent=2) + "\n")


def run(spec: RunSpec, out: Path, *, categories: list[str] = (), limit: int | None = None, chunk_size: int | None = None,
        devices: int = 1, strategy: str = "ddp", num_nodes: int = 1, overwrite: bool = False,
        calibration: dict | None = None, progress: bool = True) -> dict | None:
    """Evaluate ``spec`` over its dataset into ``out``, resuming a run with the same settings.
    With a ``calibration`` record, its inputs are left out and its guarantee is checked.

    Returns the summary on rank 0 (``None`` on other ranks of a multi-process run).
    """
    if chunk_size is None:  # the dataset's class says it: nothing is loaded before the run folder is checked
        chunk_size = dataset_class(spec.dataset, spec.domain).evaluate_chunk
    if chunk_size < 1 or (limit is not None and limit < 1) or devices < 1 or num_nodes < 1:
        raise ArproError("--chunk-size, --limit, --devices and --num-nodes must be at least 1")
    config = {"arpro_version": __version__, **spec.to_dict(), "categories": list(categories), "limit": limit,
              "chunk_size": chunk_size, **({"calibration_risk": calibration["risk"]} if calibration else {})}
    resume = check_run_dir(out, config, overwrite)
    fabric = launch_fabric(devices, strategy, num_nodes, device=spec.device, precision=spec.precision)
    rank, world = fabric.global_rank, fabric.world_size
    rank_spec = replace(spec, device=str(fabric.device))  # each rank's models on its own GPU (cuda -> cuda:RANK)
    jobs = build_jobs(rank_spec, list(categories), limit, chunk_size, progress=progress and rank == 0,
                      exclude=calibration["calibration_ids"] if calibration else [])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    with exclusive(out, "evaluate") if rank == 0 else nullcontext():
        if rank == 0:
            start_run_dir(out, config, resume)
        fabric.barrier()
        total = sum(len(j.anomalous) for j in jobs)
        with progress_bar("evaluating", total=total, enabled=progress and rank == 0) as advance:
            evaluate(jobs, out, advance=advance, shard=(rank, world))
        fabric.barrier()
        if rank != 0:
            return None
        merge_shards(out, world)
        properties = [{"name": p.name, "metric": p.metric_name, "label": p.label()} for p in spec.reported]
        summary = summarize(read_jsonl(out / RECORDS), read_jsonl(out / TIMINGS), properties)
        if calibration is not None and calibration["uncertified"]:
            summary["warnings"].append(f"no guarantee: the settings are not those --calibration certified "
                                       f"({'; '.join(calibration['uncertified'])})")
        elif calibration is not None:
            summary["guarantee"] = check = check_guarantee(read_jsonl(out / RECORDS), calibration)
            if not check["within_risk"]:
                summary["warnings"].append(f"the guided violation rate on the {check['n_test']} test inputs is "
                                           f"{check['test_violation_rate']:.3f}, ABOVE the certified risk {check['risk']:g}: "
                                           "the guarantee did not hold here (are these inputs like the calibration ones?)")
            summary["calibration"] = {k: calibration[k] for k in ("file", "sha256")}
        write_tables(out, summary)
        return summary
