"""``python -m benchmarks list | run NAME|all [--quick] | render``: the one entry point."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import harness, render


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every benchmark, its group and what it measures")
    runner = commands.add_parser("run", help="run one benchmark, or all, and write its JSON result")
    runner.add_argument("name", help="a name from `list`, or all")
    runner.add_argument("--quick", action="store_true", help="small counts: a smoke run, not figures to report")
    runner.add_argument("--results", type=Path, default=harness.RESULTS, help="where the JSON results go")
    runner.add_argument("--note", help="a remark to keep with the result, e.g. what else loaded the machine")
    pages = commands.add_parser("render", help="write docs/results/<group>.md from the JSON results")
    pages.add_argument("--results", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    known = harness.discover()
    if args.command == "list":
        for name, (group, description) in known.items():
            print(f"{name:24s} {group:8s} {description}")
        return 0
    if args.command == "render":
        try:
            written = render.render(args.results)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path.relative_to(harness.ROOT)}")
        return 0
    if args.name == "all":
        return 1 if harness.run_all(args.quick, args.results, args.note) else 0
    if args.name not in known:
        print(f"error: no benchmark {args.name!r}; `python -m benchmarks list` names them", file=sys.stderr)
        return 2
    try:
        out = harness.run(args.name, args.quick, args.results, args.note)
    except harness.BenchmarkError as error:
        print(f"error: {args.name}: {error}", file=sys.stderr)
        return harness.UNAVAILABLE
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
