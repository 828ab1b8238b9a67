"""The weights liif ships in weights/: their file names, short names and what each is for.

Torch-free on purpose, so that `--help` can list the models without loading anything.
"""

from __future__ import annotations

from dataclasses import dataclass


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
)
DEFAULT = MODELS[0].name


def file_stem(choice: str) -> str:
    """The file stem behind a short name ('real' -> 'liif-edsr-baseline-real'); anything
    else is returned as given."""
    return next((m.name for m in MODELS if choice == m.short), choice)


def describe(stem: str) -> BundledModel | None:
    """The bundled model with this file stem, if liif ships one."""
    return next((m for m in MODELS if m.name == stem), None)


WEIGHTS_HELP = ("Model: " + ", ".join(f"{m.short} (for {m.use.split(':')[0]})" for m in MODELS)
                + f", or a checkpoint file. Without it: {MODELS[0].short}.")
