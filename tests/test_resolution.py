"""One resolution step: a run's settings and properties are resolved once, when its spec is made;
evaluate loads its dataset once; one name per concept (no four functions called ``repair``)."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

import arpro
from arpro.algorithm import service
from arpro.algorithm.settings import RepairSettings
from arpro.io import run_spec
from arpro.workflows import ablate, evaluate

FAST = {"steps": 3}


@pytest.mark.parametrize("settings", [FAST, RepairSettings(**FAST)])
def test_the_spec_holds_a_number_for_the_guidance_scale(settings):
    """Given as a mapping or whole, the settings leave the spec with the detector's scale as a number."""
    spec = arpro.RunSpec(detector="gaussian", settings=settings)
    assert spec.settings.guidance_scale == registry_scale("gaussian")
    assert spec.to_dict()["settings"]["guidance_scale"] == registry_scale("gaussian")
    assert arpro.RunSpec(detector="gaussian", settings={**FAST, "guidance_scale": 2.0}).settings.guidance_scale == 2.0


def registry_scale(detector: str) -> float:
    return arpro.get("detector", detector).guidance_scale


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """How often each resolution step runs, wherever the core calls it from."""
    counts: Counter = Counter()

    def counting(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return wrapper

    for module in (service, run_spec):
        for name in ("check_steps", "expand_properties", "make_property"):
            monkeypatch.setattr(module, name, counting(name, getattr(module, name)))
    monkeypatch.setattr(RepairSettings, "resolved_for", counting("resolved_for", RepairSettings.resolved_for))
    return counts


def test_a_run_resolves_its_settings_and_properties_once(calls):
    """Making the spec and resolving it check everything once; its repairs re-default and re-check nothing."""
    run = arpro.resolve(arpro.RunSpec(detector="gaussian", settings=FAST, properties=["+range"]), progress=False)
    x = run.dataset.test().anomalous().x[:2]
    for _ in range(2):
        result = run.repair(x, progress=False)
    assert calls == {"check_steps": 1, "expand_properties": 1, "make_property": 5, "resolved_for": 1}
    assert result.settings["guidance_scale"] == registry_scale("gaussian")
    assert result.settings["properties"] == ["p1", "p2", "p3", "p4", "range"]


def test_arpro_repair_resolves_once(calls, gaussian, tiny_repairer, anomalous_rows):
    """The public function is one resolution step, then the same arms as a run's repairs."""
    result = arpro.repair(anomalous_rows[:2], gaussian, tiny_repairer, settings=RepairSettings(**FAST), progress=False)
    assert calls == {"check_steps": 1, "expand_properties": 1, "make_property": 4, "resolved_for": 1}
    assert result.settings["guidance_scale"] == gaussian.guidance_scale


def test_ablate_varies_the_resolved_scale(monkeypatch):
    """The ablation's scales are multiples of the spec's scale, never re-read from the detector."""
    run = arpro.resolve(arpro.RunSpec(detector="gaussian", settings=RepairSettings(**FAST)), progress=False)
    run.detector.guidance_scale = 99.0  # an instance's own value: the resolved spec's scale is what runs
    scales = []

    def spy(*args, settings, **kwargs):
        scales.append(settings.guidance_scale)
        return run_arms(*args, settings=settings, **kwargs)

    run_arms = run_spec.run_arms
    monkeypatch.setattr(run_spec, "run_arms", spy)
    inputs = run.dataset.test().anomalous().subset([0, 1])
    rows = ablate.ablate(run, inputs, grid=[2.0], progress=False)
    base = registry_scale("gaussian")
    assert [r["parameter"] for r in rows] == ["p1", "p2", "p3", "p4", ablate.SCALE]
    assert scales == [base] * 4 + [2.0 * base]


def test_evaluate_loads_its_dataset_once(monkeypatch, tmp_path):
    """A counting dataset: ``arpro evaluate`` on a dataset of one category constructs it once."""
    cls = arpro.get("dataset", "breast-cancer")
    loads = []
    original = cls.__init__

    def counting(self, *args, **kwargs):
        loads.append(kwargs.get("category"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", counting)
    spec = arpro.RunSpec(detector="gaussian", settings=FAST)
    summary = evaluate.run(spec, tmp_path / "run", limit=2, progress=False)
    assert summary["categories"]["breast-cancer"]["n"] == 2
    assert loads == [None]


def test_one_function_is_called_repair_besides_run_repair():
    """``arpro.repair`` and ``Run.repair``: the other steps have names that say what they do."""
    root = Path(arpro.__file__).parent
    found = sorted(str(path.relative_to(root)) for path in root.rglob("*.py")
                   for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "repair")
    assert found == ["algorithm/service.py", "io/run_spec.py"]
    assert arpro.repair is service.repair
