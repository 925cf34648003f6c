"""The command line's options that are not run settings, declared once and shared by commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Devices = Annotated[int, typer.Option("--devices", help="Processes on this node (Lightning Fabric).")]
Strategy = Annotated[str, typer.Option("--strategy", help="Fabric strategy when --devices > 1, e.g. ddp.")]
NumNodes = Annotated[int, typer.Option("--num-nodes", help="Nodes, for Lightning's multi-node launch.")]
InputFile = Annotated[Optional[Path], typer.Option("--input", help="Input file; default: anomalous samples of the dataset.")]
Count = Annotated[int, typer.Option("--count", help="Anomalous samples to repair when no --input is given.")]
Categories = Annotated[Optional[list[str]], typer.Option("--category", help="Category (repeatable); default: all.")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="At most this many anomalous inputs per category, in "
                 "total over its kinds (taken in turn from each kind: --limit 2 covers at most 2 kinds).")]
ChunkSize = Annotated[Optional[int], typer.Option("--chunk-size", help="Inputs repaired per batch (and per resume unit); "
                                                   "default: the dataset's, 64 rows or windows, 16 images.")]
Category = Annotated[Optional[str], typer.Option("--category", help="Category to ablate on; default: the first.")]
AblateLimit = Annotated[int, typer.Option("--limit", help="Anomalous inputs in all, taken in turn from each kind "
                                                          "(the paper used 100).")]
Figure = Annotated[bool, typer.Option("--figure", help="Also draw repair.png, the figure to read (matplotlib: "
                                     "about a second more on a small job).")]
Arms = Annotated[str, typer.Option("--arms", help="Comma-separated arms to run as one batch: baseline, infill, guided "
                                    "(default: guided, the repair; the others are its unguided comparisons).")]
KeepGoing = Annotated[bool, typer.Option("--keep-going", help="Exit 0 even when repairs end non-finite (NaN or Inf).")]
Calibration = Annotated[Optional[Path], typer.Option("--calibration", help="A calibration.json of arpro calibrate: "
                                                     "its certified settings, on inputs it did not use.")]
AllowUncertified = Annotated[bool, typer.Option("--allow-uncertified", help="With --calibration: run even when other "
                             "settings than the certified ones change the repair (no guarantee is then given).")]
Risk = Annotated[float, typer.Option("--risk", help="delta: the violation risk to certify (--confidence: 1 - gamma).")]
ScaleGrid = Annotated[str, typer.Option("--scale-grid", help="Multipliers of the guidance scale to try.")]
WeightGrid = Annotated[str, typer.Option("--weight-grid", help="Values of the constraint properties' lambda to try.")]
SamplesGrid = Annotated[str, typer.Option("--samples-grid", help="Draws per input (best-of-K) to try.")]
Fraction = Annotated[float, typer.Option("--fraction", help="Share of the anomalous test inputs used to calibrate.")]
Grid = Annotated[str, typer.Option("--grid", help="Comma-separated values for each lambda and the scale multiplier.")]
CheckLimit = Annotated[int, typer.Option("--limit", help="Anomalous test inputs repaired in all (not per kind), taken in turn from each kind.")]
Holdout = Annotated[float, typer.Option("--holdout", min=0.0, max=0.5, help="Share of the normal training samples a "
                    "repairer is validated on (when the dataset has no validation split); 0: none.")]

EarlyStop = Annotated[bool, typer.Option("--early-stop/--no-early-stop", help="Score the held-out in-fill ratio every "
                      "tenth of the training steps and stop when it has not improved twice in a row.")]
