"""What a run does when things go wrong around it: non-finite repairs, two runs on one folder,
a SIGKILL mid-write, and long work with stderr going to a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from arpro.testing import run_cli

from arpro.io import outputs
from arpro.runtime import progress

DIVERGING = ["--guidance-scale", "1e38", "--grad-clip", "0", "--count", "3", "--steps", "10", "--quiet"]


def leftovers(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]


def run_in_process(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    from arpro import cli

    monkeypatch.setattr(sys, "argv", ["arpro", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def test_non_finite_repairs_are_marked_failed_and_fail_the_run(tmp_path, monkeypatch, capsys):
    code, err = run_in_process(["repair", "--detector", "gaussian", "--arms", "infill,guided", "--out", str(tmp_path / "r"), *DIVERGING],
                               monkeypatch, capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: 3 repair(s) ended non-finite"), err
    inputs = json.loads((tmp_path / "r" / "report.json").read_text())["inputs"]
    assert all(i["guided"]["failed"] and not any(i["guided"]["holds"].values()) for i in inputs)
    assert not any(i["infill"]["failed"] for i in inputs)

    code, err = run_in_process(["repair", "--detector", "gaussian", "--out", str(tmp_path / "k"), *DIVERGING,
                                "--keep-going"], monkeypatch, capsys)
    assert code == 0 and err.startswith("warning: 3 repair(s) ended non-finite"), err


def test_an_overflowing_score_fails_the_repair_and_the_json_stays_strict(tmp_path, monkeypatch, capsys):
    from sklearn.datasets import load_breast_cancer

    rows = load_breast_cancer(as_frame=True).data.head(2)
    (rows * 0 + 1e30).to_csv(tmp_path / "huge.csv", index=False)  # finite cells whose squared z-scores overflow
    code, err = run_in_process(["repair", "--detector", "gaussian", "--input", str(tmp_path / "huge.csv"), "--steps", "5",
                                "--quiet", "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 1 and err.startswith("error: 2 repair(s) ended non-finite"), err
    text = (tmp_path / "r" / "report.json").read_text()
    report = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in report.json"))
    assert [i["score_bad"] for i in report["inputs"]] == [None, None]
    assert "inputs[0].score_bad" in report["non_finite"]
    assert all(i["guided"]["failed"] and not any(i["guided"]["holds"].values()) for i in report["inputs"])


def test_a_full_disk_is_one_error_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno
    import pathlib

    real = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        if self.name == "report.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    code, err = run_in_process(["repair", "--detector", "gaussian", "--count", "2", "--steps", "5", "--quiet",
                                "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: No space left on device writing "), err
    assert leftovers(tmp_path) == [] and not (tmp_path / "r").exists()


def test_strict_json_writes_null_and_says_where():
    assert json.loads(outputs.strict_json({"a": [1.0, float("nan")], "b": {"c": float("inf")}})) == {
        "a": [1.0, None], "b": {"c": None}, "non_finite": ["a[1]", "b.c"]}
    assert outputs.strict_json([float("-inf")]) == "[null]"


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    with outputs.exclusive(out, "evaluate"):  # as a running evaluate holds it
        before = sorted(p.name for p in out.iterdir())
        code, err = run_in_process(["evaluate", "--detector", "gaussian", "--limit", "4", "--steps", "5", "--quiet",
                                    "--out", str(out)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"being written by another arpro evaluate (process {os.getpid()})" in err
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.slow
def test_two_evaluates_started_at_once_on_one_folder(tmp_path):
    out = tmp_path / "shared"
    args = [sys.executable, "-m", "arpro.cli", "evaluate", "--detector", "gaussian", "--limit", "96", "--chunk-size", "8",
            "--steps", "150", "--quiet", "--out", str(out)]
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert refused.count("\n") == 1 and "being written by another arpro evaluate" in refused
    indices = [json.loads(line)["index"] for line in (out / "records.jsonl").read_text().splitlines()]
    assert indices == list(range(96))


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_repair_killed_mid_run_leaves_nothing_after_the_next_run(tmp_path):
    out = tmp_path / "runs" / "r"
    args = ["repair", "--detector", "gaussian", "--count", "64", "--quiet", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "arpro.cli", *args, "--steps", "400"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: bool(leftovers(tmp_path / "runs")) if (tmp_path / "runs").exists() else False)
    assert leftovers(tmp_path / "runs") and not out.exists()  # what a SIGKILL leaves: staging only
    again = run_cli(*args, "--steps", "10")
    assert again.returncode == 0, again.stderr
    assert (out / "report.json").exists() and leftovers(tmp_path / "runs") == []


@pytest.mark.slow
def test_train_killed_mid_run_leaves_nothing_after_the_next_run(tmp_path):
    out = tmp_path / "models" / "ae.safetensors"
    out.parent.mkdir()
    stale = out.parent / f".{out.name}.partial-killed01.tmp"  # a save cut by SIGKILL: unlocked staging, as mkstemp names it
    stale.write_bytes(b"half a checkpoint")
    args = ["train", "detector", "--detector", "autoencoder", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "arpro.cli", *args, "--model-option", "epochs=100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kill_when(proc, lambda: proc.stderr.readline() != "")  # its first progress line: training has begun
    again = run_cli(*args, "--model-option", "epochs=2")
    assert again.returncode == 0, again.stderr
    assert out.exists() and leftovers(out.parent) == []


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path, monkeypatch, capsys):
    victim, out = tmp_path / "victim.txt", tmp_path / "out"
    victim.write_text("keep me\n")
    out.mkdir()
    (out / outputs.LOCK_FILE).symlink_to(victim)
    code, err = run_in_process(["evaluate", "--detector", "gaussian", "--limit", "4", "--steps", "5", "--quiet",
                                "--out", str(out)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "is a symbolic link; arpro never writes through one" in err, err
    assert victim.read_text() == "keep me\n" and (out / outputs.LOCK_FILE).is_symlink()


def test_a_folder_that_only_looks_like_staging_is_never_removed(tmp_path, monkeypatch, capsys):
    notes = tmp_path / ".out.partial-notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("notes\n")
    linked = tmp_path / ".out.partial-abcd1234.tmp"  # the shape of a staging file, but a link to a user's file
    linked.symlink_to(notes / "keep.txt")
    code, err = run_in_process(["repair", "--detector", "gaussian", "--count", "2", "--steps", "5", "--quiet",
                                "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 0, err
    assert (notes / "keep.txt").read_text() == "notes\n" and linked.is_symlink()
    assert not (tmp_path / "out" / outputs.STAGING_MARKER).exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_clean_up_and_say_interrupted(tmp_path, signum, code):
    out = tmp_path / "runs" / "r"
    proc = subprocess.Popen([sys.executable, "-m", "arpro.cli", "repair", "--detector", "gaussian", "--count", "64",
                             "--steps", "400", "--quiet", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not leftovers(tmp_path):
        time.sleep(0.02)
    time.sleep(0.5)  # into the repair itself
    assert proc.poll() is None, "the run ended before it could be signalled"
    os.kill(proc.pid, signum)
    assert proc.wait(timeout=60) == code
    assert proc.stderr.read().splitlines()[-1] == "interrupted"
    assert leftovers(tmp_path) == [] and not out.exists()


def test_plain_progress_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)
    with progress.progress_bar("training x", total=3) as advance:
        for step in range(3):
            advance(loss=f"{1 / (step + 1):.2f}")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ")[2] for line in lines] == ["1/3", "2/3", "3/3"]
    assert lines[0].startswith("training x: 1/3 loss=1.00 ") and lines[-1].endswith("s")


def test_written_files_have_ordinary_permissions(tmp_path):
    """Staged writes (mkstemp makes 0600) end as ordinary files: 0666 less the umask, as open() would make them."""
    import stat

    from arpro.io import checkpoint
    from arpro.plugin_api import registry

    umask = os.umask(0o022)
    try:
        outputs.write_atomic(tmp_path / "record.json", "{}")
        model = registry.get("detector", "gaussian")(input_shape=[3])
        checkpoint.save(model, tmp_path / "model.safetensors")
    finally:
        os.umask(umask)
    for name in ("record.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_csv_size_is_counted_on_the_raw_bytes_across_blocks(tmp_path, monkeypatch):
    from arpro import ArproError
    from arpro.io import limits

    monkeypatch.setattr(limits, "_BLOCK", 7)  # a header and rows spread over many blocks
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n")
    limits.check_csv_size(path)
    monkeypatch.setattr(limits, "MAX_CSV_COLUMNS", 2)
    with pytest.raises(ArproError, match="more than 2 columns"):
        limits.check_csv_size(path)
    monkeypatch.setattr(limits, "MAX_CSV_COLUMNS", 3)
    monkeypatch.setattr(limits, "MAX_CSV_ROWS", 2)
    with pytest.raises(ArproError, match="more than 2 rows"):
        limits.check_csv_size(path)
    path.write_text("x\n" * 2 + "a,b,c,d\n")  # the header on line 2 is the one counted
    monkeypatch.setattr(limits, "MAX_CSV_ROWS", 10)
    limits.check_csv_size(path)
    with pytest.raises(ArproError, match="more than 3 columns"):
        limits.check_csv_size(path, header_line=2)
