"""Whether a detector checkpoint has been checked on labelled data (``arpro check``'s record).

``arpro check`` with ``--detector-checkpoint FILE`` writes ``FILE``'s record beside it,
``NAME.check.json``, holding the checkpoint's SHA-256: a record of another file (the
checkpoint retrained in place) does not count. A plugin ships the records of its bundled
checkpoints the same way; ``arpro check`` never writes beside a checkpoint it was not named.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

RECORD_SUFFIX = ".check.json"


def record_path(checkpoint: Path) -> Path:
    """Where the check record of ``checkpoint`` lives: ``gauss.safetensors`` -> ``gauss.check.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + RECORD_SUFFIX)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(checkpoint: Path | None) -> dict | None:
    """The check record of ``checkpoint`` when one exists and is of this very file, else ``None``."""
    if checkpoint is None or not record_path(checkpoint).is_file():
        return None
    try:
        record = json.loads(record_path(checkpoint).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("sha256") == sha256(checkpoint) else None


def hint(detector: str, checkpoint: str | None) -> str | None:
    """What ``arpro repair`` says about the trust in its detector: a ``hint:`` to run ``arpro check``
    when it was never checked, a ``warning:`` when its check found problems, else ``None``."""
    record = read_record(Path(checkpoint) if checkpoint else None)
    if record is None:
        return (f"hint: detector {detector!r} has not been checked on labelled data; run `arpro check --detector "
                f"{detector} [--dataset ... --detector-checkpoint ...]` before trusting its explanations")
    checks = record.get("checks") if isinstance(record.get("checks"), dict) else {}
    failing = [c for c in [record, *checks.values()] if isinstance(c, dict) and c.get("verdict") != "ok"]
    if failing:
        return f"warning: `arpro check` on {failing[0].get('dataset')} found: {failing[0].get('verdict')}"
    return None
