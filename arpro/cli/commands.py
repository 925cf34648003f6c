"""The ``arpro`` command line (typer + rich): it parses options into a :class:`RunSpec` and prints.

Every command that repairs takes the same run options: :class:`RunSpec`'s, and one generated
per :class:`RepairSettings` field. Plugins add commands through ``arpro_register_commands``,
called only when the command line names a command the core lacks, so that the core's commands
(and ``--help``, ``--version``) start without loading any plugin.
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.main import get_command_name

from arpro._version import __version__
from arpro.algorithm.settings import (MAX_SAMPLES, MAX_SEED, RepairSettings, option_name, parse_arms, parse_counts,
                                      parse_grid, parse_options, parse_weights)
from arpro.cli.options import (AblateLimit, AllowUncertified, Arms, Calibration, Categories, Category, CheckLimit,
                               ChunkSize, Count, Devices, EarlyStop, Figure, Fraction, Grid, Holdout, InputFile, KeepGoing, Limit,
                               NumNodes, Risk, SamplesGrid, ScaleGrid, Strategy, WeightGrid)
from arpro.errors import ArproError

app = typer.Typer(
    name="arpro",
    help="Explain anomalies by repairing them (AR-Pro): property-guided diffusion with formal guarantees.",
    epilog="Commands that plugins add are not listed here: see each plugin's documentation.",
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


def _option(name: str, kind: object, help: str, flag: str | None = None, **extra) -> inspect.Parameter:
    option = typer.Option(flag or option_name(name), help=help, **extra)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, option], default=None)


DATASET_PARAMS = [
    _option("dataset", Optional[str], "NAME or NAME:CATEGORY; default: the domain's embedded dataset."),
    _option("data_root", Optional[Path], "Where the dataset lives (a folder or a file)."),
    _option("option", Optional[list[str]], "Dataset option KEY=VALUE, e.g. image_size=256 (repeatable)."),
]
SEED_PARAM = inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=Annotated[
    int, typer.Option("--seed", min=0, max=MAX_SEED, help="Random seed, 0 to 2^32 - 1; same seed, same result on CPU.")])
DEVICE_PARAMS = [
    inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default="auto", annotation=Annotated[str, typer.Option(
        "--device", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps: where the models run.")]),
    inspect.Parameter("precision", inspect.Parameter.KEYWORD_ONLY, default="32", annotation=Annotated[str, typer.Option(
        "--precision", help="32 (bit-stable), bf16-mixed or 16-mixed (GPU only): Lightning Fabric's autocast.")]),
    _option("threads", Optional[int], "torch's CPU threads; default: ARPRO_NUM_THREADS, else OMP_NUM_THREADS, "
            "else the free cores (usable CPUs less the load average), at least 1."),
]
RUN_PARAMS = [
    inspect.Parameter("detector", inspect.Parameter.KEYWORD_ONLY,
                      annotation=Annotated[str, typer.Option("--detector", help="Detector name (see list-plugins).")]),
    _option("repairer", Optional[str], "Repairer name; default: the domain's (repair and check take its "
            "training-free one where the default has no checkpoint for the dataset)."),
    *DATASET_PARAMS,
    _option("detector_checkpoint", Optional[Path], "Detector checkpoint; default: the bundled one, else train now."),
    _option("repairer_checkpoint", Optional[Path], "Repairer checkpoint; default: the bundled one, else train now "
            "(a named --repairer; see --repairer)."),
    _option("property", Optional[list[str]], "Guiding property NAME[:KEY=VALUE,...] (repeatable; a;b is a list); "
            "+NAME adds to the default p1 p2 p3 p4."),
    SEED_PARAM,
    *DEVICE_PARAMS,
]


def _setting_param(f, kind: object) -> inspect.Parameter:
    meta = f.metadata
    if meta.get("choices"):
        kind = Enum(f.name, {c: c for c in meta["choices"]}, type=str)
    elif f.name == "weights":
        kind = list[str]
    default = "" if f.default is None or f.name == "weights" else f" (default: {f.default})"
    return _option(f.name, Optional[kind], meta["help"] + default, meta.get("flag"))


OUTPUT_PARAMS = [
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY,
                      annotation=Annotated[Path, typer.Option("--out", help="Where to write: the results folder (calibrate: the "
                                                                         "calibration.json file).")]),
    inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, typer.Option("--overwrite", help="Replace existing results.")]),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, typer.Option("--quiet", help="No progress bars.")]),
]
SETTING_PARAMS = [_setting_param(f, typing.get_type_hints(RepairSettings)[f.name]) for f in fields(RepairSettings)]


def with_run_options(command):
    """Give ``command`` the run options; it receives the :class:`RunSpec` they describe as ``spec``.

    A setting left out takes the detector's ``repair_defaults``, else the default shown.
    """
    named = inspect.signature(command, eval_str=True).parameters
    outputs = [p for p in OUTPUT_PARAMS if p.name in named]  # a command that writes nothing takes only --quiet
    own = [p for p in named.values() if p.name not in {"spec", *(p.name for p in outputs)}]
    taken = [p.name for p in RUN_PARAMS + SETTING_PARAMS]

    @functools.wraps(command)
    def wrapper(**kwargs):
        from arpro.io.run_spec import RunSpec
        from arpro.runtime.threads import use_threads

        if "out" in kwargs and Path(kwargs["out"]) == Path("."):  # --out "" is the current folder too
            raise ArproError("--out must name a folder or file of its own, not the current folder")
        given = {name: kwargs.pop(name) for name in taken}
        use_threads(given.pop("threads"))
        settings = {f.name: given.pop(f.name) for f in fields(RepairSettings)}
        settings = {k: v.value if isinstance(v, Enum) else v for k, v in settings.items() if v is not None}
        if "weights" in settings:
            settings["weights"] = parse_weights(settings["weights"])
        spec = RunSpec(
            detector=given["detector"], repairer=given["repairer"], dataset=given["dataset"],
            data_root=given["data_root"], dataset_options=parse_options(given["option"] or [], "--option"),
            detector_checkpoint=given["detector_checkpoint"], repairer_checkpoint=given["repairer_checkpoint"],
            properties=given["property"] or RunSpec.properties, settings=settings, seed=given["seed"],
            device=given["device"], precision=given["precision"],
        )
        return command(spec=spec, **kwargs)

    wrapper.__signature__ = inspect.Signature([*outputs, *[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own],
                                               *RUN_PARAMS, *SETTING_PARAMS])
    wrapper.__annotations__ = {}
    return wrapper


@app.command("repair")
@with_run_options
def repair_command(spec, out: Path, overwrite: bool, quiet: bool, input_path: InputFile = None, count: Count = 8,
           keep_going: KeepGoing = False, calibration: Calibration = None, allow_uncertified: AllowUncertified = False,
           figure: Figure = False, arms: Arms = "guided") -> None:
    """Repair anomalous inputs (the guided repair; --arms adds its unguided comparisons), judged by P1–P4."""
    from arpro.cli.display import check_failures, console, print_report, print_trust
    from arpro.io.run_spec import repair_into
    from arpro.plugin_api import registry

    from arpro.workflows.calibrate import applied, apply

    spec, record = apply(spec, calibration, allow_uncertified)
    result, written = repair_into(out, spec, input_path=input_path, count=count, overwrite=overwrite,
                                  exclude=record["calibration_ids"] if record else (), progress=not quiet, figure=figure,
                                  arms=parse_arms(arms), calibration=applied(record))
    print_report(result, {p: f"{p.upper()} {registry.get('property', p).label()}" for p in result.metric_names})
    for message in result.messages:
        console.print(f"[yellow]note:[/yellow] {message}")
    print_trust(result)
    names = [p.name for p in written]
    shown = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:2])}, {names[-1]} and {len(names) - 3} more"
    console.print(f"wrote {shown} to {out}" + ("" if figure else " (--figure draws repair.png)"))
    check_failures(result.failures(), keep_going, str(out / "report.json"))


@app.command()
@with_run_options
def evaluate(spec, out: Path, overwrite: bool, quiet: bool, categories: Categories = None, limit: Limit = None,
             chunk_size: ChunkSize = None, devices: Devices = 1, strategy: Strategy = "ddp", num_nodes: NumNodes = 1,
             keep_going: KeepGoing = False, calibration: Calibration = None,
             allow_uncertified: AllowUncertified = False) -> None:
    """Evaluate over a dataset: baseline vs in-filling vs guided, the paper's tables; resumable."""
    from arpro.cli.display import check_failures, console, print_summary
    from arpro.workflows import evaluate as ev

    from arpro.workflows.calibrate import apply

    spec, record = apply(spec, calibration, allow_uncertified)
    summary = ev.run(spec, out, categories=categories or [], limit=limit, chunk_size=chunk_size, devices=devices,
                     strategy=strategy, num_nodes=num_nodes, overwrite=overwrite, calibration=record, progress=not quiet)
    if summary is not None:  # rank 0
        print_summary(summary)
        console.print(f"wrote records.jsonl, tables.md, tables.csv, summary.json, gallery/ to {out}; "
                      f"`arpro report {out}` makes an HTML page")
        check_failures(ev.failed_repairs(out), keep_going, str(out / ev.RECORDS))


