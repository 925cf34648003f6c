"""--device and --precision: checked before anything loads, CPU at 32 bits exactly as before,
bf16 autocast through Lightning Fabric, and (where a GPU is present) CPU and CUDA repairs agree."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import arpro
from arpro.cli import app
from arpro.runtime.devices import check_device, check_precision, place

REPAIR = ["repair", "--detector", "gaussian", "--count", "2", "--steps", "8", "--quiet"]


def without_seconds(report):
    """``report.json`` less its wall-clock times, the one part that differs from run to run."""
    if isinstance(report, dict):
        return {k: without_seconds(v) for k, v in report.items() if k != "seconds"}
    return [without_seconds(v) for v in report] if isinstance(report, list) else report


def test_device_cpu_gives_the_same_outputs_as_the_default(tmp_path):
    runner = CliRunner()
    for name, extra in (("default", []), ("cpu", ["--device", "cpu", "--precision", "32"])):
        result = runner.invoke(app, [*REPAIR, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    default, cpu = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("default", "cpu"))
    assert default["spec"]["device"] == cpu["spec"]["device"] == "cpu"
    assert json.dumps(without_seconds(default)) == json.dumps(without_seconds(cpu))
    others = sorted(p.name for p in (tmp_path / "default").iterdir() if p.name != "report.json")
    assert others and others == sorted(p.name for p in (tmp_path / "cpu").iterdir() if p.name != "report.json")
    for name in others:
        assert (tmp_path / "default" / name).read_bytes() == (tmp_path / "cpu" / name).read_bytes(), name


def test_device_and_precision_checks(monkeypatch):
    assert check_device("cpu") == "cpu"
    for bad in ("gpu", "cuda:x", "cpu:0", "mps:1", ""):
        with pytest.raises(arpro.ArproError, match="--device must be"):
            check_device(bad)
    with pytest.raises(arpro.ArproError, match="--precision must be"):
        check_precision("64", "cpu")
    with pytest.raises(arpro.ArproError, match="bf16-mixed"):
        check_precision("16-mixed", "cpu")
    assert check_precision("16-mixed", "cuda") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("auto") == "cpu"  # never mps: that must be asked for
    with pytest.raises(arpro.ArproError, match="no CUDA device"):
        arpro.RunSpec(detector="gaussian", device="cuda")  # refused when the spec is made, before any data loads
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("auto") == "cuda"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_error_line(tmp_path):
    from arpro.testing import run_cli

    proc = run_cli(*REPAIR, "--out", str(tmp_path / "out"), "--device", "cuda")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: --device cuda") and not (tmp_path / "out").exists()


def test_placed_model_computes_under_fabric_and_returns_cpu_tensors(gaussian, tiny_repairer, anomalous_rows):
    """bf16-mixed on the CPU: Fabric's autocast runs the networks, and the repair stays finite and close
    to the 32-bit one; placing with None puts a model back exactly as it was."""
    settings = arpro.RepairSettings(steps=10)
    exact = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=settings, progress=False)
    fabric = arpro.launch_fabric(device="cpu", precision="bf16-mixed")
    try:
        place(tiny_repairer, fabric)
        x_t, t = anomalous_rows[:2].clone(), torch.tensor([500, 500])
        with torch.no_grad():
            out = tiny_repairer(x_t, t)
            with fabric.autocast():  # what the placed forward runs under
                inside = tiny_repairer.__class__.forward(tiny_repairer, x_t, t)
        assert inside.dtype == torch.bfloat16 and out.dtype == torch.float32 and out.device.type == "cpu"
        mixed = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=settings, progress=False)
    finally:
        place(tiny_repairer, None)
    assert "forward" not in tiny_repairer.__dict__
    again = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=settings, progress=False)
    for arm in exact.arms:
        x32, x16 = exact.arms[arm].x_fix, mixed.arms[arm].x_fix
        assert torch.isfinite(x16).all() and x16.dtype == x32.dtype
        assert not torch.equal(x16, x32)  # bf16 really ran
        assert (x16 - x32).abs().max() < 0.1 * x32.abs().max()
        assert torch.equal(again.arms[arm].x_fix, x32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_repairs_agree():
    results = {}
    for device in ("cpu", "cuda"):
        spec = arpro.RunSpec(detector="gaussian", device=device, settings={"steps": 20}, seed=3)
        run = arpro.resolve(spec, progress=False)
        if device == "cuda":
            assert next(run.repairer.parameters()).device.type == "cuda"
        results[device] = run.repair(run.dataset.test().anomalous().x[:4], progress=False)
    for arm, cpu in results["cpu"].arms.items():
        cuda = results["cuda"].arms[arm]
        assert cuda.x_fix.device.type == "cpu"
        torch.testing.assert_close(cuda.x_fix, cpu.x_fix, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(cuda.score, cpu.score, atol=1e-2, rtol=1e-3)


def test_train_in_bf16_on_cpu_through_fabric(tmp_path):
    """``arpro train --precision bf16-mixed``: the loop runs under Fabric's autocast and the weights stay
    finite and near the 32-bit ones; the model is back on the CPU for saving."""
    from arpro.workflows.train import train_and_save

    options = {"width": 32, "depth": 1, "train_steps": 20}
    weights = {}
    for precision in ("32", "bf16-mixed"):
        torch.manual_seed(0)  # the same initial weights for both: only the precision differs
        model = train_and_save("repairer", "mlp-ddpm", tmp_path / f"{precision}.safetensors", model_options=options,
                               device="cpu", precision=precision)
        weights[precision] = model.state_dict()
        assert (tmp_path / f"{precision}.safetensors").is_file()
    for name, exact in weights["32"].items():
        mixed = weights["bf16-mixed"][name]
        assert mixed.device.type == "cpu" and mixed.dtype == exact.dtype and torch.isfinite(mixed).all()
        assert (mixed - exact).abs().max() <= 0.05 + 0.05 * exact.abs().max(), name
    assert any(not torch.equal(weights["32"][k], weights["bf16-mixed"][k]) for k in weights["32"])
