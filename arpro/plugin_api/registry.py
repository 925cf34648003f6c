"""Finding plugins and what they register; the rules are stated in :mod:`arpro.plugin_api.hookspecs`.

Default plugins (the properties P1–P4) are registered by the core; everything else is
found through the ``arpro`` entry-point group, built-in plugins included.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections import Counter
from dataclasses import dataclass
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, cached_property, reduce
from importlib.metadata import entry_points

import pluggy

from arpro._version import __version__
from arpro.errors import ArproError
from arpro.plugin_api import hookspecs

DEFAULT_PLUGINS = ("arpro.algorithm.properties",)
LOAD_PLUGINS = "ARPRO_LOAD_PLUGINS"  # e.g. "tabular,vision": only these entry points load
KIND_PLURALS = {"detector": "detectors", "repairer": "repairers", "property": "properties", "dataset": "datasets"}
KINDS = {
    "detector": "arpro_register_detectors",
    "repairer": "arpro_register_repairers",
    "property": "arpro_register_properties",
    "dataset": "arpro_register_datasets",
}


@dataclass(frozen=True)
class Entry:
    """One registered detector, repairer, property or dataset: what lists and defaults need, and
    its class, or the ``"module:Class"`` path it is imported from on first use (see ``register``)."""

    kind: str
    name: str
    target: type | str
    domain: str
    description: str
    default: bool
    distribution: str
    version: str
    baseline: bool = False

    @classmethod
    def of(cls, kind: str, target: type | str, distribution: str, version: str, *, name: str | None = None,
           domain: str = "", description: str = "", default: bool = False, baseline: bool = False) -> Entry:
        """What ``register(target, ...)`` records: a class describes itself; a path needs ``name=``."""
        if isinstance(target, str):
            if name is None or ":" not in target:
                raise TypeError(f"register({target!r}) needs a 'module:Class' path and name=")
            return cls(kind, name, target, domain, description, default, distribution, version, baseline)
        doc = (target.__doc__ or "").strip()
        return cls(kind, target.name, target, getattr(target, "domain", ""), doc.splitlines()[0] if doc else "",
                   getattr(target, "is_default", False) or getattr(target, "embedded", False), distribution, version,
                   baseline)

    @cached_property
    def obj(self) -> type:
        """The registered class; a path is imported now, and must name the class it was registered as."""
        if not isinstance(self.target, str):
            return self.target
        module, _, qualname = self.target.partition(":")
        try:
            obj = reduce(getattr, qualname.split("."), importlib.import_module(module))
        except Exception as error:
            raise ArproError(f"{self.kind} {self.name!r} of {self.distribution} cannot be imported "
                             f"from {self.target}: {error}") from error
        if (obj.name, getattr(obj, "domain", "")) != (self.name, self.domain):
            raise ArproError(f"{self.target} is {obj.name!r} ({getattr(obj, 'domain', '')}), but {self.distribution} "
                             f"registered it as {self.name!r} ({self.domain})")
        return obj


class Registry:
    """Everything the installed plugins registered, by kind and name."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}

    def add(self, entry: Entry) -> None:
        existing = self.entries[entry.kind].get(entry.name)
        if existing is not None:
            raise ArproError(
                f"{entry.kind} {entry.name!r} is registered twice: by {existing.distribution} "
                f"and by {entry.distribution}; uninstall one of them"
            )
        self.entries[entry.kind][entry.name] = entry

    def get(self, kind: str, name: str) -> type:
        """The class registered as ``name``, or an error that suggests close names."""
        known = self.entries[kind]
        if name in known:
            return known[name].obj
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(sorted(known)) or "none installed"
        raise ArproError(f"unknown {kind} {name!r}{hint} (available: {available})")

    def default(self, kind: str, domain: str) -> type:
        """The class of the default (or else the only) entry of ``kind`` for ``domain``.

        When several claim to be the default, the domain owner's one wins, with a warning naming the
        other claims; several claims and none of the owner's are an error.
        """
        candidates = [e for e in self.entries[kind].values() if e.domain == domain]
        preferred = [e for e in candidates if e.default]
        owned = [e for e in preferred if e.distribution == self.owner(domain)]
        if len(preferred) > 1 and len(owned) == 1:
            for other in preferred:
                if other is not owned[0]:
                    _warn_once(f"{kind} {other.name!r} of {other.distribution} also claims to be the default {domain} "
                               f"{kind}; {owned[0].name!r} of {owned[0].distribution}, whose domain it is, is used")
            return owned[0].obj
        if len(preferred) > 1:
            names = " and ".join(f"{e.name!r} of {e.distribution}" for e in preferred)
            raise ArproError(f"{names} all claim to be the default {domain} {kind}; pass --{kind}")
        if preferred or len(candidates) == 1:
            return (preferred or candidates)[0].obj
        names = ", ".join(e.name for e in candidates) or "none installed"
        raise ArproError(f"no default {kind} for domain {domain!r}; pass --{kind} (available: {names})")

    def baseline(self, domain: str, kind: str = "detector") -> type | None:
        """The ``kind`` registered with ``baseline=True`` for ``domain`` (the domain owner's first), or None."""
        marked = sorted((e for e in self.entries[kind].values() if e.baseline and e.domain == domain),
                        key=lambda e: (e.distribution != self.owner(domain), e.name))
        return marked[0].obj if marked else None

    def owner(self, domain: str) -> str | None:
        """The distribution with the most ``default=True`` entries in ``domain`` (a built-in plugin registers its
        domain's embedded dataset, repairer and detector): its claims win over others'. None on a tie."""
        claims = Counter(e.distribution for e in self if e.domain == domain and e.default).most_common(2)
        return claims[0][0] if claims and (len(claims) == 1 or claims[0][1] > claims[1][1]) else None

    def __iter__(self):
        for kind in KINDS:
            yield from self.entries[kind].values()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@cache
