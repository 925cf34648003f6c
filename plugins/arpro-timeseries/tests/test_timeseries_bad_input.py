"""The time-series plugin's bad inputs: each is one ``error:`` line, exit status 2, nothing written
(``arpro.testing.check_one_error_line``, in-process)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from arpro.testing import check_one_error_line

REPAIR = ["repair", "--detector", "gpt2", "--out", "out"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    pretrained = root / "gpt2_pickle"
    pretrained.mkdir()
    (pretrained / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2}))
    (pretrained / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}))
    return root


CASES = [
    ("pretrained pickle", ["train", "detector", "--detector", "gpt2", "--out", "m.safetensors",
                                       "--model-option", "pretrained={bad}/gpt2_pickle"], "gpt2_pickle"),
    ("process seed not a number", [*REPAIR, "--option", "seed=abc"], "option seed must be a whole number >= 0"),
    ("process test_steps negative", [*REPAIR, "--option", "test_steps=-5"],
     "option test_steps must be a whole number >= 1"),
    ("process test_steps zero", [*REPAIR, "--option", "test_steps=0"], "option test_steps must be a whole number >= 1"),
]


def _case(case):
    """``(name, args, fragment)``, or a ``pytest.param`` of them with marks, as the parameters of one test."""
    name, *values = getattr(case, "values", case)
    return pytest.param(*values, id=name, marks=getattr(case, "marks", ()))


@pytest.mark.parametrize("args, fragment", [_case(case) for case in CASES])
def test_bad_input_is_one_error_line(args, fragment, bad, tmp_path):
    check_one_error_line([a.replace("{bad}", str(bad)) for a in args], fragment, tmp_path, bad)
