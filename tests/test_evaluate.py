"""arpro evaluate: determinism, resuming after kill -9, and 2 processes agreeing with 1."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from arpro.testing import run_cli

import arpro
from arpro.metrics import conformal_threshold
from arpro.workflows.summary import summarize

ARGS = ["evaluate", "--detector", "gaussian", "--limit", "12", "--chunk-size", "4", "--steps", "10", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "ref"
    proc = run_cli(*ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_conformal_threshold_is_the_ceil_rank():
    scores = torch.arange(1.0, 20.0)  # n = 19: rank ceil(20 * 0.95) = 19
    assert conformal_threshold(scores) == 19.0
    assert conformal_threshold(torch.arange(1.0, 11.0)) == float("inf")  # n = 10 is too few for 95%


class _SumDetector:
    def score(self, x):
        return x.sum(1)


def _dataset_and_detector(validation: int, test_normal: int):
    from types import SimpleNamespace

    normal_test = torch.arange(100.0, 100.0 + test_normal).view(-1, 1)
    test = arpro.Split(x=torch.cat([normal_test, torch.full((3, 1), 1e6)]),
                       labels=torch.tensor([0] * test_normal + [1] * 3))
    held_out = arpro.Split(x=torch.arange(1.0, 1.0 + validation).view(-1, 1), labels=torch.zeros(validation, dtype=torch.long))
    return SimpleNamespace(name="tiny", test=lambda: test, validation=lambda: held_out), _SumDetector()


def test_tnr_threshold_is_never_infinite(capsys):
    """Too small a validation split is pooled with the test normals (a note says so), never an
    infinite threshold under which every repair would count as normal; too few in all is refused."""
    from arpro.metrics import tnr_threshold

    assert tnr_threshold(*_dataset_and_detector(validation=19, test_normal=5)) == 19.0  # enough: the validation split alone
    assert capsys.readouterr().err == ""
    pooled = tnr_threshold(*_dataset_and_detector(validation=7, test_normal=22))  # 29 scores: rank 29, the largest
    assert pooled == 121.0 and "pooled" in capsys.readouterr().err
    with pytest.raises(arpro.ArproError, match="needs at least 19"):
        tnr_threshold(*_dataset_and_detector(validation=7, test_normal=5))


@pytest.mark.slow
def test_outputs_and_tables(reference):
    spec = json.loads((reference / "settings.json").read_text())
    assert spec["settings"]["guidance_scale"] == 0.5  # the value used (gaussian's), not null
    records = [json.loads(line) for line in (reference / "records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(12))
    for arm in ("baseline", "infill", "guided"):
        assert set(records[0][arm]["metrics"]) == {"Ms", "Md", "Momega", "Momega_bar"}
        assert "seconds" not in records[0][arm]
    tables = (reference / "tables.md").read_text()
    assert "Δ, all (% improvement of the mean, guided vs baseline)" in tables and "TNR" in tables  # one category
    assert tables.index("| breast-cancer, flagged |") < tables.index("| breast-cancer, all |")  # flagged inputs first
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["categories"]["breast-cancer"]["n"] == 12
    assert (reference / "tables.csv").read_text().count("\n") == 4  # header + 3 arms
    guided_ms = sorted(r["guided"]["metrics"]["Ms"] for r in records)
    median = (guided_ms[5] + guided_ms[6]) / 2
    assert summary["categories"]["breast-cancer"]["guided"]["Ms"]["median"] == pytest.approx(median)
    median_row = next(line for line in tables.splitlines() if line.startswith("| median, all |"))
    cells = [c.strip() for c in median_row.strip("|").split("|")]
    assert cells[4] == f"{median:.4g}"  # Ms guided, after the row label, n, baseline and infill


@pytest.mark.slow
def test_same_seed_same_jsonl(reference, tmp_path):
    proc = run_cli(*ARGS, "--out", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again" / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()


@pytest.mark.slow
def test_resume_after_a_torn_write(reference, tmp_path):
    out = tmp_path / "torn"
    out.mkdir()
    for name in ("settings.json",):
        (out / name).write_text((reference / name).read_text())
    lines = (reference / "records.jsonl").read_text().splitlines(keepends=True)
    # two complete chunks, half of the third, and a line cut mid-write
    (out / "records.jsonl").write_text("".join(lines[:10]) + lines[10][:25])
    # timings of every input, some twice: a kill between a chunk's timings and its records
    timings = (reference / "timings.jsonl").read_text().splitlines(keepends=True)
    (out / "timings.jsonl").write_text("".join(timings + timings[4:11]))
    proc = run_cli(*ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()
    indices = [json.loads(line)["index"] for line in (out / "timings.jsonl").read_text().splitlines()]
    assert sorted(indices) == list(range(12))  # recomputed with the records, never duplicated
    assert (out / "tables.md").read_text().split("\n| inputs | n | baseline TNR")[0] == (
        (reference / "tables.md").read_text().split("\n| inputs | n | baseline TNR")[0]
    )


@pytest.mark.slow
def test_resume_after_a_torn_timings_line_and_a_foreign_record_is_one_error(reference, tmp_path):
    out = tmp_path / "torn"
    out.mkdir()
    (out / "settings.json").write_text((reference / "settings.json").read_text())
    lines = (reference / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join(lines[:4]))
    timings = (reference / "timings.jsonl").read_text().splitlines(keepends=True)
    (out / "timings.jsonl").write_text("".join(timings[:3]) + timings[3][:9])  # cut mid-line, no newline
    proc = run_cli(*ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()

    (out / "records.jsonl").write_text("".join(lines[:4]) + "[]\n")
    proc = run_cli(*ARGS, "--out", str(out))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "records.jsonl line 5 is not an arpro record" in proc.stderr
    assert (out / "records.jsonl").read_text().endswith("[]\n")  # left as it was


@pytest.mark.slow
def test_resume_after_kill_9(reference, tmp_path):
    out = tmp_path / "killed"
    slow = [*ARGS[:-3], "--steps", "100", "--chunk-size", "2", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "arpro.cli", *slow, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "records.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = records.read_text().count("\n")
    assert 2 <= done_before < 12, "the run was not interrupted halfway"
    again = run_cli(*slow, "--out", str(out))
    assert again.returncode == 0, again.stderr
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(12))  # none missing, none twice
    fresh = run_cli(*slow, "--out", str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr
    assert records.read_bytes() == (tmp_path / "fresh" / "records.jsonl").read_bytes()


@pytest.mark.slow
def test_other_settings_on_the_same_directory_are_refused(reference):
    proc = run_cli(*ARGS[:-3], "--steps", "11", "--quiet", "--out", str(reference))
    assert proc.returncode == 2 and "holds a run with other settings" in proc.stderr


@pytest.mark.slow
def test_two_processes_give_the_same_tables(reference, tmp_path):
    out = tmp_path / "ddp"
    proc = run_cli(*ARGS, "--devices", "2", "--strategy", "ddp", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()
    one = json.loads((reference / "summary.json").read_text())
    two = json.loads((out / "summary.json").read_text())
    for summary in (one, two):
        for entry in summary["categories"].values():
            for arm in summary["arms"]:
                for part in (entry, entry["flagged"]):
                    part[arm].pop("median_seconds")
    assert one == two
    assert not list(out.glob("*.rank*.jsonl"))


def test_summary_delta_is_median_percentage_improvement():
    def record(category, base, guided):
        arm = lambda v: {"metrics": {"Ms": v}, "holds": {"p1": True}, "all_hold": True, "non_anomalous": True}
        return {"category": category, "index": 0, "baseline": arm(base), "infill": arm(base), "guided": arm(guided)}

    records = [record("a", 10.0, 5.0), record("b", -4.0, -6.0), record("c", 2.0, 3.0)]
    summary = summarize(records, [], [{"name": "p1", "metric": "Ms", "label": "Ms"}])
    # improvements: +50%, +50%, -50% -> median +50%
    assert summary["delta"]["Ms"] == pytest.approx(50.0)


def test_spread_takes_every_kind_in_turn():
    split = arpro.Split(torch.zeros(7, 1), torch.ones(7, dtype=torch.long),
                        kinds=["crack", "crack", "crack", "hole", "hole", "stain", "crack"])
    assert split.spread(3) == [0, 3, 5]  # one of each kind, in the split's order
    assert split.spread(5) == [0, 1, 3, 4, 5]
    assert split.spread(99) == list(range(7))
    assert split.subset(split.spread(3)).kinds == ["crack", "hole", "stain"]
    assert arpro.Split(torch.zeros(4, 1), torch.ones(4, dtype=torch.long)).spread(2) == [0, 1]  # no kinds: the first n


def test_one_seed_per_sample_matches_the_batch_it_came_from():
    run = arpro.resolve(arpro.RunSpec(detector="gaussian", settings={"steps": 5}), progress=False)
    x = run.dataset.test().anomalous().x[:4]
    whole = run.repair(x, seed=7, progress=False)
    picked = run.repair(x[[1, 3]], seed=[8, 10], progress=False)
    for arm in ("infill", "guided"):
        assert torch.equal(picked.arms[arm].x_fix, whole.arms[arm].x_fix[[1, 3]])


@pytest.mark.slow
def test_the_default_chunk_size_is_the_datasets(tmp_path):
    """64 rows or windows per batch, where a batch of more costs little more; 16 images, where it does not."""
    from arpro.plugin_api import registry

    out = tmp_path / "e"
    proc = run_cli("evaluate", "--detector", "gaussian", "--limit", "3", "--steps", "4", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "settings.json").read_text())["chunk_size"] == 64
    assert [registry.get("dataset", name).evaluate_chunk for name in ("process", "csv", "textures")] == [64, 64, 16]


def test_a_kind_whose_repairs_rarely_score_as_normal_is_named_in_a_warning():
    from arpro.workflows.evaluate import Job, run_chunk

    run = arpro.resolve(arpro.RunSpec(detector="gaussian", settings={"steps": 4}), progress=False)
    anomalous = run.dataset.test().anomalous().subset(list(range(10)))
    anomalous.kinds = ["spike", "bias"] * 5
    records, _ = run_chunk(Job("plant", run, anomalous, threshold=1e9, chunk_size=10), 0, 10)
    props = [{"name": "p1", "metric": "Ms", "label": "Ms"}]
    assert not any("rarely score as normal" in w for w in summarize(records, [], props)["warnings"])
    for r in records[1:7:2]:  # three of the five bias repairs left above the threshold
        r["guided"]["non_anomalous"] = False
    rare = [w for w in summarize(records, [], props)["warnings"] if "rarely score as normal" in w]
    assert len(rare) == 1 and "plant/bias (0.40 of 5)" in rare[0] and "spike" not in rare[0]
    for r in records:
        r["kind"] = "spike"  # one kind: the category is judged instead, 7 of 10 normal
    assert not any("rarely score as normal" in w for w in summarize(records, [], props)["warnings"])
    records[0]["guided"]["non_anomalous"] = records[2]["guided"]["non_anomalous"] = False
    assert not any("rarely score as normal" in w for w in summarize(records, [], props)["warnings"])  # 0.5: not below
    records[4]["guided"]["non_anomalous"] = False
    rare = [w for w in summarize(records, [], props)["warnings"] if "rarely score as normal" in w]
    assert len(rare) == 1 and "plant (0.40 of 10)" in rare[0]


def test_records_carry_the_anomaly_kind_and_tables_break_tnr_down_by_it():
    """Where the dataset knows each input's kind, records name it and tables.md gets a row per kind."""
    from arpro.workflows.evaluate import Job, run_chunk
    from arpro.workflows.summary import markdown_tables

    run = arpro.resolve(arpro.RunSpec(detector="gaussian", settings={"steps": 4}), progress=False)
    anomalous = run.dataset.test().anomalous().subset(list(range(6)))
    anomalous.kinds = ["spike", "bias", "spike", "bias", "bias", "spike"]
    records, _ = run_chunk(Job("plant", run, anomalous, threshold=1e9, chunk_size=6), 0, 6)
    assert [r["kind"] for r in records] == anomalous.kinds
    records[1]["guided"]["non_anomalous"] = False  # one bias repair left above the threshold
    props = [{"name": "p1", "metric": "Ms", "label": "Ms"}]
    kinds = summarize(records, [], props)["by_kind"]
    assert list(kinds) == ["plant/bias", "plant/spike"]
    assert kinds["plant/bias"]["n"] == 3 and kinds["plant/bias"]["guided"]["tnr"] == pytest.approx(2 / 3)
    assert kinds["plant/spike"]["guided"]["tnr"] == 1.0
    table = markdown_tables(summarize(records, [], props))
    assert "| plant/bias | 3 |" in table and "guided TNR" in table
    for r in records:
        r["kind"] = "spike"  # one kind: nothing to break down
    assert summarize(records, [], props)["by_kind"] == {} and "category/kind" not in markdown_tables(summarize(records, [], props))


