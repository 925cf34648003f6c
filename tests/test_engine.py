"""The repair loop (eqs. 4–7): in-filling, determinism, masks at the edges, guidance."""

import pytest
import torch

import arpro
from arpro import ArproError, RepairSettings
from arpro.algorithm import engine
from arpro.algorithm.engine import guided_masked_diffusion

FAST = dict(steps=20)


def test_infilling_keeps_omega_bar_exactly(gaussian, tiny_repairer, anomalous_rows):
    result = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=RepairSettings(**FAST), progress=False)
    keep = result.omega_input == 0
    assert keep.any() and (~keep).any()
    for arm in ("infill", "guided"):
        x_fix = result.arms[arm].x_fix
        assert torch.equal(x_fix[keep], anomalous_rows[keep])
        assert not torch.equal(x_fix[~keep], anomalous_rows[~keep])  # omega was regenerated
    assert not torch.equal(result.arms["baseline"].x_fix[keep], anomalous_rows[keep])  # no in-filling


def test_infill_stop_frees_the_last_steps_yet_keeps_omega_bar_exactly(gaussian, tiny_repairer, anomalous_rows):
    """The freed last steps change omega's repair, never omega_bar: the repair is put back into x_bad."""
    strict = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=RepairSettings(**FAST), progress=False)
    freed = arpro.repair(
        anomalous_rows, gaussian, tiny_repairer, settings=RepairSettings(infill_stop=0.1, **FAST), progress=False
    )
    keep = strict.omega_input == 0
    for arm in ("infill", "guided"):
        assert torch.equal(freed.arms[arm].x_fix[keep], anomalous_rows[keep])
        assert not torch.equal(freed.arms[arm].x_fix[~keep], strict.arms[arm].x_fix[~keep])  # the freed steps ran
        assert (freed.arms[arm].metrics["Md"] == 0).all()  # P2 judges the repair as returned
    assert torch.equal(freed.arms["baseline"].x_fix, strict.arms["baseline"].x_fix)  # the baseline never in-fills


@pytest.mark.parametrize("stop,t0", [(0.6, 0.6), (-0.1, 0.6), (1.0, 1.0)])
def test_infill_stop_out_of_range_is_refused(stop, t0):
    with pytest.raises(ArproError, match="infill-stop"):
        RepairSettings(infill_stop=stop, t0=t0).validate()


@pytest.mark.parametrize("scheduler,start,guide_on", [("ddpm", "noise", "xt"), ("ddim", "sdedit", "x0"), ("dpm++", "sdedit", "x0")])
def test_same_seed_is_bit_identical(gaussian, tiny_repairer, anomalous_rows, scheduler, start, guide_on):
    settings = RepairSettings(scheduler=scheduler, start=start, guide_on=guide_on, **FAST)
    a = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=settings, seed=3, progress=False)
    b = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=settings, seed=3, progress=False)
    c = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=settings, seed=4, progress=False)
    for arm in arpro.ARMS:
        assert torch.equal(a.arms[arm].x_fix, b.arms[arm].x_fix)
    assert not torch.equal(a.arms["guided"].x_fix, c.arms["guided"].x_fix)


def test_a_sample_does_not_depend_on_its_batch(gaussian, tiny_repairer, anomalous_rows):
    settings = RepairSettings(**FAST)
    batch = arpro.repair(anomalous_rows[:3], gaussian, tiny_repairer, settings=settings, seed=10, progress=False)
    alone = arpro.repair(anomalous_rows[2:3], gaussian, tiny_repairer, settings=settings, seed=12, progress=False)
    assert torch.allclose(batch.arms["guided"].x_fix[2], alone.arms["guided"].x_fix[0], atol=1e-5)


def test_infilling_noise_is_drawn_per_sample_in_blocks_of_steps(monkeypatch):
    """A sample's step noise is its own generator's, whatever else is drawn beside it, across blocks."""
    monkeypatch.setattr(engine, "NOISE_BLOCK_BYTES", 2 * 4 * 6)  # two steps of a [6] sample per draw
    def steps(seeds):
        stream = engine._noise_per_step(torch.Size([1, 6]), [torch.Generator().manual_seed(s) for s in seeds], 5)
        return torch.stack([next(stream) for _ in range(5)], 1)  # [generators, steps, 6]
    both, alone = steps([1, 2]), steps([2])
    assert torch.equal(both[1], alone[0])
    assert len({tuple(step.tolist()) for step in alone[0]}) == 5  # a fresh draw every step, blocks refilled
    assert not torch.equal(both[0], both[1])


