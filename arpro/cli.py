"""The ``arpro`` command line (typer + rich). Plugins add commands through ``arpro_register_commands``."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from arpro import __version__, checkpoint, plugins
from arpro.engine import RepairSettings
from arpro.errors import ArproError
from arpro.outputs import staged_output
from arpro.session import RepairRequest, load_dataset, run_repair
from arpro.training import launch_fabric, use_fabric

console = Console()
app = typer.Typer(
    name="arpro",
    help="Explain anomalies by repairing them (AR-Pro): property-guided diffusion with formal guarantees.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a detector or a repairer on a dataset's normal samples.", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _version(value: bool) -> None:
    if value:
        print(f"arpro {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """arpro: counterfactual explanations of anomalies as repairs, judged by P1–P4."""


@app.command("list-plugins")
def list_plugins(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False) -> None:
    """List every detector, repairer, property and dataset the installed plugins provide."""
    entries = [
        {
            "kind": e.kind,
            "name": e.name,
            "domain": e.domain,
            "distribution": e.distribution,
            "version": e.version,
            "description": e.description,
        }
        for e in plugins.registry()
    ]
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    table = Table("kind", "name", "domain", "distribution", "description")
    for e in entries:
        table.add_row(e["kind"], e["name"], e["domain"], f"{e['distribution']} {e['version']}", e["description"])
    console.print(table)


def _train(kind: str, name: str, dataset: str | None, data_root: Path | None, out: Path, seed: int, overwrite: bool,
           options: list[str], model_options: list[str], devices: int, strategy: str, num_nodes: int) -> None:
    cls = plugins.get(kind, name)
    if devices < 1 or num_nodes < 1:
        raise ArproError("--devices and --num-nodes must be at least 1")
    data = load_dataset(dataset, data_root, domain=cls.domain, **parse_options(options, "--option"))
    if data.domain != cls.domain:
        raise ArproError(f"{kind} {name!r} works on {cls.domain} data, dataset {data.name!r} is {data.domain}")
    if out.exists() and not overwrite:
        raise ArproError(f"{out} already exists; pass --overwrite to replace it")
    overrides = parse_options(model_options, "--model-option")
    try:
        model = cls.for_dataset(data, **overrides)
    except TypeError as error:
        raise ArproError(f"{kind} {name!r} does not take --model-option {', '.join(overrides)}: {error}") from None
    if devices * num_nodes == 1:  # the plain single-process loop, exactly as the bundled checkpoints were trained
        model.fit(data.train().x, seed=seed, progress=True)
    else:  # every rank trains (DDP keeps them equal); rank 0 writes the checkpoint
        fabric = launch_fabric(devices, strategy, num_nodes)
        with use_fabric(fabric):
            model.fit(data.train().x, seed=seed, progress=True)
        fabric.barrier()
        if fabric.global_rank != 0:
            return
    checkpoint.save(model, out)
    console.print(f"saved {kind} {name!r} trained on {data.name} to {out}")


DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="NAME or NAME:CATEGORY; default: the domain's embedded dataset.")]
DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", help="Where the dataset lives (a folder or a file).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same result on CPU.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing results.")]
OptionOpt = Annotated[Optional[list[str]], typer.Option("--option", help="Dataset option KEY=VALUE, e.g. image_size=256 (repeatable).")]
ModelOptionOpt = Annotated[Optional[list[str]], typer.Option("--model-option", help="Model config KEY=VALUE, e.g. preset=paper (repeatable).")]
DevicesOpt = Annotated[int, typer.Option("--devices", help="Processes on this node (Lightning Fabric).")]
StrategyOpt = Annotated[str, typer.Option("--strategy", help="Fabric strategy when --devices > 1, e.g. ddp.")]
NumNodesOpt = Annotated[int, typer.Option("--num-nodes", help="Nodes, for Lightning's multi-node launch.")]


@train_app.command("detector")
def train_detector(
    detector: Annotated[str, typer.Option("--detector", help="Detector name (see list-plugins).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (.safetensors).")],
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    seed: SeedOpt = 0,
    option: OptionOpt = None,
    model_option: ModelOptionOpt = None,
    devices: DevicesOpt = 1,
    strategy: StrategyOpt = "ddp",
    num_nodes: NumNodesOpt = 1,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fit a detector on normal samples, calibrate its thresholds tau, save a checkpoint."""
    _train("detector", detector, dataset, data_root, out, seed, overwrite, option or [], model_option or [],
           devices, strategy, num_nodes)