def test_omega_against_a_labelled_defect():
    """Precision, recall, touch and alpha's AUROC per input; none where nothing is labelled."""
    from arpro.metrics import omega_on_truth

    omega = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    alpha = torch.tensor([[4.0, 3, 2, 1], [1, 2, 3, 4], [1, 1, 1, 1]])
    truth = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    first, second, third = omega_on_truth(omega, alpha, truth)
    assert first == {"precision": 0.5, "recall": 0.5, "touches": True, "alpha_auroc": 0.5}
    assert second["touches"] is False and second["precision"] == 0.0 and second["alpha_auroc"] == 0.0
    assert third is None
    # the last feature is padding: its truth (mirrored there by a letterbox) is not there to find
    valid = torch.tensor([[1, 1, 1, 0]] * 3)
    truth[0, 3] = 1
    assert omega_on_truth(omega, alpha, truth, valid)[0] == {**first, "alpha_auroc": 0.0}  # over the 3 valid only
    assert omega_on_truth(omega, alpha, truth)[0]["recall"] == 1 / 3


def test_evaluate_records_and_tables_judge_omega_on_the_labelled_defect():
    """With masks, each record says how omega meets the defect, and tables.md gets a table of it,
    flagged inputs first; without a labelled defect an input has no such figure."""
    from arpro.workflows.evaluate import Job, run_chunk
    from arpro.workflows.summary import markdown_tables

    run = arpro.resolve(arpro.RunSpec(detector="gaussian", settings={"steps": 4}), progress=False)
    anomalous = run.dataset.test().anomalous().subset(list(range(4)))
    anomalous.masks = torch.ones_like(anomalous.x)
    anomalous.masks[1] = 0  # nothing labelled: no figure
    records, _ = run_chunk(Job("plant", run, anomalous, threshold=-1e9, chunk_size=4), 0, 4)
    assert "omega_on_truth" not in records[1]
    for r in (records[0], records[2], records[3]):  # the whole row labelled: omega is all defect
        located = r["omega_on_truth"]
        assert located["precision"] == 1.0 and located["recall"] == pytest.approx(r["omega_fraction"])
        assert located["touches"] == (r["omega_fraction"] > 0)
    summary = summarize(records, [], [{"name": "p1", "metric": "Ms", "label": "Ms"}])
    assert summary["categories"]["plant"]["omega_on_truth"]["n"] == 3
    table = markdown_tables(summary)
    assert "ω touches it" in table and table.index("| plant, flagged | 3 |") < table.index("| plant, all | 3 |")


def test_the_gallery_draws_the_runs_own_repairs(tmp_path, monkeypatch):
    """A chunk holding gallery inputs draws them from its own result: nothing is repaired a second time."""
    from arpro.workflows.evaluate import Job, run_chunk

    run = arpro.resolve(arpro.RunSpec(detector="gaussian", settings={"steps": 4}), progress=False)
    job = Job("plant", run, run.dataset.test().anomalous().subset(list(range(6))), threshold=0.0, chunk_size=3)
    calls = []
    repair = Job.repair_inputs
    monkeypatch.setattr(Job, "repair_inputs",
                        lambda self, indices, **kw: calls.append(list(indices)) or repair(self, indices, **kw))
    for start in (0, 3):
        run_chunk(job, start, start + 3, tmp_path)
    assert calls == [[0, 1, 2], [3, 4, 5]]
    names = {p.name for p in (tmp_path / "gallery" / "plant").iterdir()}
    assert {"repair-from-0.png", "repair-from-3.png"} <= names and all("-from-" in n for n in names)