def _warn_once(message: str) -> None:
    _warn(message)


@cache
def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, tuple[str, str]]]:
    """The plugin manager with default and entry-point plugins loaded, and each plugin's distribution."""
    pm = pluggy.PluginManager("arpro")
    pm.add_hookspecs(hookspecs)
    origins: dict[str, tuple[str, str]] = {}
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        origins[module_name] = ("arpro", __version__)
    found = list(entry_points(group="arpro"))
    chosen = _chosen_plugins([ep.name for ep in found])
    for ep in found:
        if chosen is not None and ep.name not in chosen:
            continue
        dist = ep.dist.name if ep.dist is not None else ep.name
        try:
            module = ep.load()
        except Exception as error:  # a broken plugin must not take the others down
            _warn(f"plugin {ep.name!r} from {dist} failed to load and is skipped: {error}")
            continue
        if pm.is_registered(module):
            continue
        pm.register(module, name=ep.name)
        origins[ep.name] = (dist, ep.dist.version if ep.dist is not None else "unknown")
    _refuse_unknown_hooks(pm, origins)
    return pm, origins


def _chosen_plugins(installed: list[str]) -> set[str] | None:
    """The entry-point names ``ARPRO_LOAD_PLUGINS`` lets load (comma-separated; empty: none but the core's
    properties), or None when it is unset and every installed plugin loads."""
    value = os.environ.get(LOAD_PLUGINS)
    if value is None:
        return None
    chosen = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(chosen - set(installed))
    if unknown:
        raise ArproError(f"{LOAD_PLUGINS} names {', '.join(map(repr, unknown))}, which no installed plugin provides "
                         f"(installed: {', '.join(sorted(installed)) or 'none'})")
    return chosen


def _refuse_unknown_hooks(pm: pluggy.PluginManager, origins: dict[str, tuple[str, str]]) -> None:
    """A hook implementation with no spec (a misspelled ``arpro_register_property``) would never be
    called; pluggy's ``check_pending`` finds it, and this names the plugin, the hook and the close spec."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        name = pm.get_name(error.plugin) or str(error.plugin)
        specs = [hook for hook in vars(pm.hook) if getattr(vars(pm.hook)[hook], "spec", None) is not None]
        unknown = sorted(hook for hook, caller in vars(pm.hook).items() if getattr(caller, "spec", 1) is None
                         and any(impl.plugin is error.plugin for impl in caller.get_hookimpls()))
        close = [difflib.get_close_matches(hook, specs, n=1) for hook in unknown]
        hints = "".join(f" (did you mean {c[0]}?)" for c in close if c)
        raise ArproError(f"plugin {name!r} from {origins.get(name, (name,))[0]} implements unknown hook(s) "
                         f"{', '.join(unknown)}{hints}; the hooks are listed in arpro.plugin_api.hookspecs") from None


@cache
def registry() -> Registry:
    """All detectors, repairers, properties and datasets of the installed plugins."""
    pm, origins = plugin_manager()
    reg = Registry()
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            distribution, dist_version = origins[impl.plugin_name]

            def register(target: type | str, kind: str = kind, distribution: str = distribution, v: str = dist_version,
                         **metadata) -> None:
                reg.add(Entry.of(kind, target, distribution, v, **metadata))

            try:
                impl.function(register=register)
            except ArproError:
                raise
            except Exception as error:
                _warn(f"plugin {impl.plugin_name!r} from {distribution} failed to register its {KIND_PLURALS[kind]}: {error}")
    return reg


def get(kind: str, name: str) -> type:
    """The detector, repairer, property or dataset class registered as ``name``.

    ``arpro.get("detector", "fastflow")``; an unknown name raises :class:`ArproError`
    with the close matches and everything available.
    """
    return registry().get(kind, name)


def get_default(kind: str, domain: str) -> type:
    """The ``kind`` a run of ``domain`` uses when none is named (see :mod:`arpro.plugin_api.hookspecs`)."""
    return registry().default(kind, domain)


def get_baseline(domain: str, kind: str = "detector") -> type | None:
    """The simple detector (or training-free repairer) that ``arpro check`` measures every ``domain`` one against
    (see :mod:`arpro.plugin_api.hookspecs`)."""
    return registry().baseline(domain, kind)


@contextmanager
def blame(kind: str, name: str, doing: str) -> Iterator[None]:
    """Turn an exception a plugin's code raises (not an :class:`ArproError`, which is already the user's
    message) into one error naming the plugin's ``kind``, ``name`` and distribution, and what it was ``doing``."""
    try:
        yield
    except ArproError:
        raise
    except Exception as error:
        entry = registry().entries.get(kind, {}).get(name)
        origin = f" of {entry.distribution}" if entry is not None else ""
        detail = str(error).splitlines()[0] if str(error) else ""
        raise ArproError(f"{kind} {name!r}{origin} failed {doing}: {type(error).__name__}"
                         f"{': ' + detail if detail else ''}") from error