@train_app.command("repairer")
def train_repairer(
    repairer: Annotated[str, typer.Option("--repairer", help="Repairer name (see list-plugins).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (.safetensors).")],
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    seed: SeedOpt = 0,
    option: OptionOpt = None,
    model_option: ModelOptionOpt = None,
    devices: DevicesOpt = 1,
    strategy: StrategyOpt = "ddp",
    num_nodes: NumNodesOpt = 1,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a diffusion repairer on normal samples and save a checkpoint."""
    _train("repairer", repairer, dataset, data_root, out, seed, overwrite, option or [], model_option or [],
           devices, strategy, num_nodes)


class Scheduler(str, Enum):
    ddpm = "ddpm"
    ddim = "ddim"


class Start(str, Enum):
    noise = "noise"
    sdedit = "sdedit"


class GuideOn(str, Enum):
    xt = "xt"
    x0 = "x0"


class EtaSchedule(str, Enum):
    sigma = "sigma"
    constant = "constant"


PropertiesOpt = Annotated[Optional[list[str]], typer.Option("--property", help="Guiding property (repeatable); default p1..p4.")]
WeightsOpt = Annotated[Optional[list[str]], typer.Option("--weight", help="lambda of a property, e.g. p2=10 (repeatable).")]
# Repair settings: an option left out takes the detector's repair_defaults, else RepairSettings' default.
StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="Denoising steps over the full schedule [default: 50].")]
SchedulerOpt = Annotated[Optional[Scheduler], typer.Option("--scheduler", help="[default: ddim]")]
StartOpt = Annotated[Optional[Start], typer.Option("--start", help="noise: from x_T (paper); sdedit: from the prefilled input at t0 [default: sdedit].")]
T0Opt = Annotated[Optional[float], typer.Option("--t0", help="SDEdit start level, a fraction of T [default: 0.6].")]
GuideOnOpt = Annotated[Optional[GuideOn], typer.Option("--guide-on", help="xt: gradient at x_t (paper); x0: at the denoised estimate [default: xt].")]
ScaleOpt = Annotated[Optional[float], typer.Option("--guidance-scale", help="Overall eta; default: the detector's.")]
EtaScheduleOpt = Annotated[Optional[EtaSchedule], typer.Option("--eta-schedule", help="[default: sigma]")]
GradClipOpt = Annotated[Optional[float], typer.Option("--grad-clip", help="Cap on each sample's gradient RMS; 0: raw gradient (paper) [default: 1.0].")]
InfillStopOpt = Annotated[Optional[float], typer.Option("--infill-stop", help="In-fill only while t >= this fraction of T; later steps regenerate the whole input [default: 0, the paper].")]
MaskOpt = Annotated[str, typer.Option("--mask", help="train (paper: alpha >= tau), top (input's top quantile), truth, or a .npy file.")]
DetectorCkptOpt = Annotated[Optional[Path], typer.Option("--detector-checkpoint")]
RepairerCkptOpt = Annotated[Optional[Path], typer.Option("--repairer-checkpoint")]
RepairerOpt = Annotated[Optional[str], typer.Option("--repairer", help="Repairer name; default: the domain's.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


@app.command()
def repair(
    out: Annotated[Path, typer.Option("--out", help="Output directory for the report and the repairs.")],
    detector: Annotated[str, typer.Option("--detector", help="Detector name.")],
    repairer: RepairerOpt = None,
    input_path: Annotated[Optional[Path], typer.Option("--input", help="Input file; default: anomalous samples of the embedded dataset.")] = None,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    option: OptionOpt = None,
    count: Annotated[int, typer.Option("--count", help="Anomalous samples to repair when no --input is given.")] = 8,
    properties: PropertiesOpt = None,
    weights: WeightsOpt = None,
    steps: StepsOpt = None,
    scheduler: SchedulerOpt = None,
    start: StartOpt = None,
    t0: T0Opt = None,
    guide_on: GuideOnOpt = None,
    guidance_scale: ScaleOpt = None,
    eta_schedule: EtaScheduleOpt = None,
    grad_clip: GradClipOpt = None,
    infill_stop: InfillStopOpt = None,
    mask: MaskOpt = "train",
    mask_quantile: Annotated[float, typer.Option("--mask-quantile", help="Quantile for --mask top.")] = 0.9,
    delta2: Annotated[Optional[float], typer.Option("--delta2", help="P2 tolerance on L2; default 0.01 per element of omega_bar.")] = None,
    delta4: Annotated[Optional[float], typer.Option("--delta4", help="P4 tolerance; default 0.1 x std of training scores.")] = None,
    detector_checkpoint: DetectorCkptOpt = None,
    repairer_checkpoint: RepairerCkptOpt = None,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Repair anomalous inputs: baseline, unguided in-filling and guided repair, judged by P1–P4."""
    request = RepairRequest(
        detector=detector,
        repairer=repairer,
        input_path=input_path,
        dataset=dataset,
        data_root=data_root,
        dataset_options=parse_options(option or [], "--option"),
        count=count,
        properties=properties or ["p1", "p2", "p3", "p4"],
        settings=settings_from(detector, steps, scheduler, start, t0, guide_on, guidance_scale, eta_schedule, grad_clip, infill_stop, weights),
        mask=mask,
        mask_quantile=mask_quantile,
        delta2=delta2,
        delta4=delta4,
        detector_checkpoint=detector_checkpoint,
        repairer_checkpoint=repairer_checkpoint,
        seed=seed,
        progress=not quiet,
    )
    with staged_output(out, overwrite) as stage:
        result, data, batch = run_repair(request)
        report = {"arpro_version": __version__, "request": request.to_dict(), **result.to_dict()}
        (stage / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        written = data.write_repairs(result, stage, batch)
    print_report(result)
    for message in result.messages:
        console.print(f"[yellow]note:[/yellow] {message}")
    names = [p.name for p in [out / "report.json", *written]]
    shown = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:2])}, {names[-1]} and {len(names) - 3} more"
    console.print(f"wrote {shown} to {out}")


