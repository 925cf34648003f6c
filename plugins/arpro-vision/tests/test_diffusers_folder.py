"""Bring your own diffusion model: a diffusers ``save_pretrained`` folder as the ddpm repairer,
and ``arpro train repairer --format diffusers`` writing one. Tiny UNets at 16 px, CPU."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import arpro
from arpro.io import checkpoint
from arpro.plugin_api import registry


OPTIONS = {"image_size": 16, "n_train": 8, "n_test_normal": 2, "n_test_anomalous": 2, "train_steps": 2, "batch_size": 4}
CLI_OPTIONS = [arg for key, value in OPTIONS.items() for arg in ("--option", f"{key}={value}")]


def tiny_unet(size: int = 16):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pipeline folder as diffusers' unconditional training example writes it, with a non-default
    schedule, a bare UNet folder, and a tiny fitted fastflow checkpoint, all for 16 px textures."""
    from diffusers import DDPMPipeline, DDPMScheduler

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("diffusers")
    unet = tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root / "pipeline")
    tiny_unet().save_pretrained(root / "bare")
    data = registry.get("dataset", "textures")(root=None, category="brick", **OPTIONS)
    detector = registry.get("detector", "fastflow").for_dataset(data)
    detector.fit(data.train().x, progress=False)
    checkpoint.save(detector, root / "fastflow.safetensors")
    return root, unet, scheduler, data


def run_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    from arpro import cli

    monkeypatch.setattr(sys, "argv", ["arpro", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def test_pipeline_folder_loads_with_its_weights_and_schedule(saved):
    root, unet, scheduler, data = saved
    model = checkpoint.obtain_model("repairer", "ddpm", data, checkpoint_path=root / "pipeline")
    loaded, original = model.unet.state_dict(), unet.state_dict()
    assert loaded.keys() == original.keys() and all(torch.equal(loaded[k], original[k]) for k in original)
    assert model.train_timesteps == 200
    ours = model.make_scheduler("ddpm")
    torch.testing.assert_close(ours.alphas_cumprod, scheduler.alphas_cumprod, rtol=0, atol=0)  # the user's noise schedule
    assert torch.equal(model.x_mean, data.train().x.mean(0))


def test_repair_through_the_cli_with_a_diffusers_folder(saved, tmp_path, monkeypatch, capsys):
    root, *_ = saved
    out = tmp_path / "out"
    code, err = run_cli(["repair", "--detector", "fastflow", "--detector-checkpoint", root / "fastflow.safetensors",
                         "--repairer", "ddpm", "--repairer-checkpoint", root / "pipeline", "--dataset", "textures:brick",
                         *CLI_OPTIONS, "--count", "2", "--steps", "4", "--out", out, "--quiet"], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["spec"]["repairer_checkpoint"] == str(root / "pipeline") and len(report["inputs"]) == 2
    for row in report["inputs"]:
        assert not row["guided"]["failed"]
        assert all(v is not None for v in row["guided"]["metrics"].values())  # finite (non-finite is written as null)


def test_bare_unet_folder_repairs_with_the_default_schedule(saved):
    root, _, _, data = saved
    detector = checkpoint.load(root / "fastflow.safetensors", "detector", "fastflow")
    repairer = checkpoint.obtain_model("repairer", "ddpm", data, checkpoint_path=root / "bare")
    assert repairer.train_timesteps == 1000
    x = data.test().anomalous().x[:2]
    result = arpro.repair(x, detector, repairer, settings=arpro.RepairSettings(steps=3), progress=False)
    x_fix = result.arms["guided"].x_fix
    assert x_fix.shape == x.shape == (2, 3, 16, 16) and torch.isfinite(x_fix).all()


def test_unfit_folders_are_refused_with_one_line(saved, tmp_path):
    root, _, _, data = saved
    small = registry.get("dataset", "textures")(root=None, category="brick", **{**OPTIONS, "image_size": 32})
    with pytest.raises(arpro.ArproError, match=r"takes 3x16x16 images.*3x32x32 samples.*image_size=16"):
        checkpoint.obtain_model("repairer", "ddpm", small, checkpoint_path=root / "pipeline")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((root / "bare" / "config.json").read_text())
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"a pickle")
    with pytest.raises(arpro.ArproError, match=r"a pickle arpro does not load.*safe_serialization=True"):
        checkpoint.obtain_model("repairer", "ddpm", data, checkpoint_path=pickled)


@pytest.mark.parametrize("where, change, fragment", [
    ("unet/config.json", {"sample_size": "abc"}, "sample_size, in_channels and out_channels must be positive whole"),
    ("unet/config.json", {"in_channels": 3.5}, "must be positive whole numbers"),
    ("unet/config.json", {"block_out_channels": "8,16"}, "does not describe a UNet2DModel diffusers can build"),
    ("unet/config.json", {"block_out_channels": [4, 8]}, "does not fit the UNet its config.json describes: size mismatch"),
    ("scheduler/scheduler_config.json", {"num_train_timesteps": "many"}, "num_train_timesteps='many' is not a int"),
])
def test_a_diffusers_config_of_wrong_types_is_one_line_before_the_detector_speaks(saved, tmp_path, monkeypatch, capsys,
                                                                                    where, change, fragment):
    import shutil

    root, *_ = saved
    folder = tmp_path / "edited"
    shutil.copytree(root / "pipeline", folder)
    config = json.loads((folder / where).read_text())
    (folder / where).write_text(json.dumps({**config, **change}))
    code, err = run_cli(["repair", "--detector", "fastflow", "--repairer-checkpoint", folder, "--dataset", "textures:brick",
                         *CLI_OPTIONS, "--count", "1", "--steps", "4", "--out", tmp_path / "out", "--quiet"],
                        monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


def test_train_writes_a_diffusers_folder_that_round_trips(saved, tmp_path, monkeypatch, capsys):
    from diffusers import DDPMPipeline

    out = tmp_path / "trained"
    train = ["train", "repairer", "--repairer", "ddpm", "--dataset", "textures:brick", *CLI_OPTIONS,
             "--model-option", "block_out_channels=[8,16]", "--model-option", "norm_num_groups=4",
             "--model-option", "num_train_timesteps=100", "--format", "diffusers", "--out", out]
    code, err = run_cli(train, monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "unet"]
    assert not list(out.glob("**/*.bin")) and (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipeline = DDPMPipeline.from_pretrained(out)  # diffusers reads what arpro wrote
    assert pipeline.scheduler.config.num_train_timesteps == 100
    _, _, _, data = saved
    model = checkpoint.obtain_model("repairer", "ddpm", data, checkpoint_path=out)
    theirs, ours = pipeline.unet.state_dict(), model.unet.state_dict()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs) and model.train_timesteps == 100

    code, err = run_cli([*train, "--overwrite"], monkeypatch, capsys)  # replaces an earlier save, whole
    assert code == 0, err
    (out / "notes.txt").write_text("a user's file")
    code, err = run_cli([*train, "--overwrite"], monkeypatch, capsys)  # refused, after training, before any change
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "not a diffusers checkpoint" in errors[0], err
    assert (out / "notes.txt").read_text() == "a user's file" and (out / "unet").is_dir()
