"""The hooks a plugin may implement: the whole plugin contract.

A plugin is a module whose hook functions are marked ``@arpro.hookimpl`` and which is
named in the ``arpro`` entry-point group of its distribution; the core registers its own
default plugin (the properties P1–P4, ``arpro.algorithm.properties``) through these same hooks.

The rules every hook below shares:

- **Register import paths**: ``register("pkg.models:MyDetector", name=..., domain=...,
  description=..., default=False, baseline=False)``; the class is imported on first use (``arpro.get``) and
  must have that ``name`` and ``domain``, so listing and choosing plugins imports no torch.
  ``register(cls)`` reads all of it from the class (cheap classes only: the core's properties).
- **When**: the ``arpro_register_*`` hooks are called once per process, the first time
  anything is looked up (``arpro.get``, a command, ``list-plugins``), in plugin load order;
  ``arpro_register_commands`` only when the command line names no core command, before it
  is parsed (``arpro --help`` lists the core's commands and loads no plugin).
- **Names are unique per kind** across all installed plugins. ``register`` of a name that
  is already taken raises :class:`arpro.ArproError` naming both distributions, and the
  command stops: uninstalling one of them is the fix.
- **Errors**: an :class:`arpro.ArproError` raised by a hook aborts the command with its
  message. Any other exception, and a plugin module that fails to import, skips that
  plugin with a warning naming it; the other plugins still load. A registered path that
  fails to import is an :class:`arpro.ArproError` naming the distribution, when it is used.
- **Defaults**: when a run names no repairer or dataset, the domain's entry registered with
  ``default=True`` is used, or the only entry of that domain; otherwise the run must name one.
  A domain's *owner* is the distribution with the most ``default=True`` entries in it (for the
  built-in domains, the built-in plugin: its embedded dataset, repairer and detector). When
  several claim ``default=True`` for one kind and domain, the owner's claim wins and a warning
  names the others; several claims and none of the owner's are an error.
  ``ARPRO_LOAD_PLUGINS=tabular,vision`` loads only the entry points named.
- **Baselines**: a detector registered with ``baseline=True`` is its domain's simple, strong
  reference (PCA for windows, PatchCore for pictures); ``arpro check`` fits it on the same
  training split and says when the checked detector does worse. A plugin may decide at
  registration (cheaply: no imports of torch) which of its detectors is the baseline. A repairer
  registered with ``baseline=True`` needs no training (its ``fit`` indexes the data in seconds):
  ``arpro check`` measures its in-fill beside a trained repairer's, and checks a repair with it
  even where the detector is too weak to be worth training a repairer for.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("arpro")
hookimpl = pluggy.HookimplMarker("arpro")


@hookspec
def arpro_register_detectors(register: Callable[..., None]) -> None:
    """Register detectors: ``register(path, name=..., domain=..., ...)`` per :class:`arpro.Detector`.

    :param register: ``name`` is what users type (``--detector NAME``) and ``domain`` which
        datasets and repairers it pairs with. A detector must obey ``s(x) = alpha(x).flatten(1).sum(1) + beta(x)`` exactly.
    """


@hookspec
def arpro_register_repairers(register: Callable[..., None]) -> None:
    """Register repairers: ``register(path, name=..., ...)`` per :class:`arpro.Repairer` (``--repairer NAME``)."""


@hookspec
def arpro_register_properties(register: Callable[..., None]) -> None:
    """Register properties: ``register(path, name=...)`` per :class:`arpro.Property` (``--property``,
    ``--weight NAME=X``); properties have no domain."""


@hookspec
def arpro_register_datasets(register: Callable[..., None]) -> None:
    """Register datasets: ``register(path, name=..., ...)`` per :class:`arpro.Dataset` (``--dataset NAME[:CATEGORY]``);
    ``default=True`` marks the domain's embedded dataset, the one that needs no files."""


@hookspec
def arpro_register_commands(cli) -> None:
    """Add commands to the ``arpro`` command line.

    :param cli: the root ``typer.Typer``; add commands with ``@cli.command()``. A command
        signals a user error by raising :class:`arpro.ArproError`, which the command line
        prints as one ``error:`` line with exit status 2.
    """
