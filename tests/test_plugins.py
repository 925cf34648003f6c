"""Plugin discovery: entry points, a real third-party install, conflicts and broken plugins,
and what starting ``arpro`` imports."""

import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from arpro import ArproError
from arpro import cli
from arpro.plugin_api import registry
from arpro.testing import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "arpro-example-plugin"


@pytest.fixture
def fresh_registry(monkeypatch):
    """Clear the cached plugin manager so a test can change what entry points say."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fake_plugins"))
    registry.plugin_manager.cache_clear()
    registry.registry.cache_clear()
    yield
    registry.plugin_manager.cache_clear()
    registry.registry.cache_clear()


def with_extra_entry_points(monkeypatch, *extra):
    real = registry.entry_points

    def fake(group):
        return [*real(group=group), *extra]

    monkeypatch.setattr(registry, "entry_points", fake)


def test_builtin_plugin_is_found_through_its_entry_point():
    entry = registry.registry().entries["detector"]["gaussian"]
    assert entry.distribution == "arpro-tabular"
    assert registry.registry().entries["property"]["p1"].distribution == "arpro"


def test_two_plugins_with_one_name_is_an_error_naming_both(fresh_registry, monkeypatch):
    with_extra_entry_points(monkeypatch, EntryPoint("conflicting", "conflicting_plugin", "arpro"))
    with pytest.raises(ArproError, match="registered twice: by arpro-tabular and by conflicting"):
        registry.registry()


def test_a_misspelled_hook_is_an_error_naming_the_plugin_and_the_hook(fresh_registry, monkeypatch):
    with_extra_entry_points(monkeypatch, EntryPoint("misspelled", "misspelled_plugin", "arpro"))
    with pytest.raises(ArproError, match=r"plugin 'misspelled' from misspelled implements unknown hook\(s\) "
                                         r"arpro_register_property \(did you mean arpro_register_properties\?\)"):
        registry.registry()


def test_arpro_load_plugins_chooses_which_plugins_load(fresh_registry, monkeypatch):
    monkeypatch.setenv("ARPRO_LOAD_PLUGINS", "tabular")
    reg = registry.registry()
    assert "gaussian" in reg.entries["detector"] and "gpt2" not in reg.entries["detector"]
    assert "p1" in reg.entries["property"]  # the core's own plugin always loads
    registry.plugin_manager.cache_clear()
    registry.registry.cache_clear()
    monkeypatch.setenv("ARPRO_LOAD_PLUGINS", "tabular,visoin")
    with pytest.raises(ArproError, match="ARPRO_LOAD_PLUGINS names 'visoin', which no installed plugin provides"):
        registry.registry()


def test_a_broken_plugin_warns_and_the_rest_load(fresh_registry, monkeypatch, capsys):
    with_extra_entry_points(monkeypatch, EntryPoint("broken", "no_such_module_for_arpro", "arpro"))
    reg = registry.registry()
    assert "gaussian" in reg.entries["detector"]
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "failed to load" in err


def test_a_registered_path_is_imported_on_use_and_checked(fresh_registry, monkeypatch):
    with_extra_entry_points(monkeypatch, EntryPoint("lazy", "lazy_plugin", "arpro"))
    reg = registry.registry()
    assert reg.entries["detector"]["ghost"].description == "Never importable."  # listed without importing it
    with pytest.raises(ArproError, match="detector 'ghost' of lazy cannot be imported from no_such_module_for_arpro"):
        registry.get("detector", "ghost")
    with pytest.raises(ArproError, match="is 'gaussian' .* but lazy registered it as 'impostor'"):
        registry.get("detector", "impostor")


def test_each_builtin_registration_says_what_its_class_says():
    for entry in registry.registry():
        cls = entry.obj  # imports it, and checks its name and domain
        expected = getattr(cls, "is_default", False) or getattr(cls, "embedded", False)
        if entry.name == "patchcore":  # the vision plugin makes it the default where pretrained weights are installed
            from arpro_vision.weights import pretrained_available

            expected = pretrained_available()
        assert entry.default == expected, entry.name
        assert entry.description and entry.description[:20] in (cls.__doc__ or ""), entry.name


def test_a_plugin_command_is_added_only_when_named(fresh_registry, monkeypatch, capsys):
    with_extra_entry_points(monkeypatch, EntryPoint("greeter", "command_plugin", "arpro"))
    monkeypatch.setattr(cli.app, "registered_commands", list(cli.app.registered_commands))
    for args in (["--version"], ["list-plugins", "--help"]):
        monkeypatch.setattr(sys, "argv", ["arpro", *args])
        with pytest.raises(SystemExit, match="0"):
            cli.main()
        assert registry.plugin_manager.cache_info().currsize == 0, f"arpro {' '.join(args)} loaded the plugins"
    monkeypatch.setattr(sys, "argv", ["arpro", "hello", "--name", "arpro"])
    with pytest.raises(SystemExit, match="0"):
        cli.main()
    assert "hello arpro" in capsys.readouterr().out


HEAVY = {"torch", "diffusers", "anomalib", "transformers"}
PLUGIN_MODULES = {"arpro_tabular", "arpro_vision", "arpro_timeseries"}


def modules_imported_by(*args: str) -> set[str]:
    """The top-level modules that ``arpro ARGS`` imports, in a fresh process."""
    code = ("import json, sys\nfrom arpro.cli import main\nsys.argv = ['arpro', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    return set(json.loads(proc.stderr.splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--version"], ["--help"], ["repair", "--help"]], ids=" ".join)
def test_version_and_help_load_no_plugin(args):
    assert not modules_imported_by(*args) & (HEAVY | PLUGIN_MODULES)


@pytest.mark.slow
def test_list_plugins_imports_no_model_library():
    imported = modules_imported_by("list-plugins")
    assert PLUGIN_MODULES <= imported and not imported & HEAVY


@pytest.mark.slow
def test_import_arpro_imports_no_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys, arpro; print(sorted(set(sys.modules) & {'torch', 'numpy'}))"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory) -> dict[str, str]:
    """The environment of a process in which the example plugin is installed: pip installs it into a folder of
    its own, put on PYTHONPATH, so the shared environment (and tests running beside this one) never sees it."""
    target = tmp_path_factory.mktemp("example-plugin")
    subprocess.run([sys.executable, "-m", "pip", "-q", "install", "--no-deps", "--target", str(target), str(EXAMPLE)],
                   check=True, capture_output=True)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
def test_installed_third_party_plugin_is_listed_and_used(example_plugin, tmp_path):
    listed = json.loads(run_cli("list-plugins", "--json", env=example_plugin).stdout)
    mine = {(e["kind"], e["name"]): e for e in listed if e["distribution"] == "arpro-example-plugin"}
    assert set(mine) == {("detector", "mean-abs"), ("property", "sparsity")}
    assert mine[("detector", "mean-abs")]["version"] == "0.2.0"

    out = tmp_path / "o"
    proc = run_cli(
        "repair", "--detector", "mean-abs", "--property", "p1", "--property", "sparsity",
        "--weight", "sparsity=0.1", "--steps", "10", "--count", "3", "--quiet", "--out", str(out), env=example_plugin,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["detector"] == "mean-abs"
    assert report["settings"]["properties"] == ["p1", "sparsity"]
    assert "M_l1" in report["inputs"][0]["guided"]["metrics"]
    assert "SPARSITY M_l1" in proc.stdout


@pytest.mark.slow
def test_added_third_party_property_reaches_tables_report_and_ablation(example_plugin, tmp_path):
    """`--property +sparsity` guides with P1–P4; its metric shows in every table and its lambda is ablated."""
    common = ["--detector", "mean-abs", "--property", "+sparsity", "--weight", "sparsity=0.1", "--steps", "5", "--quiet"]
    evaluated, ablated = tmp_path / "eval", tmp_path / "ablate"
    proc = run_cli("evaluate", *common, "--limit", "3", "--out", str(evaluated), env=example_plugin)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((evaluated / "summary.json").read_text())
    assert {"name": "sparsity", "metric": "M_l1", "label": "M_l1"} in summary["properties"]
    assert "M_l1" in (evaluated / "tables.md").read_text() and "M_l1" in (evaluated / "tables.csv").read_text()
    proc = run_cli("ablate", *common, "--limit", "2", "--grid", "0.5,2", "--out", str(ablated), env=example_plugin)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((ablated / "ablation.json").read_text())["rows"]
    assert [r["value"] for r in rows if r["parameter"] == "sparsity"] == [0.5, 2.0]
    assert {r["parameter"] for r in rows} == {"p1", "p2", "p3", "p4", "sparsity", "scale"}
    assert (ablated / "ablation_M_l1.png").is_file()
    proc = run_cli("report", str(evaluated), "--ablation", str(ablated), env=example_plugin)
    assert proc.returncode == 0, proc.stderr
    html = (evaluated / "report.html").read_text()
    assert "M_l1" in html.split("<h2>Ablation")[0] and "<figcaption>ablation_M_l1<" in html


@pytest.mark.slow
def test_the_example_plugin_passes_its_own_tests_with_the_testing_kit(example_plugin):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                          capture_output=True, text=True, cwd=EXAMPLE, env=example_plugin, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


@pytest.mark.slow
def test_a_tabular_repair_leaves_torch_compiler_unloaded(tmp_path):
    """diffusers comes in through arpro.import_diffusers, without torch._dynamo (about 2 s of start-up),
    and torch._dynamo still imports afterwards for whoever needs it."""
    code = ("import sys\nfrom arpro.cli import main\nsys.argv = ['arpro', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('diffusers' in sys.modules, 'torch._dynamo' in sys.modules)\n"
            "import torch._dynamo\nprint(torch._dynamo.allow_in_graph is not None)")
    proc = subprocess.run([sys.executable, "-c", code, "repair", "--detector", "gaussian", "--count", "2", "--steps", "4",
                           "--quiet", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.stdout.splitlines()[-2:] == ["True False", "True"], proc.stdout + proc.stderr
