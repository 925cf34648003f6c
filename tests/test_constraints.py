"""Configurable properties, the add-form, and the hard constraints immutable and range (on rows; each plugin's own
tests check them in its domain)."""

from __future__ import annotations

import pytest
import torch

import arpro
from arpro.algorithm.properties import expand_properties, make_property
from arpro.plugin_api import registry
from arpro.plugin_api.constraints import Constraint
from arpro.plugin_api.registry import Entry, Registry

IN_FILLING = ("infill", "guided")


def test_property_specs_expand_and_record():
    assert expand_properties(["p1", "p3"]) == ("p1", "p3")
    assert expand_properties(["+range"]) == ("p1", "p2", "p3", "p4", "range")
    assert expand_properties(["p1", "+immutable:columns=a;b"]) == ("p1", ("immutable", {"columns": ["a", "b"]}))
    assert expand_properties([("+range", {"low": -1})]) == ("p1", "p2", "p3", "p4", ("range", {"low": -1}))
    plain = arpro.RunSpec(detector="gaussian").to_dict()["properties"]
    assert plain == ["p1", "p2", "p3", "p4"]  # unchanged by options support
    spec = arpro.RunSpec(detector="gaussian", properties=["+range:low=-2.5,high=4"])
    assert spec.to_dict()["properties"][-1] == {"name": "range", "options": {"low": -2.5, "high": 4}}
    prop = make_property(("range", {"high": [1, 2], "columns": ["a", "b"]}))
    assert (prop.high, prop.columns, prop.options) == ([1, 2], ["a", "b"], {"high": [1, 2], "columns": ["a", "b"]})


@pytest.mark.parametrize("spec, fragment", [
    (("range", {"lo": 1}), "property 'range' has no option 'lo'"),
    (("range", {"low": "x"}), "property 'range': low='x' is not a float"),
    (("immutable", {"columns": 3}), "property 'immutable': columns=3 is not a"),
    (("range", {"low": float("nan")}), "property 'range': low=nan is not finite"),
    (("immutable", {"mask": "nosuch.npy"}), "option 'mask'"),
])
def test_bad_options_name_the_property_and_option(spec, fragment):
    with pytest.raises(arpro.ArproError, match=fragment):
        make_property(spec)


def test_context_carries_names_and_training_statistics(table, gaussian, tiny_repairer, anomalous_rows):
    seen = {}

    class Spy(arpro.Property):
        name, metric_name = "p1", "Ms"

        def loss(self, ctx, x_fix, fix):
            seen.update(names=ctx.feature_names, stats=ctx.stats, detector=ctx.detector, shapes=(ctx.input_shape, ctx.feature_shape))
            return fix.score

        metric = loss

        def holds(self, ctx, metric):
            return metric < ctx.bad.score

    arpro.repair(anomalous_rows[:2], gaussian, tiny_repairer, properties=[Spy()], settings=arpro.RepairSettings(steps=3),
                 arms=("guided",), dataset=table, progress=False)
    assert seen["names"] == table.feature_names() and len(seen["names"]) == 30
    assert torch.equal(seen["stats"].max, table.train().x.amax(0)) and seen["detector"] is gaussian
    assert seen["shapes"] == ((30,), (30,))


def test_a_guiding_loss_without_gradient_is_refused(gaussian, tiny_repairer, anomalous_rows):
    class Flat(arpro.Property):
        name, metric_name = "p1", "Ms"

        def loss(self, ctx, x_fix, fix):
            return torch.zeros(x_fix.shape[0])

        def metric(self, ctx, x_fix, fix):
            return fix.score

        def holds(self, ctx, metric):
            return metric < ctx.bad.score

    settings = arpro.RepairSettings(steps=3)
    with pytest.raises(arpro.ArproError, match="'p1' guides the repair, but its loss has no gradient"):
        arpro.repair(anomalous_rows, gaussian, tiny_repairer, properties=[Flat()], settings=settings, progress=False)
    arpro.repair(anomalous_rows, gaussian, tiny_repairer, properties=[Flat()], progress=False,  # weight 0: allowed
                 settings=arpro.RepairSettings(steps=3, weights={"p1": 0.0}))