@app.command()
def evaluate(
    out: Annotated[Path, typer.Option("--out", help="Run directory: records.jsonl, tables.md/csv, summary.json.")],
    detector: Annotated[str, typer.Option("--detector", help="Detector name.")],
    repairer: RepairerOpt = None,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    categories: Annotated[Optional[list[str]], typer.Option("--category", help="Category (repeatable); default: all.")] = None,
    option: OptionOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many anomalous inputs per category.")] = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Inputs repaired per batch (and per resume unit).")] = 16,
    properties: PropertiesOpt = None,
    weights: WeightsOpt = None,
    steps: StepsOpt = None,
    scheduler: SchedulerOpt = None,
    start: StartOpt = None,
    t0: T0Opt = None,
    guide_on: GuideOnOpt = None,
    guidance_scale: ScaleOpt = None,
    eta_schedule: EtaScheduleOpt = None,
    grad_clip: GradClipOpt = None,
    infill_stop: InfillStopOpt = None,
    mask: Annotated[str, typer.Option("--mask", help="train (paper), top, or truth (ground-truth masks).")] = "train",
    detector_checkpoint: DetectorCkptOpt = None,
    repairer_checkpoint: RepairerCkptOpt = None,
    seed: SeedOpt = 0,
    devices: DevicesOpt = 1,
    strategy: StrategyOpt = "ddp",
    num_nodes: NumNodesOpt = 1,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate over a dataset: baseline vs in-filling vs guided, the paper's tables; resumable."""
    from arpro import evaluate as ev
    from arpro.progress import progress_bar

    settings = settings_from(detector, steps, scheduler, start, t0, guide_on, guidance_scale, eta_schedule, grad_clip, infill_stop, weights)
    if chunk_size < 1 or (limit is not None and limit < 1) or devices < 1 or num_nodes < 1:
        raise ArproError("--chunk-size, --limit, --devices and --num-nodes must be at least 1")
    config = {
        "arpro_version": __version__,
        "detector": detector,
        "repairer": repairer,
        "dataset": dataset,
        "data_root": str(data_root) if data_root else None,
        "dataset_options": parse_options(option or [], "--option"),
        "categories": categories or [],
        "limit": limit,
        "chunk_size": chunk_size,
        "properties": properties or ["p1", "p2", "p3", "p4"],
        "settings": settings.to_dict(),
        "mask": mask,
        "detector_checkpoint": str(detector_checkpoint) if detector_checkpoint else None,
        "repairer_checkpoint": str(repairer_checkpoint) if repairer_checkpoint else None,
        "seed": seed,
    }
    resume = ev.check_run_dir(out, config, overwrite)
    fabric = launch_fabric(devices, strategy, num_nodes)
    rank, world = fabric.global_rank, fabric.world_size
    jobs = ev.build_jobs(
        detector=detector, repairer=repairer, dataset=dataset, data_root=data_root, categories=categories or [],
        dataset_options=config["dataset_options"], settings=settings, properties=config["properties"], mask=mask, seed=seed, chunk_size=chunk_size, limit=limit,
        detector_checkpoint=detector_checkpoint, repairer_checkpoint=repairer_checkpoint, progress=not quiet and rank == 0,
    )
    if rank == 0:
        ev.start_run_dir(out, config, resume)
    fabric.barrier()
    total = sum(len(j.anomalous) for j in jobs)
    with progress_bar("evaluating", total=total, enabled=not quiet and rank == 0) as advance:
        ev.evaluate(jobs, out, advance=lambda n: [advance() for _ in range(n)], shard=(rank, world))
    fabric.barrier()
    if rank != 0:
        return
    ev.merge_shards(out, world)
    summary = ev.summarize(ev.read_jsonl(out / ev.RECORDS), ev.read_jsonl(out / ev.TIMINGS))
    ev.write_tables(out, summary)
    for job in jobs:
        ev.write_gallery(job, out)
    print_summary(summary)
    console.print(f"wrote records.jsonl, tables.md, tables.csv, summary.json, gallery/ to {out}; `arpro report {out}` makes an HTML page")


