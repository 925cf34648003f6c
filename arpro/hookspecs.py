"""The hooks a plugin may implement. Each receives a ``register`` callable.

A plugin module marks its implementations with ``@arpro.hookimpl`` and is found through
the ``arpro`` entry-point group (or registered by the core, for the default plugins).
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("arpro")
hookimpl = pluggy.HookimplMarker("arpro")


@hookspec
def arpro_register_detectors(register: Callable[[type], None]) -> None:
    """Register :class:`arpro.Detector` subclasses: call ``register(cls)`` once for each.

    ``cls.name`` is the name users type (``--detector NAME``); it must be unique across
    all installed plugins.
    """


@hookspec
def arpro_register_repairers(register: Callable[[type], None]) -> None:
    """Register :class:`arpro.Repairer` subclasses (``--repairer NAME``)."""


@hookspec
def arpro_register_properties(register: Callable[[type], None]) -> None:
    """Register :class:`arpro.Property` subclasses (``--property NAME``)."""


@hookspec
def arpro_register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`arpro.Dataset` subclasses (``--dataset NAME[:CATEGORY]``)."""


@hookspec
def arpro_register_commands(cli) -> None:
    """Add commands to the ``arpro`` command line; ``cli`` is the root ``typer.Typer``."""
