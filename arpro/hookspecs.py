"""The hooks a plugin may implement: the whole plugin contract.

A plugin is a module whose hook functions are marked ``@arpro.hookimpl`` and which is
named in the ``arpro`` entry-point group of its distribution; the core registers its own
default plugin (the properties P1–P4, ``arpro.properties``) through these same hooks.

The rules every hook below shares:

- **When**: the ``arpro_register_*`` hooks are called once per process, the first time
  anything is looked up (``arpro.get``, a command, ``list-plugins``), in plugin load order;
  ``arpro_register_commands`` once, before the command line is parsed.
- **Names are unique per kind** across all installed plugins. ``register`` of a name that
  is already taken raises :class:`arpro.ArproError` naming both distributions, and the
  command stops: uninstalling one of them is the fix.
- **Errors**: an :class:`arpro.ArproError` raised by a hook aborts the command with its
  message. Any other exception, and a plugin module that fails to import, skips that
  plugin with a warning naming it; the other plugins still load.
- **Defaults**: when a run names no repairer or dataset, the domain's entry with
  ``is_default = True`` (datasets: ``embedded = True``) is used, or the only entry of that
  domain; otherwise the run must name one.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("arpro")
hookimpl = pluggy.HookimplMarker("arpro")


@hookspec
def arpro_register_detectors(register: Callable[[type], None]) -> None:
    """Register detectors: call ``register(cls)`` once per :class:`arpro.Detector` subclass.

    :param register: takes the class; ``cls.name`` is what users type (``--detector
        NAME``) and ``cls.domain`` which datasets and repairers it pairs with.

    A detector must obey ``s(x) = alpha(x).flatten(1).sum(1) + beta(x)`` exactly.
    """


@hookspec
def arpro_register_repairers(register: Callable[[type], None]) -> None:
    """Register repairers: ``register(cls)`` per :class:`arpro.Repairer` subclass (``--repairer NAME``)."""


@hookspec
def arpro_register_properties(register: Callable[[type], None]) -> None:
    """Register properties: ``register(cls)`` per :class:`arpro.Property` subclass.

    :param register: takes the class; ``cls.name`` is ``--property NAME`` and ``--weight NAME=X``.
    """


@hookspec
def arpro_register_datasets(register: Callable[[type], None]) -> None:
    """Register datasets: ``register(cls)`` per :class:`arpro.Dataset` subclass (``--dataset NAME[:CATEGORY]``)."""


@hookspec
def arpro_register_commands(cli) -> None:
    """Add commands to the ``arpro`` command line.

    :param cli: the root ``typer.Typer``; add commands with ``@cli.command()``. A command
        signals a user error by raising :class:`arpro.ArproError`, which the command line
        prints as one ``error:`` line with exit status 2.
    """