def _changes(result, keep):
    return {arm: (a.x_fix - result.x_bad).abs()[keep].max().item() for arm, a in result.arms.items()}


@pytest.mark.parametrize("infill_stop", [0.0, 0.3])
def test_tabular_immutable_columns_stay_exactly(table, gaussian, tiny_repairer, anomalous_rows, infill_stop):
    columns = table.feature_names()[:10]  # the features most often flagged
    result = arpro.repair(anomalous_rows, gaussian, tiny_repairer, properties=[("+immutable", {"columns": columns})],
                          settings=arpro.RepairSettings(steps=10, infill_stop=infill_stop), dataset=table, progress=False)
    keep = torch.zeros_like(anomalous_rows, dtype=torch.bool)
    keep[:, :10] = True
    changes = _changes(result, keep)
    assert all(changes[arm] == 0.0 for arm in IN_FILLING) and changes["baseline"] > 0
    assert (result.omega[:, :10] == 0).all() and (result.omega_input[keep] == 0).all()
    for arm in IN_FILLING:
        assert result.arms[arm].metrics["M_immutable"].eq(0).all() and result.arms[arm].holds["immutable"].all()
    assert result.settings["properties"][-1] == {"name": "immutable", "options": {"columns": columns}}


def test_immutable_leaving_nothing_to_repair_is_refused(table, gaussian, tiny_repairer, anomalous_rows):
    with pytest.raises(arpro.ArproError, match="nothing is left to repair"):
        arpro.repair(anomalous_rows, gaussian, tiny_repairer, properties=[("+immutable", {"columns": table.feature_names()})],
                     settings=arpro.RepairSettings(steps=3), dataset=table, progress=False)


def test_tabular_range_bounds_every_arm(table, gaussian, tiny_repairer, anomalous_rows):
    stats = table.train().x
    result = arpro.repair(anomalous_rows, gaussian, tiny_repairer, properties=["+range"], dataset=table, progress=False,
                          settings=arpro.RepairSettings(steps=10, guidance_scale=50.0))
    unbounded = arpro.repair(anomalous_rows, gaussian, tiny_repairer, dataset=table, progress=False,
                             settings=arpro.RepairSettings(steps=10, guidance_scale=50.0))
    low, high = stats.amin(0), stats.amax(0)
    assert any(((a.x_fix < low) | (a.x_fix > high)).any() for a in unbounded.arms.values())  # the bar can fail
    for arm in result.arms.values():
        assert ((arm.x_fix >= low) & (arm.x_fix <= high)).all()
        assert arm.metrics["M_range"].eq(0).all() and arm.holds["range"].all()
    outside = (anomalous_rows < low) | (anomalous_rows > high)
    assert (result.omega[outside] == 1).all()  # out-of-range values must change, so they join omega


def test_range_with_user_bounds_per_column(table, gaussian, tiny_repairer, anomalous_rows):
    columns = table.feature_names()[3:5]
    result = arpro.repair(anomalous_rows, gaussian, tiny_repairer, dataset=table, progress=False,
                          properties=[("+range", {"columns": columns[::-1], "low": [-0.2, -0.1], "high": [0.2, 0.1]})],
                          settings=arpro.RepairSettings(steps=5))
    for arm in result.arms.values():
        assert arm.x_fix[:, 3].abs().max() <= 0.1 and arm.x_fix[:, 4].abs().max() <= 0.2