@app.command()
def ablate(
    out: Annotated[Path, typer.Option("--out", help="Output directory: ablation.json/csv and one plot per metric.")],
    detector: Annotated[str, typer.Option("--detector", help="Detector name.")],
    repairer: RepairerOpt = None,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    category: Annotated[Optional[str], typer.Option("--category", help="Category to ablate on; default: the first.")] = None,
    option: OptionOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Anomalous inputs (the paper used 100).")] = 100,
    grid: Annotated[str, typer.Option("--grid", help="Comma-separated values for each lambda and the scale multiplier.")] = "0.1,0.5,1,2,5,10",
    properties: PropertiesOpt = None,
    steps: StepsOpt = None,
    scheduler: SchedulerOpt = None,
    start: StartOpt = None,
    t0: T0Opt = None,
    guide_on: GuideOnOpt = None,
    guidance_scale: ScaleOpt = None,
    eta_schedule: EtaScheduleOpt = None,
    grad_clip: GradClipOpt = None,
    infill_stop: InfillStopOpt = None,
    mask: Annotated[str, typer.Option("--mask", help="train (paper), top, or truth.")] = "train",
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """RQ2 ablation: vary each lambda_k (others at 1.0) and the overall guidance scale; plot each metric."""
    import csv

    from arpro import ablation
    from arpro import evaluate as ev

    try:
        values = [float(v) for v in grid.split(",") if v.strip()]
    except ValueError:
        raise ArproError(f"--grid expects comma-separated numbers, got {grid!r}") from None
    if not values or min(values) <= 0:
        raise ArproError("--grid values must be positive")
    settings = settings_from(detector, steps, scheduler, start, t0, guide_on, guidance_scale, eta_schedule, grad_clip, infill_stop, [])
    with staged_output(out, overwrite) as stage:
        jobs = ev.build_jobs(
            detector=detector, repairer=repairer, dataset=dataset, data_root=data_root,
            categories=[category] if category else [], dataset_options=parse_options(option or [], "--option"), settings=settings,
            properties=properties or ["p1", "p2", "p3", "p4"], mask=mask, seed=seed, chunk_size=limit, limit=limit,
            progress=not quiet,
        )
        rows = ablation.ablate(jobs[0], values, progress=not quiet)
        (stage / "ablation.json").write_text(json.dumps({"category": jobs[0].category, "settings": settings.to_dict(), "rows": rows}, indent=2) + "\n")
        with (stage / "ablation.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plots = ablation.plot_ablation(rows, stage)
    table = Table("parameter", "value", "Ms", "Md", "Mω", "Mω̄", "all hold", title=f"ablation on {jobs[0].category} ({len(jobs[0].anomalous)} inputs, guided)")
    for r in rows:
        table.add_row(r["parameter"], f"{r['value']:g}", *[f"{r[m]:.4g}" for m in ev.METRICS], f"{r['all_hold']:.2f}")
    console.print(table)
    console.print(f"wrote ablation.json, ablation.csv, {', '.join(p.name for p in plots)} to {out}")


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A directory written by arpro evaluate (and/or arpro ablate).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="HTML file; default RESULTS/report.html.")] = None,
    ablation_dir: Annotated[Optional[Path], typer.Option("--ablation", help="An arpro ablate directory to include.")] = None,
) -> None:
    """Write one self-contained HTML page: tables, ablation plots, a gallery of repairs, settings, versions."""
    from arpro.report import write_report

    path = write_report(results, out or results / "report.html", ablation_dir)
    console.print(f"wrote {path}")


