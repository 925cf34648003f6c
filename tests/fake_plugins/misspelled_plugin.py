"""A plugin whose hook name is misspelled: it would silently never be called."""

import arpro


@arpro.hookimpl
def arpro_register_property(register):
    raise AssertionError("never called")
