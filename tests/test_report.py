"""arpro ablate and arpro report: plots, and one self-contained HTML page checked in Chromium."""

import base64
import json
import os
import re
import shutil
import subprocess

import pytest
from arpro.testing import run_cli


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "eval"
    proc = run_cli("evaluate", "--detector", "gaussian", "--limit", "6", "--chunk-size", "3", "--steps", "10", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def ablated(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "ablate"
    proc = run_cli("ablate", "--detector", "gaussian", "--limit", "4", "--grid", "0.5,2", "--steps", "10", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_ablation_varies_each_lambda_and_the_scale(ablated):
    rows = json.loads((ablated / "ablation.json").read_text())["rows"]
    assert {(r["parameter"], r["value"]) for r in rows} == {(p, v) for p in ("p1", "p2", "p3", "p4", "scale") for v in (0.5, 2.0)}
    scale = {r["value"]: r["Ms"] for r in rows if r["parameter"] == "scale"}
    assert scale[0.5] != scale[2.0]  # the guidance scale really changes the repair
    for metric in ("Ms", "Md", "Momega", "Momega_bar"):
        assert (ablated / f"ablation_{metric}.png").stat().st_size > 5_000


@pytest.mark.slow
def test_evaluate_writes_a_gallery(evaluated):
    gallery = evaluated / "gallery" / "breast-cancer"  # inputs 0-3, drawn from the chunks at 0 and 3 that repaired them
    assert (gallery / "repair-from-0.png").exists() and (gallery / "repair-from-3.png").exists()


@pytest.mark.slow
def test_report_is_self_contained(evaluated, ablated):
    proc = run_cli("report", str(evaluated), "--ablation", str(ablated), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    page = (evaluated / "report.html").read_text()
    assert page.count("<table") == 2
    assert "breast-cancer" in page and "Δ, all (% improvement of the mean" in page and "breast-cancer, flagged" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 6  # 4 ablation plots + 2 gallery figures
    assert not re.search(r'src="(?!data:)', page)  # nothing loaded from outside the file


@pytest.mark.slow
def test_report_renders_in_headless_chromium(evaluated, ablated, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed")
    assert run_cli("report", str(evaluated), "--ablation", str(ablated), "--overwrite").returncode == 0
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         (evaluated / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    assert 'data-images="6"' in dom and 'data-images-loaded="6"' in dom
    assert dom.count("<table") == 2 and "<td>breast-cancer, flagged</td>" in dom


@pytest.mark.slow
def test_report_on_a_directory_without_results(tmp_path):
    proc = run_cli("report", str(tmp_path))
    assert proc.returncode == 2 and "neither an evaluation" in proc.stderr


@pytest.mark.slow
def test_report_never_embeds_a_link_out_of_the_run_folder(evaluated, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not the user's to publish")
    link = evaluated / "gallery" / "breast-cancer" / "zz-link.png"
    link.symlink_to(secret)
    try:
        proc = run_cli("report", str(evaluated), "--out", str(tmp_path / "page.html"))
    finally:
        link.unlink()
    assert proc.returncode == 0, proc.stderr
    assert "zz-link.png links outside" in proc.stderr
    page = (tmp_path / "page.html").read_text()
    assert base64.b64encode(secret.read_bytes()).decode() not in page and "zz-link" not in page