def print_summary(summary: dict) -> None:
    """One row per (category, metric): each arm's mean ± std and how often the property holds; then Δ."""
    from arpro.evaluate import METRICS, PROPERTY_OF

    arms = summary["arms"]
    table = Table(title="mean ± std (fraction where the property holds); lower is better")
    for column in ("category", "metric", *arms, "Δ vs baseline"):
        table.add_column(column, justify="left" if column in ("category", "metric") else "right")
    for category, entry in summary["categories"].items():
        for metric in METRICS:
            cells = []
            for arm in arms:
                s = entry[arm].get(metric)
                cells.append(f"{s['mean']:.4g} ± {s['std']:.2g} ({s['holds']:.2f})" if s else "–")
            delta = summary["delta"][metric] if len(summary["categories"]) == 1 else None
            table.add_row(category, f"{PROPERTY_OF[metric].upper()} {metric}", *cells, f"{delta:+.1f}%" if delta is not None else "")
        table.add_row(category, "all hold", *[f"{entry[a]['all_hold']:.2f}" for a in arms], "")
        table.add_row(category, "TNR", *[f"{entry[a]['tnr']:.2f}" for a in arms], "")
        table.add_row(category, "median s", *[f"{entry[a]['median_seconds']:.3f}" for a in arms], "", end_section=True)
    if len(summary["categories"]) > 1:
        table.add_row("Δ (median over categories)", "", *[""] * len(arms),
                      " ".join(f"{m} {v:+.1f}%" for m, v in summary["delta"].items() if v is not None))
    console.print(table)


def settings_from(detector, steps, scheduler, start, t0, guide_on, guidance_scale, eta_schedule, grad_clip, infill_stop, weights) -> RepairSettings:
    """The options given, over the detector's ``repair_defaults``, over RepairSettings' defaults."""
    given = dict(steps=steps, scheduler=scheduler, start=start, t0=t0, guide_on=guide_on,
                 guidance_scale=guidance_scale, eta_schedule=eta_schedule, grad_clip=grad_clip,
                 infill_stop=infill_stop)
    given = {k: v.value if isinstance(v, Enum) else v for k, v in given.items() if v is not None}
    if weights:
        given["weights"] = parse_weights(weights)
    return RepairSettings.for_detector(plugins.get("detector", detector), **given)


def parse_options(items: list[str], flag: str) -> dict:
    """``["image_size=256", "preset=paper"]`` -> ``{"image_size": 256, "preset": "paper"}`` (JSON values where they parse)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArproError(f"{flag} expects KEY=VALUE; got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def parse_weights(items: list[str]) -> dict[str, float]:
    """``["p2=10", "p4=0.5"]`` -> ``{"p2": 10.0, "p4": 0.5}``."""
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ArproError(f"--weight expects NAME=NUMBER, e.g. p2=10; got {item!r}")
    return weights


def print_report(result) -> None:
    """The four properties, baseline vs in-filling vs guided: mean metric and how often each holds."""
    table = Table(title=f"{len(result)} input(s): mean metric (fraction where the property holds)")
    table.add_column("property")
    for arm in result.arms:
        table.add_column(arm, justify="right")
    for prop, metric in result.metric_names.items():
        cells = []
        for arm in result.arms.values():
            cells.append(f"{arm.metrics[metric].mean().item():.4g} ({arm.holds[prop].float().mean().item():.2f})")
        table.add_row(f"{prop.upper()} {metric}", *cells)
    table.add_row("all hold", *[f"{a.all_hold.float().mean().item():.2f}" for a in result.arms.values()])
    table.add_row("seconds", *[f"{a.seconds:.1f}" for a in result.arms.values()])
    console.print(table)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    pm, _ = plugins.plugin_manager()
    try:
        pm.hook.arpro_register_commands(cli=app)
        app()
    except ArproError as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
