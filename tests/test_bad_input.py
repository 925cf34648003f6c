"""The error contract of docs/reference/behaviour.md, case by case: a bad input is one ``error:`` line on
stderr, exit status 2, no traceback, and nothing written or changed on disk.

Each case runs the command line in-process (``arpro.testing.check_one_error_line``) in a fresh
working directory, beside one shared folder of bad files. Each plugin's own tests hold its cases.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from arpro.testing import check_one_error_line

REPAIR = ["repair", "--detector", "gaussian", "--out", "out", "--quiet"]
TRAIN = ["train", "detector", "--detector", "gaussian"]
TRAIN_REPAIRER = ["train", "repairer", "--repairer", "mlp-ddpm"]
EVALUATE = ["evaluate", "--detector", "gaussian", "--quiet"]


def header_checkpoint(path: Path, header, tensors: dict | None = None) -> None:
    """A safetensors file whose ``arpro`` metadata is ``header`` (a string is written as is)."""
    metadata = {"arpro": header if isinstance(header, str) else json.dumps(header)}
    save_file(tensors or {"w": torch.zeros(1)}, str(path), metadata=metadata)


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """Every bad file the cases name, made once."""
    from sklearn.datasets import load_breast_cancer

    root = tmp_path_factory.mktemp("bad")
    frame = load_breast_cancer(as_frame=True).data
    rows = frame.head(3)
    rows.to_csv(root / "rows.csv", index=False)
    rows.assign(**{"mean radius": [1.0, np.nan, 2.0]}).to_csv(root / "nan.csv", index=False)
    rows.assign(**{"mean radius": [1.0, np.inf, 2.0]}).to_csv(root / "inf.csv", index=False)
    rows.assign(**{"mean radius": ["1", "abc", "2"]}).to_csv(root / "text.csv", index=False)
    rows.drop(columns=["mean radius"]).to_csv(root / "narrow.csv", index=False)
    rows.assign(**{"mean radius": [1.0, 1e300, 2.0]}).to_csv(root / "huge_number.csv", index=False)
    rows.assign(**{"mean radius": ["True", "False", "True"]}).to_csv(root / "booleans.csv", index=False)
    (root / "wide.csv").write_text(",".join(f"c{i}" for i in range(20_001)) + "\n" + ",".join(["1"] * 20_001) + "\n")
    header, *lines = (root / "rows.csv").read_text().splitlines()
    (root / "duplicate.csv").write_text(header + ",mean radius\n" + "".join(line + ",99\n" for line in lines))
    (root / "empty.csv").write_text(header + "\n")
    frame.head(40).assign(**{"mean radius": 3e38}).assign(**{"mean radius": [3e38] * 20 + [-3e38] * 20}).to_csv(
        root / "train_overflow.csv", index=False)
    labelled = frame.head(40).assign(label=0)
    labelled.assign(**{"mean radius": ["x"] * 40}).to_csv(root / "train_text.csv", index=False)

    np.save(root / "wrong_shape.npy", np.ones((7, 7), dtype=np.float32))
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (root / "mask.txt").write_text("1 0 1\n")

    d = {"kind": "detector", "name": "gaussian", "config": {"input_shape": [30], "min_std": 1e-3}}
    header_checkpoint(root / "not_json.safetensors", "{not json")
    header_checkpoint(root / "empty_header.safetensors", {})
    header_checkpoint(root / "list_header.safetensors", [1, 2])
    header_checkpoint(root / "no_kind.safetensors", {k: v for k, v in d.items() if k != "kind"})
    header_checkpoint(root / "unknown_key.safetensors", {**d, "config": {**d["config"], "bogus": 1}})
    header_checkpoint(root / "config_list.safetensors", {**d, "config": [30]})
    header_checkpoint(root / "huge_shape.safetensors", {**d, "config": {**d["config"], "input_shape": [10**9, 10**9]}})
    header_checkpoint(root / "bad_type.safetensors", {**d, "config": {**d["config"], "min_std": "abc"}})
    header_checkpoint(root / "int32_tensor.safetensors", d, {"mu": torch.zeros(30, dtype=torch.int32),
                                                           "sigma": torch.ones(30), "tau": torch.ones(30),
                                                           "train_scores": torch.ones(5)})
    frame.head(60).assign(label=0).to_csv(root / "normal_only.csv", index=False)
    header_checkpoint(root / "nan_config.safetensors", {**d, "config": {**d["config"], "min_std": float("nan")}})
    header_checkpoint(root / "negative_config.safetensors", {**d, "config": {**d["config"], "min_std": -5}})
    np.save(root / "nan_mask.npy", np.full(30, np.nan, dtype=np.float32))
    np.save(root / "strings.npy", np.array(["a"] * 30))
    header_checkpoint(root / "nan.safetensors", d, {"mu": torch.full((30,), float("nan")), "sigma": torch.ones(30),
                                                    "tau": torch.ones(30), "train_scores": torch.ones(8)})
    header_checkpoint(root / "repairer.safetensors", {"kind": "repairer", "name": "mlp-ddpm", "config": {}})
    (root / "truncated.safetensors").write_bytes((root / "nan.safetensors").read_bytes()[:40])
    (root / "pickle.safetensors").write_bytes(pickle.dumps({"w": 1}))
    (root / "existing.safetensors").write_bytes(b"a user's file")
    (root / "existing_dir").mkdir()
    (root / "existing_dir" / "keep.txt").write_text("keep")
    (root / "a_file").write_text("not a folder")

    run = root / "corrupt_run"
    run.mkdir()
    (run / "settings.json").write_text("{truncated")
    summary_run = root / "bad_summary"
    summary_run.mkdir()
    (summary_run / "summary.json").write_text("[1, 2")
    (root / "report.html").write_text("a user's page")
    return root


CASES = [
    # options and settings
    ("seed overflow", [*REPAIR, "--seed", "99999999999999999999"], "--seed"),
    ("seed negative", [*REPAIR, "--seed", "-5"], "--seed"),
    ("steps above schedule", [*REPAIR, "--steps", "1001"], "--steps 1001"),
    ("steps far above schedule", [*REPAIR, "--steps", "3000"], "--steps 3000"),
    ("steps zero", [*REPAIR, "--steps", "0"], "--steps"),
    ("steps not a number", [*REPAIR, "--steps", "abc"], "'--steps'"),
    ("scheduler unknown", [*REPAIR, "--scheduler", "foo"], "'--scheduler'"),
    ("guide-on unknown", [*REPAIR, "--guide-on", "zz"], "'--guide-on'"),
    ("missing --out", ["repair", "--detector", "gaussian"], "'--out'"),
    ("unknown command", ["frobnicate"], "frobnicate"),
    ("unknown flag", [*REPAIR, "--stepz", "3"], "--stepz"),
    ("mask quantile above 1", [*REPAIR, "--mask", "top", "--mask-quantile", "2"], "--mask-quantile"),
    ("mask quantile negative", [*REPAIR, "--mask", "top", "--mask-quantile", "-0.1"], "--mask-quantile"),
    ("mask of wrong shape", [*REPAIR, "--mask", "{bad}/wrong_shape.npy"], "(7, 7)"),
    ("mask not npy", [*REPAIR, "--mask", "{bad}/mask.txt"], "--mask"),
    ("mask rule unknown", [*REPAIR, "--mask", "best"], "train, top, top-train, truth"),
    ("mask of pickled objects", [*REPAIR, "--mask", "{bad}/objects.npy"], "objects.npy"),
    ("t0 zero", [*REPAIR, "--t0", "0"], "--t0"),
    ("t0 above 1", [*REPAIR, "--t0", "1.5"], "--t0"),
    ("infill-stop 1", [*REPAIR, "--infill-stop", "1"], "--infill-stop"),
    ("guidance scale nan", [*REPAIR, "--guidance-scale", "nan"], "--guidance-scale"),
    ("guidance scale inf", [*REPAIR, "--guidance-scale", "inf"], "--guidance-scale"),
    ("guidance scale negative", [*REPAIR, "--guidance-scale", "-1"], "--guidance-scale"),
    ("weight inf", [*REPAIR, "--weight", "p2=inf"], "p2"),
    ("weight nan", [*REPAIR, "--weight", "p2=nan"], "p2"),
    ("weight negative", [*REPAIR, "--weight", "p4=-1"], "p4"),
    ("weight of an unused property", [*REPAIR, "--weight", "p9=1"], "p9"),
    ("weight syntax", [*REPAIR, "--weight", "p2"], "--weight"),
    ("delta2 negative", [*REPAIR, "--delta2", "-1"], "--delta2"),
    ("delta4 nan", [*REPAIR, "--delta4", "nan"], "--delta4"),
    ("grad clip negative", [*REPAIR, "--grad-clip", "-1"], "--grad-clip"),
    ("count zero", [*REPAIR, "--count", "0"], "--count"),
    ("unknown property", [*REPAIR, "--property", "nosuch"], "nosuch"),
    ("unknown property option", [*REPAIR, "--property", "+range:lo=1"], "'range' has no option 'lo'"),
    ("property option of wrong type", [*REPAIR, "--property", "+range:low=abc"], "low='abc' is not a"),
    ("property option syntax", [*REPAIR, "--property", "+range:low"], "KEY=VALUE"),
    ("immutable unknown column", [*REPAIR, "--property", "+immutable:columns=nosuch"], "'nosuch'"),
    ("immutable needs columns or mask", [*REPAIR, "--property", "+immutable"], "'immutable'"),
    ("property named twice", [*REPAIR, "--property", "+p1"], "'p1' is named twice"),
    ("weight of a constraint", [*REPAIR, "--property", "+range", "--weight", "range=2"], "range"),
    ("unknown detector", ["repair", "--detector", "gausian", "--out", "out"], "gausian"),
    ("unknown repairer", [*REPAIR, "--repairer", "nosuch"], "nosuch"),
    ("repairer of another domain", [*REPAIR, "--repairer", "ddpm"], "image"),
    ("unknown category", [*REPAIR, "--dataset", "breast-cancer:foo"], "foo"),
    ("unknown dataset", [*REPAIR, "--dataset", "nosuch"], "nosuch"),
    ("dataset of another domain", [*REPAIR, "--dataset", "textures"], "textures"),
    ("unknown dataset option", [*REPAIR, "--option", "bogus=1"], "bogus"),
    ("option syntax", [*REPAIR, "--option", "noequals"], "--option"),
    ("missing data root", [*REPAIR, "--data-root", "{bad}/nowhere"], "--data-root"),
    ("missing checkpoint", [*REPAIR, "--detector-checkpoint", "{bad}/nowhere.safetensors"], "--detector-checkpoint"),
    ("missing input", [*REPAIR, "--input", "{bad}/nowhere.csv"], "--input"),
    ("device absent", [*REPAIR, "--device", "cuda:99"], "--device cuda:99"),
    ("device unknown", [*REPAIR, "--device", "tpu"], "--device must be"),
    ("precision unknown", [*REPAIR, "--precision", "64"], "--precision must be"),
    ("precision fp16 on cpu", [*REPAIR, "--device", "cpu", "--precision", "16-mixed"], "bf16-mixed"),
    ("evaluate device absent", [*EVALUATE, "--out", "out", "--device", "cuda:99"], "--device cuda:99"),
    ("train device absent", [*TRAIN, "--out", "m.safetensors", "--device", "cuda:99"], "--device cuda:99"),
    ("train format the model lacks", [*TRAIN, "--out", "m", "--format", "diffusers"], "--format must be arpro"),
    ("checkpoint folder for a file model", [*REPAIR, "--repairer-checkpoint", "{bad}/existing_dir"], "not a folder"),
    # checkpoints
    ("header not json", [*REPAIR, "--detector-checkpoint", "{bad}/not_json.safetensors"], "not_json.safetensors"),
    ("header empty", [*REPAIR, "--detector-checkpoint", "{bad}/empty_header.safetensors"], "empty_header"),
    ("header a list", [*REPAIR, "--detector-checkpoint", "{bad}/list_header.safetensors"], "list_header"),
    ("header without kind", [*REPAIR, "--detector-checkpoint", "{bad}/no_kind.safetensors"], "no_kind"),
    ("config key unknown", [*REPAIR, "--detector-checkpoint", "{bad}/unknown_key.safetensors"], "bogus"),
    ("config not a mapping", [*REPAIR, "--detector-checkpoint", "{bad}/config_list.safetensors"], "config_list"),
    ("config huge shape", [*REPAIR, "--detector-checkpoint", "{bad}/huge_shape.safetensors"], "input_shape"),
    ("config wrong type", [*REPAIR, "--detector-checkpoint", "{bad}/bad_type.safetensors"], "min_std"),
    ("checkpoint with nan", [*REPAIR, "--detector-checkpoint", "{bad}/nan.safetensors"], "not finite"),
    ("checkpoint of a repairer", [*REPAIR, "--detector-checkpoint", "{bad}/repairer.safetensors"], "repairer"),
    ("checkpoint truncated", [*REPAIR, "--detector-checkpoint", "{bad}/truncated.safetensors"], "truncated"),
    ("checkpoint a pickle", [*REPAIR, "--detector-checkpoint", "{bad}/pickle.safetensors"], "pickle.safetensors"),
    # output locations
    ("out in /proc", ["repair", "--detector", "gaussian", "--out", "/proc/arpro-x", "--quiet"], "/proc/arpro-x"),
    ("out under a file", ["repair", "--detector", "gaussian", "--out", "{bad}/a_file/out", "--quiet"], "a_file"),
    ("out is a file", ["repair", "--detector", "gaussian", "--out", "{bad}/a_file", "--quiet"], "a_file"),
    ("out holds results", ["repair", "--detector", "gaussian", "--out", "{bad}/existing_dir", "--quiet"], "--overwrite"),
    ("train out is a folder", [*TRAIN, "--out", "{bad}/existing_dir", "--overwrite"], "existing_dir"),
    ("train out exists", [*TRAIN, "--out", "{bad}/existing.safetensors"], "--overwrite"),
    ("train out in /proc", [*TRAIN, "--out", "/proc/arpro.safetensors"], "/proc/arpro.safetensors"),
    ("model option wrong type", [*TRAIN, "--out", "m.safetensors", "--model-option", "min_std=abc"], "min_std"),
    ("model option unknown", [*TRAIN, "--out", "m.safetensors", "--model-option", "bogus=1"], "bogus"),
    ("model option not an int", [*TRAIN_REPAIRER, "--out", "m.safetensors", "--model-option", "width=1.5"], "width"),
    # tables
    ("csv with nan", [*REPAIR, "--input", "{bad}/nan.csv"], "mean radius"),
    ("csv with inf", [*REPAIR, "--input", "{bad}/inf.csv"], "mean radius"),
    ("csv with text", [*REPAIR, "--input", "{bad}/text.csv"], "abc"),
    ("csv missing column", [*REPAIR, "--input", "{bad}/narrow.csv"], "mean radius"),
    ("csv duplicate header", [*REPAIR, "--input", "{bad}/duplicate.csv"], "mean radius"),
    ("csv number overflows float32", [*REPAIR, "--input", "{bad}/huge_number.csv"], "float32"),
    ("csv without rows", [*REPAIR, "--input", "{bad}/empty.csv"], "empty.csv"),
    ("training csv with text", [*TRAIN, "--dataset", "csv", "--data-root", "{bad}/train_text.csv", "--out", "m.safetensors"],
     "mean radius"),
    # evaluate, ablate, report
    ("evaluate corrupt settings", [*EVALUATE, "--out", "{bad}/corrupt_run"], "settings.json"),
    ("evaluate chunk size 0", [*EVALUATE, "--out", "out", "--chunk-size", "0"], "--chunk-size"),
    ("evaluate mask file", [*EVALUATE, "--out", "out", "--mask", "{bad}/wrong_shape.npy"], "--mask"),
    ("ablate grid text", ["ablate", "--detector", "gaussian", "--out", "out", "--grid", "a,b"], "--grid"),
    ("ablate grid negative", ["ablate", "--detector", "gaussian", "--out", "out", "--grid", "-1"], "--grid"),
    ("check limit 0", ["check", "--detector", "gaussian", "--limit", "0"], "--limit"),
    ("check without anomalous test rows", ["check", "--detector", "gaussian", "--dataset", "csv", "--data-root",
                                           "{bad}/rows.csv"], "labelled test split"),
    # an --out in folders that do not exist yet: they are not left behind, and no "created folder" note is printed
    ("repair into new folders, missing input", ["repair", "--detector", "gaussian", "--quiet", "--out", "new/deeper/out",
                                                "--input", "nope.csv"], "nope.csv"),
    ("train into new folders, unknown model option", [*TRAIN, "--out", "new/deeper/m.safetensors", "--model-option",
                                                      "bogus=1"], "bogus"),
    ("train repairer holdout too large", [*TRAIN_REPAIRER, "--out", "m.safetensors", "--holdout", "0.9"], "--holdout"),
    ("report malformed summary", ["report", "{bad}/bad_summary", "--out", "page.html"], "summary.json"),
    ("report missing folder", ["report", "{bad}/nowhere"], "nowhere"),
    ("report out exists", ["report", "{bad}/bad_summary", "--out", "{bad}/report.html"], "--overwrite"),
    ("training column overflowing float32", [*TRAIN, "--dataset", "csv", "--data-root", "{bad}/train_overflow.csv",
                                            "--out", "m.safetensors"], "'mean radius'"),
    ("config value NaN", [*REPAIR, "--detector-checkpoint", "{bad}/nan_config.safetensors"], "min_std=nan is not finite"),
    ("config value out of range", [*REPAIR, "--detector-checkpoint", "{bad}/negative_config.safetensors"],
     "min_std must be positive"),
    ("mask all NaN", [*REPAIR, "--mask", "{bad}/nan_mask.npy"], "0/1 values"),
    ("immutable mask all NaN", [*REPAIR, "--property", "+immutable:mask={bad}/nan_mask.npy"], "0/1 values"),
    ("immutable mask of strings", [*REPAIR, "--property", "+immutable:mask={bad}/strings.npy"], "not numbers"),
    ("property option of the wrong type", [*REPAIR, "--property", "+immutable:columns=3"],
     "property 'immutable': columns=3 is not a"),
    ("weight for a constraint", [*REPAIR, "--property", "+immutable:columns=mean radius", "--weight", "immutable=2"],
     "'immutable', which is not a guiding property (p1, p2, p3, p4)"),
    ("out empty", ["repair", "--detector", "gaussian", "--out", "", "--quiet"], "--out must name a folder"),
    ("report ablation not an ablation", ["report", "{bad}", "--ablation", "{bad}"], "not a folder written by arpro ablate"),
    ("csv true/false cell", [*REPAIR, "--input", "{bad}/booleans.csv"], "true/false value"),
    ("csv far too wide", [*REPAIR, "--input", "{bad}/wide.csv"], "more than 10,000 columns"),
    ("checkpoint tensor of another dtype", [*REPAIR, "--detector-checkpoint", "{bad}/int32_tensor.safetensors"],
     "holds 'mu' as torch.int32, not the model's torch.float32"),
    ("calibrate without anomalous inputs", ["calibrate", "--detector", "gaussian", "--dataset", "csv", "--data-root",
                                            "{bad}/normal_only.csv", "--out", "c.json", "--quiet"], "no anomalous test inputs"),
    ("devices above the cores", [*EVALUATE, "--out", "out", "--devices", "1000"], "--devices 1000 on the CPU"),
    ("devices zero", [*TRAIN, "--out", "m.safetensors", "--devices", "0"], "at least 1"),
    ("samples far too many", [*REPAIR, "--samples", "1000000000"], "--samples must be 1 to 1024"),
    ("count far too many", [*REPAIR, "--count", "1000000000"], "--count must be 1 to 10000"),
    ("samples grid not whole", ["calibrate", "--detector", "gaussian", "--out", "cal.json", "--samples-grid", "1.5"],
     "--samples-grid values must be whole numbers"),
]


@pytest.mark.parametrize("args, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line(args, fragment, bad, tmp_path):
    check_one_error_line([a.replace("{bad}", str(bad)) for a in args], fragment.replace("{bad}", str(bad)), tmp_path, bad)
