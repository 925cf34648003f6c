"""How a repair runs: every setting declared once, with its default, help and check.

The command line's repair options are generated from these declarations, so adding a
setting is adding one field here. Settings are checked when they are made: a
``RepairSettings`` that exists is a valid one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from arpro.errors import ArproError

# In report order: "baseline" (the paper's: no guidance nor in-filling), "infill" adds in-filling, "guided" guidance.
MASK_RULES = ("train", "top", "top-train")  # omega from the detector's alpha (api.compute_omega)
ARMS = ("baseline", "infill", "guided")


def setting(default: Any, help: str, *, choices: tuple[str, ...] = (), check: Callable[[Any], bool] | None = None,
            rule: str = "") -> Any:
    """A declared setting: ``check(value)`` must hold (``rule`` says how, for the error) unless the value is None."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check, "rule": rule})


MAX_SEED = 2**32 - 1  # seeds are 0..MAX_SEED, the range NumPy and every framework accept
MAX_SAMPLES = 1024  # best-of-K draws per input: K x the batch is repaired at once


def option_name(name: str) -> str:
    """The command-line flag of setting ``name``: ``guide_on`` -> ``--guide-on``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class RepairSettings:
    """The repair loop and how omega and the tolerances are chosen. Defaults are the fast,
    measured choice (docs/concepts.md); a detector's ``repair_defaults`` override them."""

    scheduler: str = setting("ddim", "ddpm (paper), ddim, or dpm++ (DPM-Solver++, multistep).",
                             choices=("ddpm", "ddim", "dpm++"))
    steps: int = setting(50, "Denoising steps over the full schedule.", check=lambda v: v >= 1, rule="at least 1")
    start: str = setting("sdedit", "noise: from x_T (paper); sdedit: from the prefilled input noised to t0.",
                         choices=("noise", "sdedit"))
    t0: float = setting(0.6, "SDEdit start level, a fraction of T.", check=lambda v: 0.0 < v <= 1.0, rule="in (0, 1]")
    guide_on: str = setting("xt", "xt: the gradient at x_t (paper); x0: at the denoised estimate.", choices=("xt", "x0"))
    guidance_scale: float | None = setting(None, "Overall eta; default: the detector's suggested scale.",
                                           check=lambda v: 0.0 <= v < math.inf, rule=">= 0 and finite")
    guide_every: int = setting(1, "Guide every N-th step only (the last step always), with eta × N; 1: every step "
                               "(the paper).", check=lambda v: v >= 1, rule="at least 1")
    guide_at: str = setting("spread", "Which steps --guide-every N guides: spread, every N-th back from the last; end, "
                            "the last ⌈steps/N⌉ in a row (as many).", choices=("spread", "end"))
    eta_schedule: str = setting("sigma", "sigma: eta_t = scale·sqrt(1 − ᾱ_t), growing with t; constant: eta_t = scale.",
                                choices=("sigma", "constant"))
    grad_clip: float = setting(1.0, "Cap on each sample's gradient RMS per element; 0: the raw gradient (paper).",
                               check=lambda v: 0.0 <= v < math.inf, rule=">= 0 and finite")
    infill_stop: float = setting(0.0, "In-fill only while t >= this fraction of T; later steps regenerate the "
                                 "whole input, of which omega is kept (0: the paper).", check=lambda v: 0.0 <= v < 1.0, rule="in [0, 1)")
    mask: str = setting("train", "omega: train (paper: alpha >= tau), top (the input's top quantile), top-train "
                        "(top, among the elements above tau), truth (ground-truth masks), or a .npy file.")
    mask_quantile: float = setting(0.9, "Quantile of the input's alpha for --mask top and top-train.",
                                   check=lambda v: 0.0 <= v <= 1.0, rule="in [0, 1]")
    mask_dilation: int = setting(0, "Grow the rule's omega by N features along each feature axis (1-3 axes), within the "
                                 "input's data: an omega beside a thin defect then covers it.", check=lambda v: v >= 0, rule=">= 0")
    delta2: float | None = setting(None, "P2 tolerance on L2; default: 0.01 per element of omega_bar.",
                                   check=lambda v: 0.0 <= v < math.inf, rule=">= 0 and finite")
    delta4: float | None = setting(None, "P4 tolerance; default: 0.1 × the std of the detector's training scores.",
                                   check=lambda v: 0.0 <= v < math.inf, rule=">= 0 and finite")
    samples: int = setting(1, "Repairs drawn per input (best-of-K): the lowest-score draw meeting every constraint "
                           f"is returned; at most {MAX_SAMPLES} (every draw of a batch is held in memory at once).",
                           check=lambda v: 1 <= v <= MAX_SAMPLES, rule=f"1 to {MAX_SAMPLES}")
    confidence: float = setting(0.9, "Confidence of the Clopper-Pearson bound on each input's violation rate "
                                "(best-of-K).", check=lambda v: 0.0 < v < 1.0, rule="in (0, 1)")
    weights: dict[str, float] = field(default_factory=dict, metadata={
        "help": "lambda of a guiding property, NAME=NUMBER, e.g. p2=10 (repeatable); default 1.", "flag": "--weight"})

    def __post_init__(self) -> None:
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            flag = meta.get("flag", option_name(f.name))
            if meta.get("choices") and value not in meta["choices"]:
                raise ArproError(f"{flag} must be {' or '.join(meta['choices'])}, not {value!r}")
            if meta.get("check") and value is not None and not meta["check"](value):
                raise ArproError(f"{flag} must be {meta['rule']}, not {value!r}")
        for name, weight in self.weights.items():
            if not 0.0 <= weight < math.inf:
                raise ArproError(f"--weight {name}={weight} must be >= 0 and finite")
        if self.start == "sdedit" and self.infill_stop >= self.t0:
            raise ArproError(f"--infill-stop {self.infill_stop} must be below --t0 {self.t0}, or nothing is in-filled")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def for_detector(cls, detector: Any, **given: Any) -> RepairSettings:
        """Resolved settings: ``given``, else the detector's ``repair_defaults`` (and its ``guidance_scale``),
        else the defaults here; given weights are merged into the default ones."""
        defaults = getattr(detector, "repair_defaults", {})
        unknown = set(defaults) - {f.name for f in fields(cls)}
        if unknown:
            raise ArproError(f"detector {detector.name!r} has unknown repair_defaults {sorted(unknown)}")
        settings = {**defaults, **given}
        if "weights" in defaults and "weights" in given:  # a --weight changes the lambda it names, not the others
            settings["weights"] = {**defaults["weights"], **given["weights"]}
        return cls(**settings).resolved_for(detector)

    def resolved_for(self, detector: Any) -> RepairSettings:
        """These settings with a number for the guidance scale: the detector's where none is given (the one place)."""
        return self if self.guidance_scale is not None else replace(self, guidance_scale=detector.guidance_scale)