@app.command()
@with_run_options
def ablate(spec, out: Path, overwrite: bool, quiet: bool, category: Category = None, limit: AblateLimit = 100,
           grid: Grid = "0.1,0.5,1,2,5,10") -> None:
    """RQ2 ablation: vary each guiding property's lambda and the overall guidance scale; plot each metric."""
    from arpro.cli.display import console, print_ablation
    from arpro.workflows import ablate

    rows, labels, title, written = ablate.run(spec, out, category=category, limit=limit, grid=parse_grid(grid),
                                                overwrite=overwrite, progress=not quiet)
    print_ablation(rows, labels, title)
    console.print(f"wrote {', '.join(p.name for p in written)} to {out}")


@app.command()
@with_run_options
def calibrate(spec, out: Path, overwrite: bool, quiet: bool, risk: Risk = 0.1, scale_grid: ScaleGrid = "0.5,1,2",
              weight_grid: WeightGrid = "1,10,100", samples_grid: SamplesGrid = "1,4,16", fraction: Fraction = 0.5) -> None:
    """Eq. 1 with a guarantee: certify repair settings (Learn-then-Test) on a calibration split; write calibration.json."""
    from arpro.cli.display import console
    from arpro.workflows.calibrate import calibrate as learn_then_test

    record = learn_then_test(spec, out, risk=risk, scales=parse_grid(scale_grid, "--scale-grid"),
                             weights=parse_grid(weight_grid, "--weight-grid"),
                             samples=parse_counts(samples_grid, "--samples-grid", MAX_SAMPLES),
                             fraction=fraction, overwrite=overwrite, progress=not quiet)
    console.print(f"certified {record['chosen']} ({record['n']} calibration inputs); {record['guarantee']}")
    console.print(f"wrote {out}; apply it with `arpro repair|evaluate --calibration {out}`")


