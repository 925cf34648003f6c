"""Sizes arpro refuses before it parses a file: a CSV with a million columns, or more rows than
fit in memory, would otherwise hang the parser for minutes or take the machine down.

Images have their own limit (``max_pixels`` of the vision plugin); these are the tables'.
"""

from __future__ import annotations

from pathlib import Path

from arpro.errors import ArproError

MAX_CSV_COLUMNS = 10_000
MAX_CSV_ROWS = 10_000_000
_BLOCK = 1 << 20


def check_csv_size(path: Path, delimiter: str = ",", header_line: int = 0) -> None:
    """Refuse ``path`` when its header (line ``header_line``) has more than ``MAX_CSV_COLUMNS``
    fields or the file more than ``MAX_CSV_ROWS`` lines: counted on the raw bytes, in blocks,
    without parsing a cell."""
    delimiter_byte = delimiter.encode()
    fields, line = 1, 0  # the header's fields so far; the line the next block starts in
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            if line <= header_line:  # the header line, or part of it, may be in this block
                parts = block.split(b"\n", header_line - line + 1)
                fields += parts[header_line - line].count(delimiter_byte) if header_line - line < len(parts) else 0
            line += block.count(b"\n")
            if fields > MAX_CSV_COLUMNS:
                raise ArproError(f"{path} has more than {MAX_CSV_COLUMNS:,} columns; arpro reads tables up to that "
                                 "width (select the columns you need first)")
            if line > MAX_CSV_ROWS:
                raise ArproError(f"{path} has more than {MAX_CSV_ROWS:,} rows; arpro reads tables up to that length "
                                 "(split or subsample it first)")
