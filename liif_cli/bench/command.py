"""`liif bench` end to end: parse its options, load the weights, run, print, save."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ..degrade import parse_spec
from ..errors import LiifError
from .common import (
    DEFAULT_QUALITY_SCALES,
    DEFAULT_SPEED_SCALES,
    format_scale,
    parse_scales,
    parse_sets,
    resolve_device,
    speed_input_size,
)
from .quality import resolve_data_root, run_quality
from .report import (
    check_writable,
    json_safe,
    print_quality,
    print_speed,
    print_training_speed,
    write_json,
)
from .speed import CPU_DEFAULT_MAX_OUTPUT_MP, run_speed


def bench_command(*, data_root: str | os.PathLike[str] | None = None,
                  sets: str | Sequence[str] | None = None,
                  scales: str | Sequence[float] | None = None, weights: str | None = None,
                  device: str = "auto", json_path: str | os.PathLike[str] | None = None,
                  save_images: str | os.PathLike[str] | None = None, speed: bool = False,
                  size: str | Sequence[int] | None = None, repeats: int = 3,
                  max_output_mp: float | None = None, reference: bool = True,
                  tile: int | None = None, chunk: int | None = None, precision: str = "fp32",
                  overwrite: bool = False, training: bool = False,
                  threads: str | Sequence[int] | None = None, batch_size: int = 4,
                  degrade: str | None = None,
                  console: Console | None = None) -> dict[str, Any]:
    """Everything `liif bench` does, given its parsed options; returns the result dict.

    Quality benchmark by default; `speed=True` runs the speed benchmark instead (no data
    needed). `scales` defaults to 2,3,4,6,8,12 (quality) or 4,12.5 (speed). `size` is
    WIDTHxHEIGHT. `max_output_mp` None means automatic: 0.25 MP bands on the CPU, whole
    outputs elsewhere; 0 renders whole outputs everywhere. `training=True` times training
    steps instead (CPU, bf16 autocast; `threads` e.g. "1,2", `batch_size`). `degrade` (quality
    only) degrades every LR input first, e.g. "jpeg:75" (see liif_cli.degrade.parse_spec).
    Raises LiifError on bad input.
    """
    degrade_spec = parse_spec(degrade) if degrade is not None else None
    if degrade_spec is not None and (speed or training):
        raise LiifError("--degrade applies to the quality benchmark, not to --speed or "
                        "--training")
    if training:
        return _training_speed(threads, batch_size, repeats, json_path, overwrite,
                               console or Console())
    from ..checkpoint import DEFAULT_WEIGHTS, file_sha256, load, resolve_weights
    from ..engine import precision_name

    console = console or Console()
    scale_list = parse_scales(scales, DEFAULT_SPEED_SCALES if speed else DEFAULT_QUALITY_SCALES)
    set_list = parse_sets(sets)
    in_size = speed_input_size(size)
    json_file = check_writable(json_path, overwrite) if json_path is not None else None
    if speed and save_images is not None:
        raise LiifError("--save-images applies to the quality benchmark, not to --speed")
    if not speed:
        bad = [s for s in scale_list if s <= 1]
        if bad:
            raise LiifError(f"scale must be greater than 1 for the quality benchmark, got "
                            f"{format_scale(bad[0])}")
        root = resolve_data_root(data_root)

    weights_path = resolve_weights(weights)
    checkpoint = load(weights_path)
    model = checkpoint.build()
    sha = file_sha256(weights_path)
    name = str(weights or DEFAULT_WEIGHTS)
    dev = resolve_device(device)
    precision = precision_name(precision, dev)  # results say bf16 or fp32, never 'auto'

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("speed" if speed else "quality", total=None)

        said: list[str] = []

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)
            if not console.is_terminal and not said[-1:] == [label]:  # a log: plain lines
                said.append(label)
                _status(f"bench: {label} ({done}/{total})")

        if speed:
            cap = max_output_mp
            if cap is None:
                cap = CPU_DEFAULT_MAX_OUTPUT_MP if dev.type == "cpu" else None
            result = run_speed(model, in_size, scale_list, device=dev, repeats=repeats,
                               max_output_mp=cap or None, reference=reference, tile=tile,
                               chunk=chunk, precision=precision, weights_name=name,
                               weights_sha256=sha, progress=progress)
        else:
            result = run_quality(set_list, scale_list, root, model, device=dev, tile=tile,
                                 chunk=chunk, precision=precision, save_images=save_images,
                                 overwrite=overwrite, weights_name=name, weights_sha256=sha,
                                 progress=progress, degrade=degrade_spec)
    result["weights_metadata"] = json_safe(dict(checkpoint.metadata))
    (print_speed if speed else print_quality)(console, result)
    if save_images is not None and not speed:
        _status(f"saved LIIF outputs under {Path(save_images).expanduser()}")
    if json_file is not None:
        write_json(result, json_file, overwrite=overwrite)
        _status(f"wrote {json_file}")
    return result


def _training_speed(threads: str | Sequence[int] | None, batch_size: int, repeats: int,
                    json_path: str | os.PathLike[str] | None, overwrite: bool,
                    console: Console) -> dict[str, Any]:
    """`liif bench --training`: crops/s of liif train's step against the reference step."""
    from .training import run_training_speed

    json_file = check_writable(json_path, overwrite) if json_path is not None else None
    counts = parse_threads(threads)
    if batch_size < 1:
        raise LiifError(f"batch size must be >= 1 (got {batch_size})")
    result = run_training_speed(threads=counts, batch_size=batch_size, repeats=repeats)
    print_training_speed(console, result)
    if json_file is not None:
        write_json(result, json_file, overwrite=overwrite)
        _status(f"wrote {json_file}")
    return result


def parse_threads(text: str | Sequence[int] | None) -> list[int]:
    """"1,2" -> [1, 2]; None -> [1, 2] capped at this machine's cores."""
    if text is None:
        return sorted({1, min(2, os.cpu_count() or 1)})
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        counts = [int(str(item).strip()) for item in items]
    except ValueError:
        raise LiifError(f"bad --threads {text!r}: expected e.g. 1,2") from None
    if not counts or min(counts) < 1:
        raise LiifError(f"bad --threads {text!r}: thread counts must be >= 1")
    return counts


def _status(message: str) -> None:
    """A status line on stderr, like every other command's (stdout holds the tables)."""
    Console(stderr=True).print(message, markup=False, highlight=False, soft_wrap=True)