@app.command()
@with_run_options
def check(spec, quiet: bool, limit: CheckLimit = 16) -> None:
    """Before explaining: the detector's AUROC and F1, the repairer's in-fill against a naive fill, how often
    the default repair keeps P1–P4; one verdict line. Exit status 0: ok, 1: problems found."""
    from arpro.cli.display import print_check
    from arpro.workflows.check import record, run_check

    report = run_check(spec, limit=limit, progress=not quiet)
    print_check(report)
    if (written := record(spec, report)) is not None:
        print(f"note: recorded the check in {written}", file=sys.stderr)
    raise typer.Exit(0 if report["verdict"] == "ok" else 1)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A directory written by arpro evaluate (and/or arpro ablate).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="HTML file; default RESULTS/report.html.")] = None,
    ablation_dir: Annotated[Optional[Path], typer.Option("--ablation", help="An arpro ablate directory to include.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing HTML file.")] = False,
) -> None:
    """Write one self-contained HTML page: tables, ablation plots, a gallery of repairs, settings, versions."""
    from arpro.cli.display import console
    from arpro.workflows.report import write_report

    console.print(f"wrote {write_report(results, out or results / 'report.html', ablation_dir, overwrite)}")


@app.command("list-plugins")
def list_plugins(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False) -> None:
    """List every detector, repairer, property and dataset the installed plugins provide."""
    from arpro.cli.display import print_plugins

    print_plugins(as_json)


