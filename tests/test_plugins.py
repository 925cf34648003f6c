"""Plugin discovery: entry points, a real third-party install, conflicts and broken plugins."""

import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from conftest import run_cli

from arpro import ArproError, plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "arpro-example-plugin"


@pytest.fixture
def fresh_registry(monkeypatch):
    """Clear the cached plugin manager so a test can change what entry points say."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fake_plugins"))
    plugins.plugin_manager.cache_clear()
    plugins.registry.cache_clear()
    yield
    plugins.plugin_manager.cache_clear()
    plugins.registry.cache_clear()


def with_extra_entry_points(monkeypatch, *extra):
    real = plugins.entry_points

    def fake(group):
        return [*real(group=group), *extra]

    monkeypatch.setattr(plugins, "entry_points", fake)


def test_builtin_plugin_is_found_through_its_entry_point():
    entry = plugins.registry().entries["detector"]["gaussian"]
    assert entry.distribution == "arpro-tabular"
    assert plugins.registry().entries["property"]["p1"].distribution == "arpro"


def test_two_plugins_with_one_name_is_an_error_naming_both(fresh_registry, monkeypatch):
    with_extra_entry_points(monkeypatch, EntryPoint("conflicting", "conflicting_plugin", "arpro"))
    with pytest.raises(ArproError, match="registered twice: by arpro-tabular and by conflicting"):
        plugins.registry()


def test_a_broken_plugin_warns_and_the_rest_load(fresh_registry, monkeypatch, capsys):
    with_extra_entry_points(monkeypatch, EntryPoint("broken", "no_such_module_for_arpro", "arpro"))
    registry = plugins.registry()
    assert "gaussian" in registry.entries["detector"]
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "failed to load" in err


@pytest.fixture(scope="module")
def example_plugin_installed():
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "install", "--no-deps", str(EXAMPLE)], check=True, capture_output=True)
    yield
    subprocess.run([*pip, "uninstall", "-y", "arpro-example-plugin"], check=True, capture_output=True)


def test_installed_third_party_plugin_is_listed_and_used(example_plugin_installed, tmp_path):
    listed = json.loads(run_cli("list-plugins", "--json").stdout)
    mine = {(e["kind"], e["name"]): e for e in listed if e["distribution"] == "arpro-example-plugin"}
    assert set(mine) == {("detector", "mean-abs"), ("property", "sparsity")}
    assert mine[("detector", "mean-abs")]["version"] == "0.2.0"

    out = tmp_path / "o"
    proc = run_cli(
        "repair", "--detector", "mean-abs", "--property", "p1", "--property", "sparsity",
        "--weight", "sparsity=0.1", "--steps", "10", "--count", "3", "--quiet", "--out", str(out),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["detector"] == "mean-abs"
    assert report["settings"]["properties"] == ["p1", "sparsity"]
    assert "M_l1" in report["inputs"][0]["guided"]["metrics"]
    assert "SPARSITY M_l1" in proc.stdout
