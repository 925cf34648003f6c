"""The core's shape: imports form a DAG down its layers, settings are declared once, models record their config."""

from __future__ import annotations

import ast
import importlib
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import arpro
from arpro import ArproError
from arpro.algorithm.settings import RepairSettings, option_name
from arpro.cli import app
from arpro.io import checkpoint
from arpro.plugin_api import registry

CORE = Path(arpro.__file__).parent


def module_name(path: Path) -> str:
    """``arpro/io/run_spec.py`` -> ``io.run_spec``; a package's ``__init__`` is the package; the root is ``arpro``."""
    parts = path.relative_to(CORE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "arpro"


def core_imports() -> dict[str, set[str]]:
    """Every ``arpro.*`` module each core module (subpackages included) imports, at any depth of its code."""
    modules = {module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "arpro":
                package = node.module.removeprefix("arpro").lstrip(".")
                for alias in node.names:  # from arpro.io import checkpoint: a submodule, else the module itself
                    submodule = f"{package}.{alias.name}".lstrip(".")
                    targets.add(submodule if submodule in modules else package or "arpro")
            elif isinstance(node, ast.Import):
                targets |= {a.name.removeprefix("arpro").lstrip(".") or "arpro" for a in node.names
                            if a.name.split(".")[0] == "arpro"}
        graph[name] = targets
    graph.pop("arpro")  # the root imports nothing but _version, lazily names the public API, and is checked below
    return graph


def test_core_imports_form_a_dag_with_nothing_importing_the_package_root():
    graph = core_imports()
    upward = {m for m, targets in graph.items() if "arpro" in targets}
    assert not upward, f"these modules import the arpro package root: {upward}"
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join(path + [module])}"
        state[module] = "open"
        for target in graph.get(module, ()):
            visit(target, path + [module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


# Each layer, top to bottom, and the layers it may import (the real graph, nothing more):
LAYERS = {
    # the kit plugins test themselves with: it builds, round-trips and repairs with models and runs the command
    # line, as a user would; nothing in the core imports it
    "testing": {"cli", "io", "algorithm", "plugin_api"},
    # the deprecated alias of io.checkpoint, which the plugin guide named before the move
    "checkpoint": {"io"},
    # the command line: parses options, calls a workflow or the repair, prints; nothing imports it
    "cli": {"workflows", "io", "algorithm", "runtime", "plugin_api", "errors", "_version"},
    # a command end to end (evaluate, ablate, calibrate, check, train, report): composes everything below
    "workflows": {"metrics", "io", "algorithm", "runtime", "plugin_api", "errors", "_version"},
    # files and runs; above the algorithm because the run spec turns options into models and calls the repair
    "io": {"algorithm", "runtime", "plugin_api", "errors", "_version"},
    # the paper's algorithm: settings, the guided loop, best-of-K, P1-P4; it reads and writes no files
    "algorithm": {"runtime", "plugin_api", "errors"},
    # AUROC, F1 and the conformal threshold: of a detector's scores, for workflows and plugins alike
    "metrics": {"plugin_api", "errors"},
    # devices, threads, progress: they place a plugin's model, so they sit just above the plugin API
    "runtime": {"plugin_api", "errors"},
    # what a plugin implements and calls: the bottom, so a plugin never pulls in a command or a workflow
    "plugin_api": {"errors", "_version"},
    "errors": set(),
    "_version": set(),
}


def test_layers_only_import_downward():
    """cli -> workflows -> io -> algorithm -> runtime -> plugin_api -> errors, with metrics beside the algorithm
    and the testing kit on top; the comments of LAYERS say why each layer sits where it does."""
    order = list(LAYERS)
    for layer, allowed in LAYERS.items():  # the table itself is a DAG: every edge goes down the list
        assert all(order.index(target) > order.index(layer) for target in allowed), (layer, allowed)
    crossings = {(m, t) for m, targets in core_imports().items() for t in targets if t.split(".")[0] != m.split(".")[0]}
    upward = sorted(f"{m} -> {t}" for m, t in crossings if t.split(".")[0] not in LAYERS[m.split(".")[0]])
    assert not upward, f"imports against the layers: {upward}"


def test_subpackage_inits_are_tiny():
    """Importing one layer must not pull in the others: a package's __init__ is its docstring (the cli's
    also names the typer app and the console script's entry point)."""
    for init in CORE.glob("*/__init__.py"):
        imports = core_imports()[module_name(init)]
        assert imports <= ({"cli.commands"} if init.parent.name == "cli" else set()), (init, imports)


def test_the_old_checkpoint_module_still_works_and_warns(monkeypatch):
    monkeypatch.delitem(sys.modules, "arpro.checkpoint", raising=False)
    with pytest.warns(DeprecationWarning, match="arpro.checkpoint moved to arpro.io.checkpoint"):
        old = importlib.import_module("arpro.checkpoint")
    assert old.save is checkpoint.save and old.load is checkpoint.load


def test_version_is_a_leaf_and_init_needs_no_noqa():
    assert core_imports()["_version"] == set()
    assert "noqa" not in (CORE / "__init__.py").read_text()


def test_core_size():
    lengths = {str(p.relative_to(CORE)): len(p.read_text().splitlines()) for p in CORE.rglob("*.py")}
    assert max(lengths.values()) <= 350, lengths  # cli/commands.py: every command's options are its surface
    # an afternoon's reading: hardening, certification (best-of-K, Learn-then-Test), configurable
    # properties, the hard constraints (arpro/plugin_api/constraints.py), the trust checks (arpro check, the
    # repairer's in-fill validation: check.py, checked.py, infill_quality.py), devices and precision
    # (devices.py), folder checkpoints, the thread policy (threads.py), the stacked arms and a failed run's
    # removal of the --out folders it created (outputs.py), evaluate's table by anomaly kind, the
    # top-train mask, check's detector-first order (no repairer trained for a detector that cannot be
    # trusted) and its advice, evaluate's warning on kinds whose repairs rarely score as normal, guide_at,
    # and train_denoiser's snr+1 (v-prediction) weighting; then the second hardening pass (limits.py, exits.py,
    # strict JSON, marked staging, certificates that cannot be voided), check's baseline detector and per-kind
    # AUROC, and the testing kit plugins call (testing.py); then omega against the labelled defect
    # (arpro/metrics.py), the gallery drawn from the run's own repairs (RepairResult.select), the progress
    # phases (no silent fit or scoring; runtime/progress.py), check's in-fill reference from the
    # training-free repairer, omega kept on the data, off a letterbox's padding (Split.valid,
    # InputBatch.valid), with mask_dilation; then the checks the plugins' own tests share (testing.py:
    # bundled checkpoints, in-fill masks, stacked arms, bad input) and the in-fill masks each repairer declares;
    # then the training-free fallback of a first repair or check (run_spec.training_free_fallback),
    # check's detail in omega against normal samples' (Dataset.detail_map, metrics.region_detail), and
    # training that converges sooner: EMA weights, warm-up, early stopping on the in-fill ratio, DPM-Solver++;
    # and diffusers imported without torch._dynamo (import_diffusers: 2 s of start-up); in-filling noise drawn
    # a block of steps at a time (engine._noise_per_step: an eighth of a K=16 repair), and one CPU process
    # trained without importing Lightning (devices.OneCpuProcess: 6.5 s of every training command)
    assert sum(lengths.values()) <= 6130


def test_public_api_exports_resolve():
    for name in arpro.__all__:
        assert getattr(arpro, name) is not None
    assert arpro.get("detector", "gaussian").name == "gaussian"
    assert arpro.train_denoiser.__module__ == "arpro.workflows.train"


@pytest.mark.parametrize("command", ["repair", "evaluate", "ablate"])
def test_every_setting_and_spec_field_is_an_option(command):
    """One declaration per setting: each RepairSettings field is an option of every command that repairs."""
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    flags = [f.metadata.get("flag", option_name(f.name)) for f in fields(RepairSettings)]
    flags += ["--detector", "--repairer", "--dataset", "--data-root", "--option", "--detector-checkpoint",
              "--repairer-checkpoint", "--property", "--seed"]
    missing = [flag for flag in flags if flag not in result.output]
    assert not missing, f"{command} --help lacks {missing}"


def test_settings_are_checked_when_made():
    with pytest.raises(ArproError, match="--steps must be at least 1"):
        RepairSettings(steps=0)
    with pytest.raises(ArproError, match="--scheduler must be ddpm or ddim"):
        RepairSettings(scheduler="euler")
    with pytest.raises(ArproError, match="--guidance-scale must be >= 0 and finite"):
        RepairSettings(guidance_scale=float("nan"))


def test_run_spec_applies_detector_defaults_and_checks_names():
    spec = arpro.RunSpec(detector="gpt2", settings={"steps": 7})
    assert spec.settings.steps == 7 and spec.settings.eta_schedule == "constant"  # gpt2's repair_defaults
    assert spec.repairer == "diffusion-ts"
    assert spec.to_dict()["settings"]["steps"] == 7
    with pytest.raises(ArproError, match="works on image data"):
        arpro.RunSpec(detector="gaussian", repairer="ddpm")
    with pytest.raises(ArproError, match="unknown property"):
        arpro.RunSpec(detector="gaussian", properties=["p9"])


def test_config_is_recorded_from_the_init_signature():
    detector = registry.get("detector", "autoencoder")(input_shape=[4], hidden=8)
    assert detector.config == {"input_shape": [4], "hidden": 8, "bottleneck": 8, "epochs": 300}
    rebuilt = type(detector)(**detector.config)
    assert rebuilt.config == detector.config


def test_checkpoint_with_an_unknown_config_key_is_refused(tmp_path, gaussian):
    path = checkpoint.save(gaussian, tmp_path / "g.safetensors")
    header = {"kind": "detector", "name": "gaussian", "config": {**gaussian.config, "bogus": 1}}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in gaussian.state_dict().items()}, path,
              metadata={"arpro": __import__("json").dumps(header)})
    with pytest.raises(ArproError, match="no config key"):
        checkpoint.load(path, "detector")
