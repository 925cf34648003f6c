"""P1–P4 of the paper (section 2.2) as losses (section 3.1) and metrics (section 4).

This module is the default properties plugin: the core registers it through the same
hook a third-party plugin uses. The formulas are the paper's, with sums (not means)
over features; ``omega`` is the anomalous-feature mask of ``x_bad`` and ``omega_bar =
1 - omega``. See docs/concepts.md for the exact definitions and tolerances.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

from arpro.errors import ArproError
from arpro.plugin_api.hookspecs import hookimpl
from arpro.plugin_api.protocols import Decomposition, Property, PropertyContext

if TYPE_CHECKING:  # torch is not imported here: listing plugins registers these classes
    from torch import Tensor

DEFAULT_PROPERTIES = ("p1", "p2", "p3", "p4")  # guide every repair unless a run names others
ADD = "+"  # "+NAME" adds a property to the defaults (or to the properties named without "+")

# How a run names a property: "NAME", "NAME:key=value,...", (NAME, {options}) or an instance.
PropertySpec = Union[str, tuple[str, dict[str, Any]], Property]


def _option_value(text: str) -> Any:
    """A command-line option value: JSON where it parses (numbers, true, null), else the string; ``a;b`` is a list."""
    if ";" in text:
        return [_option_value(item) for item in text.split(";")]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_property(text: str) -> tuple[str, dict[str, Any]]:
    """``"range:low=-3,high=3"`` -> ``("range", {"low": -3, "high": 3})``."""
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArproError(f"--property {text!r}: options are KEY=VALUE separated by commas, got {item!r}")
        options[key.strip()] = _option_value(value.strip())
    return name.strip(), options


def _name_and_options(spec: PropertySpec) -> tuple[str, dict[str, Any]] | Property:
    if isinstance(spec, Property):
        return spec
    if isinstance(spec, str):
        return parse_property(spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        return spec[0], dict(spec[1])
    raise ArproError(f"a property is a name, a (name, options) pair or an arpro.Property, not {spec!r}")


def expand_properties(specs: Sequence[PropertySpec]) -> tuple[PropertySpec, ...]:
    """The guiding properties a run's ``specs`` name: those given without ``+`` (or P1–P4 when
    every one has it), then the ``+`` ones; each a name, a (name, options) pair or an instance."""
    replacing, adding = [], []
    for spec in [specs] if isinstance(specs, str) else specs:
        item = _name_and_options(spec)
        if isinstance(item, Property):
            replacing.append(item)
            continue
        name, options = item
        target = adding if name.startswith(ADD) else replacing
        name = name.removeprefix(ADD)
        target.append((name, options) if options else name)
    expanded = tuple(replacing or DEFAULT_PROPERTIES) + tuple(adding)
    names = [property_name(s) for s in expanded]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ArproError(f"property {twice[0]!r} is named twice; give it once, with all its options")
    return expanded


def property_name(spec: PropertySpec) -> str:
    return spec.name if isinstance(spec, Property) else spec if isinstance(spec, str) else spec[0]


def property_record(spec: PropertySpec) -> str | dict[str, Any]:
    """JSON-ready: the plain name when the property has no options, else its name and options."""
    options = getattr(spec, "options", {}) if isinstance(spec, Property) else {} if isinstance(spec, str) else spec[1]
    return {"name": property_name(spec), "options": options} if options else property_name(spec)


def make_property(spec: PropertySpec) -> Property:
    """The property a spec names, its options passed to the constructor and checked there."""
    if isinstance(spec, Property):
        return spec
    from arpro.plugin_api import registry

    name, options = (spec, {}) if isinstance(spec, str) else spec
    cls = registry.get("property", name)
    accepted = [p for p in inspect.signature(cls).parameters.values() if p.kind == p.KEYWORD_ONLY
                or p.kind == p.POSITIONAL_OR_KEYWORD]
    unknown = [key for key in options if key not in {p.name for p in accepted}]
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values()):
        known = ", ".join(p.name for p in accepted) or "none"
        raise ArproError(f"property {name!r} has no option {unknown[0]!r} (options: {known})")
    from arpro.plugin_api.models import check_types

    check_types(cls.__init__, options, f"property {name!r}")
    try:
        prop = cls(**options)
    except (TypeError, ValueError) as error:
        raise ArproError(f"property {name!r}: {error}") from None
    prop.options = dict(options)
    return prop


class OverallImprovement(Property):
    """P1 overall improvement: s(x_fix) < s(x_bad)."""

    name = "p1"
    metric_name = "Ms"

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return fix.score

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        return fix.score

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric < ctx.bad.score


class Similarity(Property):
    """P2 similarity: ||omega_bar * (x_fix - x_bad)||^2 <= delta2."""

    name = "p2"
    metric_name = "Md"
    needs_detector = False

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return ((1 - ctx.omega_input) * (x_fix - ctx.x_bad)).flatten(1).pow(2).sum(1)

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        return self.loss(ctx, x_fix, fix).sqrt()

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric.pow(2) <= ctx.delta2


class LocalizedImprovement(Property):
    """P3 localized improvement: s_omega(x_fix) < s_omega(x_bad)."""

    name = "p3"
    metric_name = "Momega"
    metric_label = "Mω"

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return self.metric(ctx, x_fix, fix).relu()

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        return fix.region_score(ctx.omega) - ctx.bad_in

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric < 0


class NonDegradation(Property):
    """P4 non-degradation: s_omega_bar(x_fix) <= s_omega_bar(x_bad) + delta4."""

    name = "p4"
    metric_name = "Momega_bar"
    metric_label = "Mω̄"

    def loss(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition | None) -> Tensor:
        return (self.metric(ctx, x_fix, fix) - ctx.delta4).relu()

    def metric(self, ctx: PropertyContext, x_fix: Tensor, fix: Decomposition) -> Tensor:
        return fix.region_score(1 - ctx.omega) - ctx.bad_out

    def holds(self, ctx: PropertyContext, metric: Tensor) -> Tensor:
        return metric <= ctx.delta4


@hookimpl
def arpro_register_properties(register) -> None:
    for prop in (OverallImprovement, Similarity, LocalizedImprovement, NonDegradation):
        register(prop)
    # the hard constraints import torch, so they are registered by path (see arpro/plugin_api/constraints.py)
    register("arpro.plugin_api.constraints:Immutable", name="immutable",
             description="Hard constraint: named columns or sensors, or a pixel mask, stay exactly as in x_bad.")
    register("arpro.plugin_api.constraints:Range", name="range",
             description="Hard constraint: every repaired value within training min/max (images: [-1, 1]) or given bounds.")
