"""A plugin that adds a command to the ``arpro`` command line."""

import arpro


@arpro.hookimpl
def arpro_register_commands(cli):
    @cli.command()
    def hello(name: str = "world") -> None:
        """Greet NAME."""
        print(f"hello {name}")