class AroundInput(Constraint):
    """Per-input bounds ``[B, *X]``, as writing-a-plugin.md allows: each value within 0.05 of its own input."""

    name = "around-input"
    metric_name = "M_around"

    def bounds(self, ctx):
        return ctx.x_bad - 0.05, ctx.x_bad + 0.05

    def metric(self, ctx, x_fix, fix):
        low, high = self.bounds(ctx)
        return torch.maximum(low - x_fix, x_fix - high).clamp(min=0).flatten(1).amax(1)


class Exploding(arpro.Property):
    """A third-party property with a bug in its metric."""

    name = "exploding"
    metric_name = "M_boom"

    def loss(self, ctx, x_fix, fix):
        return fix.score

    def metric(self, ctx, x_fix, fix):
        raise RuntimeError("index 7 is out of bounds\nsecond line")

    def holds(self, ctx, metric):
        return metric < 0


def test_an_exception_in_a_property_is_one_error_naming_it(table, gaussian, tiny_repairer, anomalous_rows):
    with pytest.raises(arpro.ArproError) as error:
        arpro.repair(anomalous_rows, gaussian, tiny_repairer, properties=["p1", Exploding()], dataset=table,
                     progress=False, settings=arpro.RepairSettings(steps=3))
    assert str(error.value) == "property 'exploding' failed in metric(): RuntimeError: index 7 is out of bounds"


@pytest.mark.parametrize("samples", [1, 2])
def test_per_input_bounds_hold_for_each_input(table, gaussian, tiny_repairer, anomalous_rows, samples):
    result = arpro.repair(anomalous_rows, gaussian, tiny_repairer, properties=["p1", "p2", "p3", "p4", AroundInput()],
                          dataset=table, progress=False, settings=arpro.RepairSettings(steps=5, samples=samples))
    for arm in result.arms.values():
        assert ((arm.x_fix - anomalous_rows).abs() <= 0.05 + 1e-6).all()
        assert arm.holds["around-input"].all()


def test_the_domain_owners_default_wins_with_a_warning(capsys):
    """The owner is the distribution with the most default=True entries in the domain, whatever its name."""
    reg = Registry()
    for name, dist in (("mine", "arpro-other"), ("breast-cancer", "arpro-tabular")):
        reg.add(Entry("dataset", name, registry.get("dataset", "breast-cancer") if dist == "arpro-tabular" else "x:Y",
                      "tabular", "", True, dist, "1"))
    reg.add(Entry("repairer", "mlp-ddpm", "x:Y", "tabular", "", True, "arpro-tabular", "1"))
    assert reg.owner("tabular") == "arpro-tabular"
    assert reg.default("dataset", "tabular").name == "breast-cancer"
    err = capsys.readouterr().err
    assert "'mine' of arpro-other also claims" in err and "'breast-cancer' of arpro-tabular" in err
    sound = Registry()
    sound.add(Entry("dataset", "clips", "x:Y", "audio", "", True, "arpro-audio", "1"))
    for name, dist in (("loud", "arpro-other"), ("spectral", "arpro-audio")):
        sound.add(Entry("detector", name, registry.get("detector", "gaussian") if dist == "arpro-audio" else "x:Y",
                        "audio", "", True, dist, "1"))
    assert sound.default("detector", "audio") is registry.get("detector", "gaussian")  # arpro-audio's claim
    third = Registry()
    for name in ("a", "b"):
        third.add(Entry("dataset", name, "x:Y", "tabular", "", True, "arpro-other", "1"))
    with pytest.raises(arpro.ArproError, match="'a' of arpro-other and 'b' of arpro-other all claim"):
        third.default("dataset", "tabular")


def test_training_statistics_load_the_training_split_only_when_a_property_reads_them(table):
    from arpro import TrainingStats

    calls = []
    stats = TrainingStats(lambda: calls.append(1) or table.train().x)
    assert calls == []
    assert torch.equal(stats.min, table.train().x.amin(0)) and torch.equal(stats.max, table.train().x.amax(0))
    assert stats.std.shape == (30,) and calls == [1]  # computed once, on first use
