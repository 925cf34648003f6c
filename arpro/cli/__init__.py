"""The ``arpro`` command line: the typer app (``arpro.cli.commands``), its options, what it prints
and how a run becomes an exit status. The console script is ``arpro.cli:main``."""

from arpro.cli.commands import app, main

__all__ = ["app", "main"]
