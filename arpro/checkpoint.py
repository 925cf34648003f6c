"""Deprecated alias: the checkpoint functions plugins call moved to ``arpro.io.checkpoint``.

Importing this module warns once; it goes away in the release after next.
"""

from __future__ import annotations

import warnings

from arpro.io.checkpoint import load, read_header, read_metadata, save

__all__ = ["load", "read_header", "read_metadata", "save"]

warnings.warn("arpro.checkpoint moved to arpro.io.checkpoint; import it from there", DeprecationWarning, stacklevel=2)
