"""The benchmark harness: it lists every module, no benchmark imports a private arpro module, and a
run records where and how it ran beside its figures."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import arpro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is run from the checkout (python -m benchmarks), not installed
from benchmarks import harness, render  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402
MODULES = sorted(p for group in harness.GROUPS for p in (ROOT / "benchmarks" / group).glob("*.py")
                 if p.stem != "__init__")


def private_imports(source: str) -> list[str]:
    """``arpro.*`` modules, or names ``arpro`` does not export, that ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("arpro.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "arpro":
            if node.module != "arpro":
                found.append(node.module)
            found += [f"arpro.{a.name}" for a in node.names if node.module == "arpro" and a.name not in arpro.__all__]
    return found


@pytest.mark.slow
def test_list_names_every_benchmark_module_with_its_group_and_description():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "list"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    listed = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert listed == {p.stem: p.parent.name for p in MODULES}
    assert {"startup", "tep_detectors"} <= set(listed)
    assert all(len(line.split()) > 2 for line in out.splitlines()), "a benchmark without a description"


def test_no_benchmark_imports_a_private_arpro_module():
    found = {p.relative_to(ROOT).as_posix(): private_imports(p.read_text()) for p in (ROOT / "benchmarks").rglob("*.py")}
    assert not {path: names for path, names in found.items() if names}


def test_the_private_import_check_catches_both_forms():
    assert private_imports("from arpro.settings import parse_options\nimport arpro.api") == ["arpro.settings", "arpro.api"]
    assert private_imports("from arpro import plugins, auroc") == ["arpro.plugins"]
    assert private_imports("import arpro\nfrom arpro import RunSpec") == []


def test_a_run_records_revision_machine_threads_versions_and_command(tmp_path, monkeypatch):
    trivial = types.ModuleType("benchmarks.speed.trivial")
    trivial.run = lambda quick: {"repetitions": 3 if quick else 7, "rows": [{"command": "x", "median s": 0.25}]}
    monkeypatch.setitem(sys.modules, "benchmarks.speed.trivial", trivial)
    monkeypatch.setattr(harness, "discover", lambda: {"trivial": ("speed", "A benchmark that measures nothing.")})
    record = json.loads(harness.run("trivial", quick=True, results=tmp_path).read_text())
    assert re.fullmatch(r"[0-9a-f]{12}", record["revision"]) and isinstance(record["dirty"], bool)
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"] and "gpu" in record["machine"]
    assert record["threads"]["torch"] >= 1 and "OMP_NUM_THREADS" in record["threads"]
    assert record["versions"]["torch"] and record["versions"]["arpro"]
    assert record["command"].endswith("python -m benchmarks run trivial --quick")
    assert record["measurements"]["repetitions"] == 3 and record["wall_s"] >= 0

    page = render.render(tmp_path, pages=tmp_path / "pages")[0].read_text()
    assert "`" + record["command"] + "`" in page and "| x | 0.25 |" in page and "| repetitions | 3 |" in page
    assert not re.search(r"20\d\d-\d\d-\d\d", page)


def test_missing_shared_data_or_unknown_name_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "SHARED_DATA", tmp_path)
    for name, status in (("tep_detectors", harness.UNAVAILABLE), ("nope", 2)):
        monkeypatch.setattr(sys, "argv", ["benchmarks", "run", name, "--quick", "--results", str(tmp_path)])
        assert main() == status
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_each_benchmark_has_a_description_and_run(path):
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.name}: no module docstring"
    runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    assert runs and [a.arg for a in runs[0].args.args] == ["quick"], f"{path.name}: no run(quick)"
