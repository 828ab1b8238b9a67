"""`liif bench`'s options, parsed and checked without importing torch, so that a usage
error answers at once (importing torch takes seconds)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import LiifError
from ..sizing import DEFAULT_MAX_PIXELS, parse_size, round_size

DEFAULT_SETS = ("Set5", "Set14")
DEFAULT_QUALITY_SCALES = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
DEFAULT_SPEED_SCALES = (4.0, 12.5)
DEFAULT_SPEED_SIZE = (512, 512)  # (H, W) of the synthetic input
MAX_THREADS = 1024  # far past any CPU's cores; torch refuses counts past a C int


def parse_sets(sets: str | Sequence[str] | None) -> list[str]:
    """'Set5,Set14' (or a list) -> ['Set5', 'Set14']; None gives the default sets. A name
    given twice counts once, in any case (set folders are found case-insensitively)."""
    if sets is None:
        return list(DEFAULT_SETS)
    items = sets.split(",") if isinstance(sets, str) else list(sets)
    names: list[str] = []
    for name in (str(item).strip() for item in items):
        if name and name.casefold() not in (n.casefold() for n in names):
            names.append(name)
    if not names:
        raise LiifError("no benchmark sets given (e.g. --sets Set5,Set14)")
    return names


def parse_scales(scales: str | Sequence[float] | None,
                 default: Sequence[float] = DEFAULT_QUALITY_SCALES) -> list[float]:
    """'2,3,x4,12.5' (or a list of numbers) -> [2.0, 3.0, 4.0, 12.5], duplicates dropped
    (also scales that print alike, 2 and 2.0000001: tables and saved images name scales as
    they print)."""
    if scales is None:
        return [float(s) for s in default]
    items = scales.split(",") if isinstance(scales, str) else list(scales)
    out: list[float] = []
    for item in items:
        text = str(item).strip().lstrip("xX")
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise LiifError(f"bad scale {str(item).strip()!r}: expected a number such as 4 "
                            "or 12.5") from None
        if not math.isfinite(value) or value <= 0:
            raise LiifError(f"bad scale {str(item).strip()!r}: must be a positive number")
        out.append(value)
    if not out:
        raise LiifError("no scales given (e.g. --scales 2,3,4)")
    return unique_scales(out)


def unique_scales(scales: Iterable[float]) -> list[float]:
    """Each scale once, in order, counting those that print alike (2, 2.0000001) as one:
    tables and saved images name scales as they print."""
    labels: dict[str, float] = {}
    for scale in scales:
        labels.setdefault(format_scale(scale), scale)
    return list(labels.values())


def speed_input_size(size: str | Sequence[int] | None) -> tuple[int, int]:
    """The speed benchmark's input size as (H, W): a 'WIDTHxHEIGHT' string, an (H, W) pair,
    or None for the default."""
    if size is None:
        return DEFAULT_SPEED_SIZE
    h, w = parse_size(size) if isinstance(size, str) else (int(v) for v in size)
    if h < 1 or w < 1:
        raise LiifError(f"bad size {w}x{h}: both sides must be at least 1 pixel")
    if h * w > DEFAULT_MAX_PIXELS:  # the synthetic input is made before anything else
        raise LiifError(f"--size {w}x{h} has {h * w:,} pixels, above the {DEFAULT_MAX_PIXELS:,} "
                        "that liif upscale takes by default")
    return h, w


def speed_output_sizes(in_size: tuple[int, int], scales: Sequence[float],
                       max_output_mp: float | None = None) -> list[tuple[int, int]]:
    """The speed benchmark's (H, W) output at each scale, all checked before the first
    render: LiifError for a side no image could have, or (with a `max_output_mp` cap) an
    output row alone above the cap, since a timed band holds at least one whole row."""
    sizes = []
    for s in scales:
        try:
            out = (round_size(in_size[0] * s), round_size(in_size[1] * s))
        except LiifError as err:
            raise LiifError(f"scale {format_scale(s)}: {err}") from None
        if max_output_mp and out[1] > max_output_mp * 1e6:
            raise LiifError(f"scale {format_scale(s)}: one output row has {out[1]:,} pixels, "
                            f"above --max-output-mp {max_output_mp:g}")
        sizes.append(out)
    return sizes


def check_max_output_mp(value: float | None) -> None:
    """LiifError unless --max-output-mp is None (automatic), 0 (whole outputs) or positive."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise LiifError(f"bad --max-output-mp {value}: must be 0 (whole outputs) or a "
                        "positive number")


def format_scale(scale: float) -> str:
    """2.0 -> '2', 12.5 -> '12.5'."""
    return str(int(scale)) if float(scale).is_integer() else f"{scale:g}"


def parse_threads(text: str | Sequence[int] | None) -> list[int]:
    """"1,2" -> [1, 2] (each count once, in the order given); None -> [1, 2] capped at this
    machine's cores."""
    if text is None:
        return sorted({1, min(2, os.cpu_count() or 1)})
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        counts = [int(str(item).strip()) for item in items]
    except ValueError:
        raise LiifError(f"bad --threads {text!r}: expected e.g. 1,2") from None
    if not counts or min(counts) < 1 or max(counts) > MAX_THREADS:
        raise LiifError(f"bad --threads {text!r}: thread counts must be 1 to {MAX_THREADS}")
    return list(dict.fromkeys(counts))


def check_json_target(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """The --json file as a Path; LiifError now (not after the benchmark) if it cannot be
    written: a folder, an existing file (unless `overwrite`), or a place this process may
    not create files in."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise LiifError(f"{path} is a folder, not a file name for the JSON results")
    if os.path.exists(path) and not os.path.isfile(path):  # /dev/null, a FIFO: not replaced
        raise LiifError(f"{path} is not a regular file; choose a file name for the JSON "
                        "results")
    if os.path.lexists(path) and not overwrite:  # a dangling link too: it would refuse later
        raise LiifError(f"{path} already exists; choose another --json file or pass --overwrite")
    _check_creatable(path.parent, f"--json {path}")
    return path


def check_save_folder(path: str | os.PathLike[str]) -> Path:
    """The --save-images folder as a Path; LiifError now if it cannot hold the images."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise LiifError(f"--save-images {path} exists and is not a folder")
    _check_creatable(path, f"--save-images {path}")
    return path


def _check_creatable(folder: Path, what: str) -> None:
    """LiifError unless `folder` exists and takes new files, or its nearest existing parent
    is a folder that takes new ones (so it can be created)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LiifError(f"{what}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LiifError(f"{what}: no permission to write in {existing}")
