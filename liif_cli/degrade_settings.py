"""Degradation settings, parsed and checked without importing torch, so that a bad option
answers at once (importing torch takes seconds).

* `DegradationConfig`: the ranges and probabilities of the random training chain
  (`liif train --degradation real`; `parse_training_spec`).
* `DegradeSpec`: a fixed chain of named steps for benchmarks and validation
  (`liif bench --degrade blur:1+noise:5+jpeg:75`; `parse_spec`), seeded per image
  (`image_seed`).

liif_cli.degrade applies them to images.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from .errors import LiifError

# --------------------------------------------------------------------------- training chain


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges and probabilities of the random training chain (`--degradation real`).

    The chain runs on the LR crop, so blur sizes and sigmas are in LR pixels. A (lo, hi)
    range is sampled uniformly (blur_size: odd sizes only; jpeg_quality: integers).
    Probabilities are per pass.
    """

    second_pass_prob: float = 0.5  # chance of running the chain a second time
    blur_prob: float = 0.8
    blur_size: tuple[int, int] = (3, 11)  # kernel side, px
    blur_sigma: tuple[float, float] = (0.2, 1.5)  # px, per axis for anisotropic kernels
    anisotropic_prob: float = 0.5  # of the blurs: two sigmas and a random angle
    resize_prob: float = 0.7
    resize_scale: tuple[float, float] = (0.5, 1.5)  # factor of the current size
    noise_prob: float = 0.8
    poisson_prob: float = 0.5  # of the noisy passes: Poisson rather than Gaussian
    gray_noise_prob: float = 0.4  # of the noisy passes: the same noise in every channel
    noise_sigma: tuple[float, float] = (1.0, 25.0)  # Gaussian, 8-bit levels
    poisson_scale: tuple[float, float] = (0.05, 2.5)  # see poisson_noise
    jpeg_prob: float = 0.9
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        """Check every setting (LiifError, one line) and store ranges as tuples."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not 0.0 <= value <= 1.0:
                    _bad_setting(f.name, value, "a probability from 0 to 1")
                continue
            object.__setattr__(self, f.name, _check_range(f.name, value))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (ranges as lists), as checkpoints and config.json hold them."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DegradationConfig:
        """The config a dict describes (missing settings keep their defaults); LiifError for
        unknown settings or bad values."""
        known = [f.name for f in fields(cls)]
        unknown = [k for k in raw if k not in known]
        if unknown:
            raise LiifError(f"unknown degradation setting {unknown[0]!r} (known: "
                            f"{', '.join(known)})")
        return cls(**raw)


# Bounds of the ranges (first <= lo <= hi <= second), and which hold whole numbers.
_LIMITS = {"blur_size": (1, 51), "blur_sigma": (0.01, 20.0), "resize_scale": (0.05, 4.0),
           "noise_sigma": (0.0, 255.0), "poisson_scale": (0.0, 10.0), "jpeg_quality": (1, 100)}
_WHOLE = ("blur_size", "jpeg_quality")


def _check_range(name: str, value: Any) -> tuple[float, float] | tuple[int, int]:
    low, high = _LIMITS[name]
    whole = name in _WHOLE
    expected = (f"a range [lo, hi] of {'whole numbers' if whole else 'numbers'} with "
                f"{low:g} <= lo <= hi <= {high:g}")
    if isinstance(value, (str, bytes)):  # '39' would unpack as the range 3-9
        _bad_setting(name, value, expected)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        _bad_setting(name, value, expected)
    if not low <= lo <= hi <= high or (whole and not (lo.is_integer() and hi.is_integer())):
        _bad_setting(name, value, expected)
    if name == "blur_size" and int(lo) // 2 > (int(hi) - 1) // 2:
        _bad_setting(name, value, "a range holding an odd kernel size")
    return (int(lo), int(hi)) if whole else (lo, hi)


def _bad_setting(name: str, value: Any, expected: str) -> NoReturn:
    def show(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else repr(v)

    shown = ("-".join(show(v) for v in value) if isinstance(value, (tuple, list))
             else show(value))
    raise LiifError(f"bad degradation setting {name}={shown}: expected {expected}")


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_VALUE = re.compile(rf"^{_NUMBER}(?:-{_NUMBER})?$")


def parse_training_spec(text: str) -> DegradationConfig | None:
    """`--degradation`: 'none' -> None; 'real' -> the default ranges; 'real:KEY=VALUE,...'
    overrides some, a range as LO-HI (e.g. real:jpeg_quality=50-95,second_pass_prob=0)."""
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name == "none" and not rest:
        return None
    if name != "real":
        raise LiifError(f"bad --degradation {text!r}: expected none, real or "
                        "real:KEY=VALUE,... (e.g. real:jpeg_quality=50-95)")
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        match = _VALUE.match(value)
        if not eq or not match:
            raise LiifError(f"bad --degradation setting {item!r}: expected KEY=NUMBER or "
                            "KEY=LO-HI (e.g. jpeg_quality=50-95)")
        lo, hi = match.groups()
        if key.endswith("_prob"):
            if hi is not None:
                raise LiifError(f"bad --degradation setting {item!r}: {key} is a probability, "
                                "not a range")
            overrides[key] = float(lo)
        else:
            overrides[key] = (float(lo), float(hi if hi is not None else lo))
    return DegradationConfig.from_dict(overrides)


# --------------------------------------------------------------------------- benchmark specs


@dataclass(frozen=True)
class DegradeStep:
    """One fixed step of a benchmark degradation: blur (sigma, px), noise (Gaussian sigma,
    8-bit levels), jpeg or webp (lossy quality)."""

    kind: str
    value: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"


@dataclass(frozen=True)
class DegradeSpec:
    """A fixed chain of degradations (`liif bench --degrade blur:1+noise:5+jpeg:75`), applied
    in the order written by liif_cli.degrade.apply_spec."""

    steps: tuple[DegradeStep, ...]

    def __str__(self) -> str:
        return "+".join(str(step) for step in self.steps)


_SPEC_HELP = "use jpeg:QUALITY, webp:QUALITY, noise:SIGMA or blur:SIGMA, several joined with +"


def parse_spec(text: str) -> DegradeSpec:
    """'jpeg:75', 'webp:75', 'noise:5', 'blur:1.5' or a chain such as 'blur:1+jpeg:75';
    LiifError (one line) for anything else."""
    steps = []
    for item in (part.strip() for part in text.split("+")):
        kind, colon, raw = (s.strip().lower() for s in item.partition(":"))
        if kind not in ("jpeg", "webp", "noise", "blur"):
            what = f"unknown degradation {item!r}" if item else "an empty step"
            raise LiifError(f"bad --degrade {text!r}: {what} ({_SPEC_HELP})")
        if not colon:
            raise LiifError(f"bad --degrade {text!r}: {kind} needs a value ({_SPEC_HELP})")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if kind in ("jpeg", "webp") and not (value.is_integer() and 1 <= value <= 100):
            raise LiifError(f"bad --degrade {text!r}: {kind.upper()} quality must be a whole "
                            f"number from 1 to 100 (e.g. {kind}:75)")
        if kind == "noise" and not 0 <= value <= 255:
            raise LiifError(f"bad --degrade {text!r}: noise sigma must be a number of 8-bit "
                            "levels from 0 to 255 (e.g. noise:5)")
        if kind == "blur" and not 0 < value <= 20:
            raise LiifError(f"bad --degrade {text!r}: blur sigma must be a number of pixels "
                            "above 0 and at most 20 (e.g. blur:1.5)")
        steps.append(DegradeStep(kind, value))
    return DegradeSpec(tuple(steps))


def image_seed(*parts: object) -> int:
    """A seed that depends only on what names an image (set, file, scale): every run, and
    every selection of sets and scales, degrades an image the same way."""
    return zlib.crc32("/".join(str(p) for p in parts).encode())
