"""``python -m arpro.cli``: the console script, for subprocesses that need this interpreter."""

from arpro.cli.commands import main

main()