def train_command(kind: str):
    """``arpro train KIND``: the same options for detectors and repairers."""

    def train(
        name: Annotated[str, typer.Option(f"--{kind}", help=f"{kind.capitalize()} name (see list-plugins).")],
        out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (.safetensors).")],
        model_option: Annotated[Optional[list[str]], typer.Option("--model-option", help="Model config KEY=VALUE, e.g. preset=paper (repeatable).")] = None,
        devices: Devices = 1,
        strategy: Strategy = "ddp",
        num_nodes: NumNodes = 1,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint.")] = False,
        holdout: Holdout = 0.1,
        early_stop: EarlyStop = True,
        checkpoint_format: Annotated[str, typer.Option("--format", help="arpro (a .safetensors file) or the model's "
                                                       "own folder format, e.g. diffusers for ddpm.")] = "arpro",
        **dataset_options,
    ) -> None:
        from arpro.cli.display import console
        from arpro.runtime.threads import use_threads
        from arpro.workflows.train import train_and_save

        use_threads(dataset_options.pop("threads"))
        dataset_options["dataset_options"] = parse_options(dataset_options.pop("option") or [], "--option")
        model = train_and_save(kind, name, out, overwrite=overwrite, model_options=parse_options(model_option or [], "--model-option"),
                               devices=devices, strategy=strategy, num_nodes=num_nodes, holdout=holdout, early_stop=early_stop,
                               checkpoint_format=checkpoint_format, **dataset_options)
        if model is not None:
            console.print(f"saved {kind} {name!r} to {out}")

    own = [p for p in list(inspect.signature(train, eval_str=True, locals={"kind": kind}).parameters.values())[:-1]
           if kind == "repairer" or p.name not in ("holdout", "early_stop")]  # only a repairer is validated
    train.__signature__ = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
                                            + [SEED_PARAM, *DEVICE_PARAMS, *DATASET_PARAMS])
    train.__annotations__ = {}
    train.__doc__ = {"detector": "Fit a detector on normal samples, calibrate its thresholds tau, save a checkpoint.",
                     "repairer": "Train a diffusion repairer on normal samples and save a checkpoint."}[kind]
    return train


train_app.command("detector")(train_command("detector"))
train_app.command("repairer")(train_command("repairer"))


def main() -> None:
    """Entry point: a user error, usage errors included, is one ``error:`` line on stderr, exit status 2
    (:func:`arpro.cli.exits.exit_code` says how each way of ending becomes a status)."""
    from arpro.cli.exits import exit_code

    def run() -> object:
        if names_a_plugin_command(sys.argv[1:]):
            from arpro.plugin_api import registry

            registry.plugin_manager()[0].hook.arpro_register_commands(cli=app)
        return app(standalone_mode=False)

    sys.exit(exit_code(run))


def names_a_plugin_command(args: list[str]) -> bool:
    """Whether the command named in ``args`` is not the core's: only then are plugins loaded before parsing."""
    command = next((arg for arg in args if not arg.startswith("-")), None)  # the root's options take no value
    core = {c.name or get_command_name(c.callback.__name__) for c in app.registered_commands}
    return command is not None and command not in core | {g.name for g in app.registered_groups}

