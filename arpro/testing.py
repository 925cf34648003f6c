"""Checks a plugin's own tests call, as diffusers' model tester mixins are used: each one asserts a
part of arpro's contract for a detector, a repairer or a property, and fails with a message that
says what broke.

    from arpro.testing import check_checkpoint_round_trip, check_decomposition, fitted_detector

    def test_my_detector_obeys_the_contract(tmp_path):
        detector, x = fitted_detector("my-detector")
        check_decomposition(detector, x)
        check_checkpoint_round_trip(detector, tmp_path / "d.safetensors", x)

The built-in plugins' tests (``plugins/*/tests``) and the example plugin's use these same checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from arpro.algorithm.service import repair
from arpro.cli import main
from arpro.algorithm.settings import ARMS, RepairSettings
from arpro.io.checkpoint import load, read_header, save
from arpro.plugin_api import registry
from arpro.plugin_api.models import Detector, Model, Repairer
from arpro.plugin_api.protocols import Property, PropertyContext


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``arpro ARGS`` in a fresh process, as a user would: the exit status, stdout and stderr to assert on."""
    return subprocess.run([sys.executable, "-m", "arpro.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def check_one_error_line(args: list[str], fragment: str, cwd: Path, *unchanged: Path) -> None:
    """Bad input meets the project's rule: ``arpro ARGS``, run in this process (a fresh one per case would cost
    more than the case) in ``cwd``, exits with status 2 and one ``error:`` line on stderr that holds ``fragment``,
    prints no traceback, and writes or changes nothing in ``cwd`` or the ``unchanged`` folders."""
    def snapshot() -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
                for folder in (cwd, *unchanged) for p in sorted(Path(folder).rglob("*"))}

    before, err, argv, here = snapshot(), io.StringIO(), sys.argv, os.getcwd()
    sys.argv = ["arpro", *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
        os.chdir(here)
    text = err.getvalue()
    assert code == 2 and "Traceback" not in text, f"exit status {code}: {text}"
    assert text.count("\n") == 1 and text.startswith("error: ") and fragment in text, text
    assert snapshot() == before, "a bad input wrote or changed files"


def registered(distribution: str, kind: str = "detector") -> list[str]:
    """The names of the ``kind``s that ``distribution`` registers, sorted: a plugin's tests parametrize over them, so
    a model it adds is checked without being listed."""
    return sorted(e.name for e in registry.registry().entries[kind].values() if e.distribution == distribution)


def fitted_detector(name: str, n_train: int = 32, n_test: int = 4, **config: Any) -> tuple[Detector, Tensor]:
    """Detector ``name`` fitted (with its ``smoke_fit_options``: a few steps) on ``n_train`` training samples
    of its domain's embedded dataset, and ``n_test`` of its test samples to check it on."""
    cls = registry.get("detector", name)
    dataset = registry.get_default("dataset", cls.domain)()
    torch.manual_seed(0)
    detector = cls.for_dataset(dataset, **config)
    detector.fit(dataset.train().x[:n_train], seed=0, progress=False, **cls.smoke_fit_options)
    return detector.eval(), dataset.test().x[:n_test]


def fitted_repairer(name: str, n_train: int = 32, **config: Any) -> Repairer:
    """Repairer ``name`` fitted (with its ``smoke_fit_options``) on ``n_train`` training samples of its domain's
    embedded dataset: to check its checkpoint round trip and its in-fill masks, not its repairs."""
    cls = registry.get("repairer", name)
    dataset = registry.get_default("dataset", cls.domain)()
    torch.manual_seed(0)
    repairer = cls.for_dataset(dataset, **config)
    repairer.fit(dataset.train().x[:n_train], seed=0, progress=False, **cls.smoke_fit_options)
    return repairer.eval()


def check_infill_masks(repairer: Repairer, n: int = 3) -> None:
    """``Repairer.infill_masks``: each mask is ``[n, *X]`` of 0s and 1s, and leaves something known and something
    to fill."""
    masks = repairer.infill_masks(n, torch.Generator().manual_seed(0))
    assert masks, "infill_masks returned no mask"
    for name, mask in masks.items():
        assert mask.shape == (n, *repairer.x_mean.shape), f"mask {name!r} is {tuple(mask.shape)}, not [n, *X]"
        assert ((mask == 0) | (mask == 1)).all(), f"mask {name!r} holds values other than 0 and 1"
        assert (mask.flatten(1).sum(1) > 0).all() and (mask.flatten(1).sum(1) < mask[0].numel()).all(), \
            f"mask {name!r} fills nothing or everything of a sample"


def check_decomposition(detector: Detector, x: Tensor, rtol: float = 1e-5) -> None:
    """Paper Def. 2.1: ``s(x) = alpha(x).flatten(1).sum(1) + beta(x)`` exactly (up to ``rtol``), against the
    detector's independent ``reference_score`` where it has one; ``alpha`` is ``[B, *F]``, finite; ``beta`` ``[B]``."""
    with torch.no_grad():
        d = detector.decompose(x)
        reference = detector.reference_score(x)
    s = reference if reference is not None else detector.score(x)
    assert d.beta.shape == (x.shape[0],), f"beta has shape {tuple(d.beta.shape)}, not [B] = [{x.shape[0]}]"
    assert d.alpha.shape[0] == x.shape[0], f"alpha has {d.alpha.shape[0]} samples, the input {x.shape[0]}"
    assert torch.isfinite(d.alpha).all() and torch.isfinite(d.beta).all(), "alpha or beta is not finite"
    residual = (s - d.alpha.flatten(1).sum(1) - d.beta).abs()
    assert torch.all(residual <= rtol * (1 + s.abs())), f"s(x) != sum(alpha) + beta: residual {residual.tolist()}"


def check_gradient(detector: Detector, x: Tensor) -> None:
    """Guidance needs ``∇_x s(x)``: finite, and not zero everywhere."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        detector.decompose(x).score.sum().backward()
    assert x.grad is not None, "s(x) has no gradient with respect to x"
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, "the gradient of s(x) is not finite, or zero"


def check_checkpoint_round_trip(model: Model, path: Path, x: Tensor | None = None) -> Model:
    """Saved and loaded as a user's checkpoint: the same config (JSON), the same tensors, and for a
    detector with ``x``, the same scores. Returns the loaded model."""
    json.dumps(model.config)  # a checkpoint's config is JSON
    kind = "detector" if isinstance(model, Detector) else "repairer"
    save(model, Path(path))
    loaded = load(Path(path), kind, model.name)
    assert loaded.config == json.loads(json.dumps(model.config)), f"config changed: {loaded.config} != {model.config}"
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys(), f"tensors differ: {sorted(before.keys() ^ after.keys())}"
    for key in before:
        assert torch.equal(before[key].cpu(), after[key].cpu()), f"tensor {key!r} changed in the round trip"
    if x is not None and isinstance(model, Detector):
        with torch.no_grad():
            assert torch.allclose(model.score(x), loaded.score(x), rtol=1e-5, atol=1e-6), "scores changed"
    return loaded


def check_bundled_checkpoint(path: Path) -> None:
    """A checkpoint a plugin ships loads bit-identically: the file's tensors are the model's, and its header's
    config is what the model records."""
    header = read_header(path)
    model = load(path, header["kind"])
    state = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(state), f"{path.name}: tensors differ: {sorted(set(f.keys()) ^ set(state))}"
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), state[key]), f"{path.name}: tensor {key!r} changed"
    for key, value in header["config"].items():
        assert model.config[key] == value or list(model.config[key]) == value, f"{path.name}: config {key!r} changed"


def check_stacked_arms(x: Tensor, detector: Detector, repairer: Repairer, settings: RepairSettings,
                       arms: tuple[str, ...] = ARMS, **repair_options: Any) -> None:
    """The arms repaired as one stacked batch give each arm's repairs, metrics and best-of-K draws bit for bit as
    that arm repaired alone: a repairer or detector whose output for a sample depends on its batch fails."""
    stacked = repair(x, detector, repairer, settings=settings, arms=arms, seed=5, progress=False, **repair_options)
    assert list(stacked.arms) == [a for a in ARMS if a in arms]
    for arm in arms:
        alone = repair(x, detector, repairer, settings=settings, arms=(arm,), seed=5, progress=False, **repair_options)
        assert torch.equal(stacked.arms[arm].x_fix, alone.arms[arm].x_fix), f"{arm}: stacked repairs differ"
        for metric, value in alone.arms[arm].metrics.items():
            assert torch.equal(stacked.arms[arm].metrics[metric], value), f"{arm}: stacked {metric} differs"
        if settings.samples > 1:
            assert torch.equal(stacked.arms[arm].draws.x_fix, alone.arms[arm].draws.x_fix), f"{arm}: draws differ"
    assert len({a.seconds for a in stacked.arms.values()}) == 1, "the arms were not repaired as one batch"


def check_property_contract(prop: Property, ctx: PropertyContext, x_fix: Tensor) -> None:
    """A property's loss, metric and verdict are ``[B]``; the loss is finite and, for a guiding property,
    differentiable in ``x_fix``; the verdict is boolean; a constraint's ``frozen``/``bounds`` fit the input."""
    detector = ctx.detector
    x = x_fix.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        fix = detector.decompose(x) if detector is not None and prop.needs_detector else None
        loss = prop.loss(ctx, x, fix)
    batch = (x_fix.shape[0],)
    assert loss.shape == batch and torch.isfinite(loss).all(), f"loss must be finite [B], got {tuple(loss.shape)}"
    if prop.guides:
        assert loss.requires_grad, "a guiding property's loss must be differentiable in x_fix (or set guides = False)"
    with torch.no_grad():
        fix = detector.decompose(x_fix) if detector is not None else None
        metric = prop.metric(ctx, x_fix, fix)
        holds = prop.holds(ctx, metric)
    assert metric.shape == batch, f"metric must be [B], got {tuple(metric.shape)}"
    assert holds.shape == batch and holds.dtype == torch.bool, f"holds must be bool [B], got {holds.dtype}"
    frozen, bounds = prop.frozen(ctx), prop.bounds(ctx)
    if frozen is not None:
        assert frozen.shape == x_fix.shape, f"frozen must be [B, *X], got {tuple(frozen.shape)}"
    for bound in bounds or ():
        torch.broadcast_shapes(bound.shape, x_fix.shape)  # [*X] or [B, *X]
