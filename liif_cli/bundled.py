"""The weights liif ships in weights/: their file names, short names, what each is for, and
which file a `--weights` choice names.

Torch-free on purpose, so that `--help` can list the models, and a wrong `--weights` answer,
without loading anything.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import LiifError


@dataclass(frozen=True)
class BundledModel:
    name: str  # file stem in weights/, e.g. 'liif-edsr-baseline'
    short: str  # what --weights also accepts, e.g. 'real'
    use: str  # what it is for, one line


MODELS = (
    BundledModel("liif-edsr-baseline", "default",
                 "clean images: sharp photos, renders, scans (trained on clean downscales)"),
    BundledModel("liif-edsr-baseline-real", "real",
                 "JPEG photos: compressed phone and web pictures, whose blocks it removes "
                 "(trained on downscales with blur, noise and JPEG)"),
    BundledModel("liif-edsr-baseline-fast", "fast",
                 "clean images, fast: default's encoder with a latent-modulated decoder, "
                 "about a 40th of its arithmetic per pixel"),
    BundledModel("liif-edsr-baseline-fast-real", "fast-real",
                 "JPEG photos, fast: real's encoder with a latent-modulated decoder"),
)
DEFAULT = MODELS[0].name
# `--weights auto`, what upscale and resize use unless told otherwise: per input, the model
# for visibly compressed sources (JPEG up to quality AUTO_MAX_QUALITY, lossy WebP) or the one
# for the rest. Measured at x4 on Set5 / Set14 (weights/MODEL_CARD-real.md), real minus
# default: JPEG 75 +1.01 / +0.65 dB, JPEG 90 +0.29 / +0.22, JPEG 92 +0.20 / +0.11, JPEG 93
# +0.13 / +0.07, JPEG 94 +0.05 / -0.00, JPEG 95 -0.02 / -0.04, lossy WebP 80 +0.24 / +0.15,
# clean -0.30 / -0.22: the real-photo model is at least level up to quality 94.
AUTO = "auto"
AUTO_LOSSY, AUTO_OTHER = "real", "default"
# `--fast`: the same choice between the fast models (latent-modulated decoders, LMF).
FAST_LOSSY, FAST_OTHER = "fast-real", "fast"
AUTO_MAX_QUALITY = 94
# Bundled weights: weights/ beside the package in a source checkout (pip install -e .), or
# where a wheel installs them (pyproject's data-files: <prefix>/share/liif/weights).
_SOURCE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
_INSTALLED_WEIGHTS = Path(sys.prefix) / "share" / "liif" / "weights"
WEIGHTS_DIR = _SOURCE_WEIGHTS if _SOURCE_WEIGHTS.is_dir() else _INSTALLED_WEIGHTS


def file_stem(choice: str) -> str:
    """The file stem behind a short name ('real' -> 'liif-edsr-baseline-real'); anything
    else is returned as given."""
    return next((m.name for m in MODELS if choice == m.short), choice)


def describe(stem: str) -> BundledModel | None:
    """The bundled model with this file stem, if liif ships one."""
    return next((m for m in MODELS if m.name == stem), None)


_NAMED = ", ".join(f"{m.short} (for {m.use.split(':')[0]})" for m in MODELS)
WEIGHTS_HELP = f"Model: {_NAMED}, or a checkpoint file. Without it: {MODELS[0].short}."
AUTO_RULE = (f"{AUTO_LOSSY} for JPEGs of quality up to {AUTO_MAX_QUALITY} and lossy WebP, "
             f"{AUTO_OTHER} for the rest")
AUTO_WEIGHTS_HELP = (f"Model: {AUTO} (per image: {AUTO_RULE}), {_NAMED}, or a checkpoint file. "
                     f"Without it: {AUTO}.")


def is_auto(choice: str | None) -> bool:
    """Whether a `--weights` of upscale or resize asks for a model per image (None: not
    given)."""
    return choice is None or choice == AUTO


def auto_choice(lossy: bool, quality: int | None = None, fast: bool = False) -> str:
    """The bundled model `--weights auto` gives an input: AUTO_LOSSY for a lossily
    compressed source whose quality (1-100, None: unknown) is at most AUTO_MAX_QUALITY,
    AUTO_OTHER for the rest; with `fast` (`--fast`), FAST_LOSSY or FAST_OTHER likewise."""
    if lossy and (quality is None or quality <= AUTO_MAX_QUALITY):
        return FAST_LOSSY if fast else AUTO_LOSSY
    return FAST_OTHER if fast else AUTO_OTHER


def auto_pair(fast: bool = False) -> tuple[str, str]:
    """The two bundled models `--weights auto` chooses between (lossy, other)."""
    return (FAST_LOSSY, FAST_OTHER) if fast else (AUTO_LOSSY, AUTO_OTHER)


def available_weights() -> dict[str, Path]:
    """Bundled weights by name: every weights/NAME.pth shipped with liif, the registered
    models (MODELS) first, in its order, then the rest by name."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    order = [m.name for m in MODELS]
    paths = sorted(WEIGHTS_DIR.glob("*.pth"),
                   key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem))
    return {p.stem: p for p in paths}


def is_bundled(path: str | Path) -> bool:
    """Whether `path` (relative, absolute or through a link) is a bundled weights file."""
    shipped = available_weights().get(Path(path).stem)
    return shipped is not None and os.path.samefile(shipped, path)


def resolve_weights(name_or_path: str | Path | None = None) -> Path:
    """The file behind a bundled weights name (or its short name, e.g. 'real') or a path;
    LiifError if neither exists. None is the default model; an empty name is an error (a
    script's unset variable, `--weights "$W"`, must not pick a model silently)."""
    choice = DEFAULT if name_or_path is None else str(name_or_path)
    if not choice.strip():
        shorts = ", ".join(m.short for m in MODELS)
        raise LiifError(f"empty weights name: give a bundled model ({shorts}) or a file")
    if choice == AUTO:
        raise LiifError(f"weights {AUTO!r} picks a model for each input file (liif upscale, "
                        f"liif resize); name one here: {AUTO_OTHER}, {AUTO_LOSSY} or a file")
    shipped = available_weights()
    stem = file_stem(choice)
    if stem in shipped:
        return shipped[stem]
    path = Path(choice).expanduser()
    if os.path.isfile(path):  # os.path: never raises (e.g. ENAMETOOLONG)
        return path
    names = ", ".join(_with_short_names(shipped)) or "none"
    raise LiifError(f"weights not found: {choice!r} is neither a file nor a bundled name "
                    f"(bundled: {names})")


def _with_short_names(names: dict[str, Path]) -> list[str]:
    """'real (liif-edsr-baseline-real)' for bundled models with a short name."""
    shown = []
    for stem in names:
        model = describe(stem)
        shown.append(f"{model.short} ({stem})" if model else stem)
    return shown