def parse_options(items: list[str], flag: str) -> dict:
    """``["image_size=256", "preset=paper"]`` -> ``{"image_size": 256, "preset": "paper"}`` (JSON values where they parse)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArproError(f"{flag} expects KEY=VALUE; got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def parse_weights(items: list[str]) -> dict[str, float]:
    """``["p2=10", "p4=0.5"]`` -> ``{"p2": 10.0, "p4": 0.5}``."""
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ArproError(f"--weight expects NAME=NUMBER, e.g. p2=10; got {item!r}")
    return weights


def parse_grid(grid: str, flag: str = "--grid") -> list[float]:
    """``"0.1,0.5,1"`` -> ``[0.1, 0.5, 1.0]``: positive, finite values."""
    try:
        values = [float(v) for v in grid.split(",") if v.strip()]
    except ValueError:
        raise ArproError(f"{flag} expects comma-separated numbers, got {grid!r}") from None
    if not values or not all(0 < v < math.inf for v in values):
        raise ArproError(f"{flag} values must be positive and finite")
    return values


def parse_counts(grid: str, flag: str, most: int) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]``: whole numbers from 1 to ``most``."""
    values = parse_grid(grid, flag)
    if not all(v == int(v) and 1 <= v <= most for v in values):
        raise ArproError(f"{flag} values must be whole numbers from 1 to {most}, got {grid!r}")
    return [int(v) for v in values]


def parse_arms(arms: str) -> tuple[str, ...]:
    """``"infill,guided"`` -> ``("infill", "guided")``: known arms, in the order they are reported."""
    names = {a.strip() for a in arms.split(",") if a.strip()}
    if not names or names - set(ARMS):
        raise ArproError(f"--arms takes a comma-separated subset of {', '.join(ARMS)}, got {arms!r}")
    return tuple(a for a in ARMS if a in names)