def test_guidance_lowers_the_score_against_unguided_infilling(gaussian, tiny_repairer, table):
    x = table.test().anomalous().x[:16]
    result = arpro.repair(x, gaussian, tiny_repairer, settings=RepairSettings(**FAST), progress=False)
    assert result.arms["guided"].metrics["Ms"].mean() < result.arms["infill"].metrics["Ms"].mean()
    assert result.arms["guided"].metrics["Momega"].mean() < result.arms["infill"].metrics["Momega"].mean()


@pytest.mark.parametrize("every,guided", [(1, 12), (4, 3), (5, 3), (50, 1)])
def test_guide_every_guides_every_nth_step_back_from_the_last(tiny_repairer, anomalous_rows, every, guided):
    settings = RepairSettings(steps=20, guide_every=every)  # SDEdit at t0 0.6: 12 denoising steps
    at = []
    loss = lambda x: at.append(x.detach().clone()) or x.pow(2).flatten(1).sum(1)  # noqa: E731
    x_fix = guided_masked_diffusion(anomalous_rows, torch.ones_like(anomalous_rows), tiny_repairer, settings,
                                    range(len(anomalous_rows)), loss=loss, eta=0.1, infill=True, progress=False)
    assert len(at) == guided
    unguided = guided_masked_diffusion(anomalous_rows, torch.ones_like(anomalous_rows), tiny_repairer, settings,
                                       range(len(anomalous_rows)), loss=None, eta=0.1, infill=True, progress=False)
    assert not torch.equal(x_fix, unguided)  # the last step is always guided, so the result moves


@pytest.mark.parametrize("every", [1, 4, 5])
def test_guide_at_end_guides_as_many_steps_the_last_ones_in_a_row(tiny_repairer, anomalous_rows, every):
    from arpro.algorithm.engine import guided_step

    spread, end = (RepairSettings(steps=20, guide_every=every, guide_at=at) for at in ("spread", "end"))
    count = -(-12 // every)  # SDEdit at t0 0.6: 12 denoising steps
    assert [back for back in range(12) if guided_step(back, 12, end)] == list(range(count))
    assert sum(guided_step(back, 12, spread) for back in range(12)) == count
    repairs = {}
    for settings in (spread, end):
        at = []
        loss = lambda x: at.append(1) or x.pow(2).flatten(1).sum(1)  # noqa: E731
        x_fix = guided_masked_diffusion(anomalous_rows, torch.ones_like(anomalous_rows), tiny_repairer, settings,
                                        range(len(anomalous_rows)), loss=loss, eta=0.1, infill=True, progress=False)
        assert len(at) == count
        repairs[settings.guide_at] = x_fix
    assert torch.equal(repairs["spread"], repairs["end"]) == (every == 1)


def test_guide_every_one_is_the_paper_loop(gaussian, tiny_repairer, anomalous_rows):
    default = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=RepairSettings(**FAST), progress=False)
    strided = arpro.repair(anomalous_rows, gaussian, tiny_repairer, settings=RepairSettings(guide_every=1, **FAST),
                           progress=False)
    assert torch.equal(default.arms["guided"].x_fix, strided.arms["guided"].x_fix)
    with pytest.raises(ArproError, match="--guide-every must be at least 1"):
        RepairSettings(guide_every=0)


def test_empty_mask_returns_the_input_without_nan(gaussian, tiny_repairer, anomalous_rows):
    x = anomalous_rows[:2]
    result = arpro.repair(x, gaussian, tiny_repairer, mask=torch.zeros_like(x), settings=RepairSettings(**FAST), progress=False)
    for arm in ("infill", "guided"):
        assert torch.equal(result.arms[arm].x_fix, x)
        metrics = result.arms[arm].metrics
        assert all(torch.isfinite(v).all() for v in metrics.values())
        assert torch.equal(metrics["Momega"], torch.zeros(2))
        assert not result.arms[arm].holds["p3"].any()
    assert any("omega is empty" in m for m in result.messages)


def test_full_mask_regenerates_everything_without_nan(gaussian, tiny_repairer, anomalous_rows):
    x = anomalous_rows[:2]
    result = arpro.repair(x, gaussian, tiny_repairer, mask=torch.ones_like(x), settings=RepairSettings(**FAST), progress=False)
    guided = result.arms["guided"]
    assert all(torch.isfinite(v).all() for v in guided.metrics.values())
    assert torch.equal(guided.metrics["Md"], torch.zeros(2))
    assert guided.holds["p2"].all()
    assert any("covers every feature" in m for m in result.messages)


def test_top_quantile_mask_flags_the_largest_alpha(gaussian, anomalous_rows):
    bad = gaussian.decompose(anomalous_rows)
    omega = arpro.compute_omega(gaussian, bad, "top", quantile=0.9)
    assert torch.equal(omega.sum(1), torch.full((anomalous_rows.shape[0],), 3.0))  # 10% of 30 columns
    top = bad.alpha.argmax(1)
    assert torch.all(omega[torch.arange(len(top)), top] == 1)


