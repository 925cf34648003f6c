"""The training-free repairers (nearest-patches, nearest-window): registered through their plugins' hooks,
indexed in a fit that trains nothing, in-filling ω from the nearest normal data better than the
training mean, through the engine's arms."""

from __future__ import annotations

import json
import math

import torch

import arpro
from arpro.algorithm.settings import RepairSettings
from arpro.plugin_api import registry
from arpro.workflows import infill_quality
from arpro.workflows.check import problems, run_check
from arpro.testing import check_checkpoint_round_trip


def stripes(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Images ``[n, 3, size, size]`` of vertical stripes (period 8) at random phases: normal pictures whose
    masked part only their surroundings can tell."""
    phase = torch.randint(0, 8, (n,), generator=torch.Generator().manual_seed(seed))
    columns = torch.arange(size)[None, :] + phase[:, None]
    row = torch.sin(2 * math.pi * columns / 8)  # [n, size]
    return row[:, None, None, :].expand(n, 3, size, size).clone()


def waves(n: int, length: int = 32, seed: int = 0) -> torch.Tensor:
    """Windows ``[n, length, 2]``: a sine and its cosine at random phases."""
    phase = torch.rand(n, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    t = torch.arange(length)[None, :] * 2 * math.pi / 16 + phase[:, None]
    return torch.stack([t.sin(), t.cos()], dim=-1)


def test_both_are_registered_by_their_plugins_and_need_no_training():
    for name, domain in (("nearest-patches", "image"), ("nearest-window", "timeseries")):
        entry = registry.registry().entries["repairer"][name]
        assert entry.domain == domain and entry.distribution in ("arpro-vision", "arpro-timeseries")
        assert registry.get("repairer", name).prediction_type == "sample"


def test_both_round_trip_as_checkpoints(tmp_path):
    patches = registry.get("repairer", "nearest-patches")(input_shape=[3, 32, 32], bank_size=64)
    patches.fit(stripes(4), progress=False)
    window = registry.get("repairer", "nearest-window")(input_shape=[32, 2])
    window.fit(waves(8), progress=False)
    for model in (patches, window):
        loaded = check_checkpoint_round_trip(model, tmp_path / f"{model.name}.safetensors")
        assert loaded.bank.shape == model.bank.shape


def test_patches_prefill_continues_the_stripes_from_their_context():
    repairer = registry.get("repairer", "nearest-patches")(input_shape=[3, 32, 32], patch=8, stride=4, bank_size=512)
    repairer.fit(stripes(16), progress=False)
    assert repairer.bank.shape == (512, 3 * 8 * 8)
    x = stripes(4, seed=1)
    omega = torch.zeros_like(x)
    omega[..., 8:20, 10:22] = 1
    filled = repairer.prefill(x, omega)
    assert torch.equal(filled[omega == 0], x[omega == 0])  # ω̄ untouched
    error = ((filled - x).pow(2) * omega).sum() / omega.sum()
    naive = ((repairer.x_mean - x).pow(2) * omega).sum() / omega.sum()
    assert error < 0.05 * naive  # the stripes go on through ω; the mean is flat grey


def test_patches_repair_runs_every_arm_and_in_fills_better_than_the_mean():
    repairer = registry.get("repairer", "nearest-patches")(input_shape=[3, 32, 32], bank_size=512)
    repairer.fit(stripes(16), progress=False)
    figure = infill_quality.measure(repairer, stripes(6, seed=2), settings=RepairSettings(steps=10))
    assert figure["beats_naive"] and figure["ratio"] < 0.5

    detector = _PixelDistance()
    detector.fit(stripes(16))
    bad = stripes(2, seed=3)
    bad[..., 12:18, 12:18] = 1.0  # a bright square breaks the stripes
    result = arpro.repair(bad, detector, repairer, settings=RepairSettings(steps=6), progress=False)
    assert set(result.arms) == {"baseline", "infill", "guided"}
    outside = result.omega_input == 0
    for arm in ("infill", "guided"):
        assert torch.allclose(result.arms[arm].x_fix[outside], bad[outside], atol=1e-5)


def test_window_prefill_is_the_window_nearest_on_omega_bar():
    repairer = registry.get("repairer", "nearest-window")(input_shape=[32, 2])
    train = waves(64)
    repairer.fit(train, progress=False)
    x = train[5:7].clone()
    omega = torch.zeros_like(x)
    omega[:, 10:18] = 1
    x[omega.bool()] = 3.0  # an anomaly inside ω only
    filled = repairer.prefill(x, omega)
    assert torch.equal(filled, train[5:7])  # ω̄ finds the window, ω comes from it


def test_window_in_fills_better_than_the_mean_and_runs_every_arm():
    repairer = registry.get("repairer", "nearest-window")(input_shape=[32, 2])
    repairer.fit(waves(256), progress=False)
    figure = infill_quality.measure(repairer, waves(8, seed=1), settings=RepairSettings(steps=10))
    assert figure["beats_naive"] and figure["ratio"] < 0.5

    detector = _PixelDistance(pixels=False)
    detector.fit(waves(64))
    bad = waves(2, seed=3)
    bad[:, 12:16, 0] += 2.0  # a step on the sine
    result = arpro.repair(bad, detector, repairer, settings=RepairSettings(steps=6), progress=False)
    assert set(result.arms) == {"baseline", "infill", "guided"}
    outside = result.omega_input == 0
    for arm in ("infill", "guided"):
        assert torch.allclose(result.arms[arm].x_fix[outside], bad[outside], atol=1e-5)
    assert (result.arms["guided"].score < result.score_bad).all()  # P1


class _PixelDistance(arpro.Detector):
    """Each pixel's squared distance to the nearest training picture's (each element's, for windows: ``pixels``
    False): a detector that costs nothing."""

    name = "pixel-distance"
    domain = "image"

    def __init__(self, pixels: bool = True) -> None:
        super().__init__()
        self.register_buffer("normal", torch.zeros(0))

    def fit(self, train: torch.Tensor, **options) -> None:
        self.normal = train
        self.calibrate(train)

    def decompose(self, x: torch.Tensor) -> arpro.Decomposition:
        distance = (x[:, None] - self.normal[None]).pow(2)  # [B, N, *X]
        distance = distance.sum(2) if self.config["pixels"] else distance
        nearest = distance.flatten(2).sum(2).argmin(1)
        alpha = distance[torch.arange(len(x)), nearest]
        return arpro.Decomposition(alpha, torch.zeros(len(x)))


def test_check_with_an_empty_validation_split_measures_the_in_fill_on_the_test_normals(monkeypatch):
    """A dataset whose validation split is empty (TEP's train.csv, too short to hold one out) is checked,
    not a crash: the in-fill is measured on the test split's normal windows."""
    process = registry.get("dataset", "process")
    monkeypatch.setattr(process, "validation", lambda self: arpro.Split(torch.zeros(0, 64, 33), torch.zeros(0).long()))
    spec = arpro.RunSpec(detector="pca", repairer="nearest-window", settings=RepairSettings(steps=4))
    report = run_check(spec, limit=2, progress=False)
    assert report["infill"]["n"] > 0 and report["infill"]["source"] == "measured now on held-out normal samples"


def test_check_puts_the_training_free_in_fill_beside_a_trained_repairers():
    spec = arpro.RunSpec(detector="pca", settings=RepairSettings(steps=4))  # process data: diffusion-ts, bundled
    report = run_check(spec, limit=2, progress=False)
    reference = report["infill"]["reference"]
    assert reference["repairer"] == "nearest-window" and reference["ratio"] > 0
    worse = {**report["infill"], "beats_naive": True, "ratio": reference["ratio"] + 0.1}
    assert any("worse than the training-free nearest-window" in p for p in problems(report["detection"], worse,
                                                                                   report["repair"]))


def test_check_repairs_with_the_training_free_repairer_even_for_a_weak_detector(monkeypatch):
    import arpro.workflows.check

    monkeypatch.setattr(arpro.workflows.check, "auroc", lambda labels, values: 0.55)  # a detector near chance
    spec = arpro.RunSpec(detector="pca", repairer="nearest-window", settings=RepairSettings(steps=4))
    report = run_check(spec, limit=2, progress=False)
    assert report["repair"] is not None and "reference" not in report["infill"]


def write_plant(path, n: int = 800):
    """A two-sensor CSV with a labelled fault near its end: a user's own series, with no bundled checkpoint."""
    t = torch.arange(n, dtype=torch.float64)
    a, b = (t / 5).sin(), (t / 7).cos()
    label = ((t >= 700) & (t < 715)).long()
    a = a + 3 * label
    rows = [f"{i},{a[i]:.4f},{b[i]:.4f},{label[i]}" for i in range(n)]
    path.write_text("\n".join(["time,a,b,label", *rows]) + "\n")
    return path


def test_a_first_repair_without_a_repairer_checkpoint_needs_no_training(tmp_path, capsys):
    """The domain's default repairer has no checkpoint for a user's data: ``arpro repair`` and ``arpro check``
    take the training-free one, say so and record it; a repairer named on purpose is kept (and trained)."""
    from arpro.io.run_spec import load_dataset, repair_into, training_free_fallback

    data = write_plant(tmp_path / "plant.csv")
    options = {"window": 16, "stride": 4}
    spec = arpro.RunSpec(detector="pca", dataset="ts-csv", data_root=data, dataset_options=options)
    result, _ = repair_into(tmp_path / "out", spec, count=2, arms=("infill", "guided"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["spec"]["repairer"] == "nearest-window" and len(result) >= 1
    assert "training-free nearest-window repairs" in capsys.readouterr().err

    dataset = load_dataset("ts-csv", data, domain="timeseries", **options)
    named = arpro.RunSpec(detector="pca", repairer="diffusion-ts", dataset="ts-csv", data_root=data, dataset_options=options)
    assert training_free_fallback(named, dataset) is named
    checked = run_check(arpro.RunSpec(detector="pca", dataset="ts-csv", data_root=data, dataset_options=options), limit=2,
                        progress=False)
    assert checked["spec"]["repairer"] == "nearest-window" and checked["repair"] is not None
