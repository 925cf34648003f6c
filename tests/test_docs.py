"""The docs name only options that exist: every ``--flag`` in README.md and docs/ is checked
against ``--help`` of the command (or the ``--help`` of the script) it is written with."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer.main

from arpro import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(r"\barpro((?: [a-z][a-z-]*)+)")
SCRIPT = re.compile(r"([\w/.-]+\.py)\b")


def command_options() -> dict[str, set[str]]:
    """Each command path (``"repair"``, ``"train detector"``, ``""`` for the root) -> its flags."""
    found: dict[str, set[str]] = {}

    def walk(command: click.Command, path: str) -> None:
        found[path] = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(cli.app), "")
    return found


def script_options(script: str) -> set[str]:
    path = ROOT / script.removeprefix("./")
    return set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", path.read_text())) | {"--help"} if path.exists() else set()


def logical_lines(text: str) -> list[str]:
    """Lines, with shell continuations (a trailing backslash) joined."""
    return text.replace("\\\n", " ").splitlines()


def mentions() -> list[tuple[str, str, str, set[str]]]:
    """(doc, line, flag, the flags allowed where it is written) for every flag in the docs."""
    commands = command_options()
    everything = set().union(*commands.values())
    scripts = {s for doc in DOCS for s in SCRIPT.findall(doc.read_text()) if (ROOT / s.removeprefix("./")).exists()}
    for script in scripts:
        everything |= script_options(script)
    out = []
    for doc in DOCS:
        for line in logical_lines(doc.read_text()):
            for segment in re.split(r"`|(?:\s#\s)|;|&&|\|", line):
                flags = FLAG.findall(segment)
                if not flags:
                    continue
                allowed, command = everything, COMMAND.search(segment)
                script = SCRIPT.search(segment)
                if command:
                    words = command.group(1).split()
                    path = next((" ".join(words[:n]) for n in (2, 1) if " ".join(words[:n]) in commands), None)
                    allowed = commands[path] if path else everything
                elif script and script_options(script.group(1)):
                    allowed = script_options(script.group(1))
                out += [(doc.name, segment.strip(), flag, allowed) for flag in flags]
    return out


def test_docs_name_only_options_that_exist():
    wrong = [f"{doc}: {flag} in {segment!r}" for doc, segment, flag, allowed in mentions() if flag not in allowed]
    assert wrong == []


def test_the_check_catches_an_option_that_does_not_exist():
    commands = command_options()
    assert "--backbone-weights" not in set().union(*commands.values())
    assert {"--delta2", "--delta4", "--mask-quantile", "--keep-going"} <= commands["evaluate"]
    assert "--overwrite" in commands["report"]


@pytest.mark.parametrize("command", ["repair", "evaluate", "ablate"])
def test_help_shows_each_setting_default(command):
    steps = next(p for p in typer.main.get_command(cli.app).commands[command].params if p.name == "steps")
    assert "(default: 50)" in steps.help and " ." not in steps.help