def test_train_mask_uses_the_detector_thresholds(gaussian, anomalous_rows):
    bad = gaussian.decompose(anomalous_rows)
    omega = arpro.compute_omega(gaussian, bad, "train")
    assert torch.equal(omega, (bad.alpha >= gaussian.tau).float())


def test_top_train_mask_keeps_top_elements_that_score_as_normal_out_of_omega(gaussian, anomalous_rows):
    bad = gaussian.decompose(anomalous_rows)
    top, train = (arpro.compute_omega(gaussian, bad, rule, quantile=0.5) for rule in ("top", "train"))
    both = arpro.compute_omega(gaussian, bad, "top-train", quantile=0.5)
    assert torch.equal(both, top * train)
    assert (top - both).sum() > 0  # some of the top half lie below tau: kept exactly, not repaired
    with pytest.raises(ArproError, match="'train', 'top', 'top-train'"):
        arpro.compute_omega(gaussian, bad, "best")


def test_valid_mask_keeps_omega_on_the_data(gaussian, tiny_repairer, anomalous_rows):
    """Elements outside ``valid`` (padding) are never in omega, whatever the rule; the quantile is the data's own."""
    bad = gaussian.decompose(anomalous_rows)
    valid = torch.zeros_like(anomalous_rows)
    valid[:, :20] = 1  # the last 10 of 30 columns are padding
    top = arpro.compute_omega(gaussian, bad, "top", quantile=0.9, valid=valid)
    assert torch.equal(top[:, 20:], torch.zeros_like(top[:, 20:]))
    assert torch.equal(top.sum(1), torch.full((len(top),), 2.0))  # 10% of the 20 data columns
    train = arpro.compute_omega(gaussian, bad, "train", valid=valid)
    assert torch.equal(train, (bad.alpha >= gaussian.tau).float() * valid)
    assert torch.equal(arpro.compute_omega(gaussian, bad, torch.ones_like(valid), valid=valid), valid)
    result = arpro.repair(anomalous_rows[:2], gaussian, tiny_repairer, settings=RepairSettings(mask="top", mask_quantile=0.0,
                          **FAST), valid=valid[:2], arms=("infill",), progress=False)
    assert torch.equal(result.omega, valid[:2])  # quantile 0 takes all the data, and nothing else
    assert torch.equal(result.arms["infill"].x_fix[:, 20:], anomalous_rows[:2, 20:])
    with pytest.raises(ArproError, match="valid mask of shape"):
        arpro.compute_omega(gaussian, bad, "top", valid=valid[:2])


def test_mask_dilation_grows_the_rule_omega_within_the_data(gaussian, anomalous_rows):
    bad = gaussian.decompose(anomalous_rows)
    valid = torch.zeros_like(anomalous_rows)
    valid[:, :20] = 1
    alpha = bad.alpha.clone()
    alpha[:, :] = 0
    alpha[:, 19] = 1.0  # one flagged column at the data's last one
    one = arpro.Decomposition(alpha, bad.beta)
    grown = arpro.compute_omega(gaussian, one, "top", quantile=0.99, valid=valid, dilation=2)
    assert torch.equal(grown.nonzero()[:, 1].unique(), torch.tensor([17, 18, 19]))  # 2 either side, none in padding
    given = torch.zeros_like(valid)
    given[:, 5] = 1
    assert torch.equal(arpro.compute_omega(gaussian, one, given, dilation=2), given)  # a given mask is kept as given
    assert RepairSettings.for_detector(arpro.get("detector", "gaussian")).mask_dilation == 0
    with pytest.raises(ArproError, match="--mask-dilation must be >= 0"):
        RepairSettings(mask_dilation=-1)


def test_nan_input_is_refused(gaussian, tiny_repairer, anomalous_rows):
    x = anomalous_rows[:2].clone()
    x[1, 4] = float("nan")
    with pytest.raises(ArproError, match="NaN or Inf"):
        arpro.repair(x, gaussian, tiny_repairer, progress=False)


def test_wrong_shape_input_is_refused(gaussian, tiny_repairer, anomalous_rows):
    with pytest.raises(ArproError, match="shape"):
        arpro.repair(anomalous_rows[:, :10], gaussian, tiny_repairer, progress=False)


def test_result_serialises_every_arm(gaussian, tiny_repairer, anomalous_rows):
    result = arpro.repair(anomalous_rows[:2], gaussian, tiny_repairer, settings=RepairSettings(**FAST), progress=False)
    record = result.to_dict()["inputs"][0]
    assert set(arpro.ARMS) <= set(record)
    assert set(record["guided"]["metrics"]) == {"Ms", "Md", "Momega", "Momega_bar"}
    assert set(record["guided"]["holds"]) == {"p1", "p2", "p3", "p4"}
