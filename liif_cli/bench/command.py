"""`liif bench` end to end: check its options (`prepare_bench`), then run, print and save
(`run_bench`).

The split lets the CLI tell usage errors (exit code 2, before anything runs; the options
themselves and the benchmark data are checked before torch is imported) from failures while
benchmarking.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from .. import bundled
from ..degrade_settings import parse_spec
from ..errors import LiifError, is_out_of_memory, one_line
from ..files import real_path
from ..sizing import check_tile
from .options import (
    DEFAULT_QUALITY_SCALES,
    DEFAULT_SPEED_SCALES,
    check_json_target,
    check_max_output_mp,
    check_save_folder,
    format_scale,
    parse_scales,
    parse_sets,
    parse_threads,
    speed_input_size,
    speed_output_sizes,
)
from .sets import QualityPlan, plan_quality

# The benchmarks each option applies to: naming one for another benchmark is a usage error,
# never silently ignored.
_APPLIES = {
    "data_root": ("quality",), "sets": ("quality",), "degrade": ("quality",),
    "save_images": ("quality",),
    "weights": ("quality", "speed"), "scales": ("quality", "speed"),
    "tile": ("quality", "speed"), "chunk": ("quality", "speed"),
    "size": ("speed",), "max_output_mp": ("speed",), "reference": ("speed",),
    "repeats": ("speed", "training"),
    "threads": ("training",), "batch_size": ("training",),
}
_KIND_NAMES = {"quality": "the quality benchmark", "speed": "--speed", "training": "--training"}

if TYPE_CHECKING:
    import torch

    from ..checkpoint import Checkpoint


@dataclass
class BenchRequest:
    """A checked `liif bench` command: which benchmark ('quality', 'speed' or 'training'),
    its settings, and for quality and speed the loaded weights."""

    kind: str
    console: Console
    json_file: Path | None = None
    overwrite: bool = False
    repeats: int = 3
    # training
    threads: list[int] | None = None
    batch_size: int = 4
    # quality and speed
    scales: list[float] | None = None
    plan: QualityPlan | None = None
    in_size: tuple[int, int] | None = None
    max_output_mp: float | None = None
    reference: bool = True
    tile: int | None = None
    chunk: int | None = None
    precision: str = "fp32"
    checkpoint: Checkpoint | None = None
    weights_name: str | None = None
    weights_sha256: str | None = None
    device: torch.device | None = None


def prepare_bench(*, data_root: str | os.PathLike[str] | None = None,
                  sets: str | Sequence[str] | None = None,
                  scales: str | Sequence[float] | None = None, weights: str | None = None,
                  device: str = "auto", json_path: str | os.PathLike[str] | None = None,
                  save_images: str | os.PathLike[str] | None = None, speed: bool = False,
                  size: str | Sequence[int] | None = None, repeats: int | None = None,
                  max_output_mp: float | None = None, reference: bool = True,
                  tile: int | None = None, chunk: int | None = None,
                  precision: str | None = None,
                  overwrite: bool = False, training: bool = False,
                  threads: str | Sequence[int] | None = None, batch_size: int | None = None,
                  degrade: str | None = None,
                  console: Console | None = None) -> BenchRequest:
    """Check a `liif bench` command's options, data and weights; LiifError on bad input.

    Quality benchmark by default; `speed=True` runs the speed benchmark instead (no data
    needed). `scales` defaults to 2,3,4,6,8,12 (quality) or 4,12.5 (speed). `size` is
    WIDTHxHEIGHT. `max_output_mp` None means automatic: 0.25 MP bands on the CPU, whole
    outputs elsewhere; 0 renders whole outputs everywhere. `training=True` times training
    steps of a fresh model instead (CPU; `threads` e.g. "1,2", `batch_size`, default 4;
    `precision` bf16 autocast by default, or fp32). `repeats` (speed and training) defaults
    to 3. `precision` is fp32 by default for quality and speed. `degrade` (quality only)
    degrades every LR input first, e.g. "jpeg:75" (see liif_cli.degrade_settings.parse_spec).
    An option given for a benchmark it does not apply to is refused.
    """
    console = console or Console()
    if speed and training:
        raise LiifError("give one of --speed and --training")
    kind = "speed" if speed else "training" if training else "quality"
    _check_options_apply(kind, dict(
        data_root=data_root, sets=sets, degrade=degrade, save_images=save_images,
        weights=weights, scales=scales, tile=tile, chunk=chunk, size=size,
        max_output_mp=max_output_mp, reference=None if reference else False,
        repeats=repeats, threads=threads, batch_size=batch_size))
    repeats = 3 if repeats is None else repeats
    if repeats < 1:
        raise LiifError(f"--repeats must be at least 1 (got {repeats})")
    json_file = check_json_target(json_path, overwrite) if json_path is not None else None
    if training:
        return _training_request(console, json_file, overwrite, repeats, threads,
                                 4 if batch_size is None else batch_size, precision, device)

    check_tile(tile, chunk, cli=True)
    request = BenchRequest(kind, console, json_file, overwrite, repeats, tile=tile,
                           chunk=chunk, reference=reference)
    request.scales = parse_scales(scales, DEFAULT_SPEED_SCALES if speed
                                  else DEFAULT_QUALITY_SCALES)
    if speed:
        request.in_size = speed_input_size(size)
        check_max_output_mp(max_output_mp)
        speed_output_sizes(request.in_size, request.scales, max_output_mp)  # the cap if given
    else:
        set_list = parse_sets(sets)
        bad = [s for s in request.scales if s <= 1]
        if bad:
            raise LiifError(f"scale must be greater than 1 for the quality benchmark, got "
                            f"{format_scale(bad[0])}")
        if save_images is not None:
            check_save_folder(save_images)
            if json_file is not None and \
                    real_path(json_file) == real_path(Path(save_images).expanduser()):
                raise LiifError(f"--json and --save-images both name {json_file}")
        request.plan = plan_quality(set_list, request.scales, data_root,
                                    save_images=save_images, overwrite=overwrite,
                                    degrade=parse_spec(degrade) if degrade is not None else None)
        if json_file is not None:
            _check_json_outside_sets(json_file, request.plan)
    weights_path = bundled.resolve_weights(weights)
    # Options, data and weights file are fine so far: now what needs torch (loading the
    # weights, the device).
    from ..checkpoint import file_sha256, load
    from ..engine import precision_name
    from .common import resolve_device

    request.checkpoint = load(weights_path)
    request.weights_sha256 = file_sha256(weights_path)
    request.weights_name = str(weights or bundled.DEFAULT)
    request.device = resolve_device(device)
    request.precision = precision_name(precision or "fp32", request.device)  # not 'auto'
    if speed:
        from .speed import CPU_DEFAULT_MAX_OUTPUT_MP

        cap = max_output_mp
        if cap is None:
            cap = CPU_DEFAULT_MAX_OUTPUT_MP if request.device.type == "cpu" else None
        request.max_output_mp = cap or None
    return request


def _check_json_outside_sets(json_file: Path, plan: QualityPlan) -> None:
    """LiifError if --json would land in a set's folder: with --overwrite it could replace
    an HR or LR image, and a file there could be taken for one."""
    target = real_path(json_file)
    for name, set_dir, _ in plan.sets:
        if target.is_relative_to(real_path(set_dir)):
            raise LiifError(f"--json {json_file} is inside set {name}'s folder {set_dir}: "
                            "write it elsewhere")


def _check_options_apply(kind: str, given: dict[str, Any]) -> None:
    """LiifError for the first option given (not None) that `kind` of benchmark ignores."""
    for name, value in given.items():
        if value is not None and kind not in _APPLIES[name]:
            flag = "--no-reference" if name == "reference" else "--" + name.replace("_", "-")
            where = " and ".join(_KIND_NAMES[k] for k in _APPLIES[name])
            why = (" (it times the training step of a fresh model on synthetic crops)"
                   if kind == "training" else "")
            raise LiifError(f"{flag} applies to {where}, not to {_KIND_NAMES[kind]}{why}")


def _training_request(console: Console, json_file: Path | None, overwrite: bool, repeats: int,
                      threads: str | Sequence[int] | None, batch_size: int,
                      precision: str | None, device: str) -> BenchRequest:
    """The checked request of `liif bench --training`, which times the training step of a
    freshly built model on synthetic crops."""
    if device not in ("auto", "cpu"):
        raise LiifError(f"--training times the CPU only (got --device {device})")
    if batch_size < 1:
        raise LiifError(f"batch size must be >= 1 (got {batch_size})")
    if precision not in (None, "auto", "bf16", "fp32"):
        raise LiifError(f"--training trains in bf16 (autocast) or fp32, not {precision}")
    thread_counts = parse_threads(threads)
    import torch  # after the option checks: usage errors answer without it

    from ..engine import precision_name

    name = precision_name(precision or "bf16", torch.device("cpu"))
    return BenchRequest("training", console, json_file, overwrite, repeats,
                        threads=thread_counts, batch_size=batch_size, precision=name)


def run_bench(request: BenchRequest) -> dict[str, Any]:
    """Run a prepared benchmark, print its table, write its JSON; returns the result.
    Running out of memory is a LiifError naming what to lower."""
    try:
        result = _run(request)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise LiifError(f"out of memory while benchmarking ({one_line(exc)}); use a smaller "
                        "--size, --max-output-mp, --tile or --chunk") from None
    if request.json_file is not None:
        from .report import write_json

        write_json(result, request.json_file, overwrite=request.overwrite)
        _status(f"wrote {request.json_file}")
    return result


def bench_command(**options: Any) -> dict[str, Any]:
    """Everything `liif bench` does, given its parsed options (see `prepare_bench`)."""
    return run_bench(prepare_bench(**options))


def _run(request: BenchRequest) -> dict[str, Any]:
    from ..files import json_safe
    from .report import print_quality, print_speed, print_training_speed

    console = request.console
    if request.kind == "training":
        from .training import run_training_speed

        result = run_training_speed(threads=request.threads, batch_size=request.batch_size,
                                    repeats=request.repeats,
                                    amp="cpu" if request.precision == "bf16" else None)
        print_training_speed(console, result)
        return result

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    assert request.checkpoint is not None and request.scales is not None
    model = request.checkpoint.build()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(request.kind, total=None)
        said: list[str] = []

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)
            if not console.is_terminal and not said[-1:] == [label]:  # a log: plain lines
                said.append(label)
                _status(f"bench: {label} ({done}/{total})")

        common = dict(device=request.device, tile=request.tile, chunk=request.chunk,
                      precision=request.precision, weights_name=request.weights_name,
                      weights_sha256=request.weights_sha256, progress=progress)
        if request.kind == "speed":
            from .. import runtime
            from .speed import run_speed

            # Time the engine as `liif upscale` runs it: freed memory stays in the process,
            # so big buffers are not page-faulted in again for every chunk.
            retained = runtime.retain_freed_memory()
            result = run_speed(model, request.in_size, request.scales, repeats=request.repeats,
                               max_output_mp=request.max_output_mp,
                               reference=request.reference, **common)
            if retained:
                result["protocol"] += ("; freed memory kept in the process (glibc mallopt), "
                                       "as liif upscale does")
        else:
            from .quality import run_quality

            assert request.plan is not None
            result = run_quality(request.plan, model, **common)
    result["weights_metadata"] = json_safe(dict(request.checkpoint.metadata))
    if request.kind == "speed":
        print_speed(console, result)
    else:
        print_quality(console, result)
        if request.plan is not None and request.plan.save_dir is not None:
            _status(f"saved LIIF outputs under {request.plan.save_dir}")
    return result


def _status(message: str) -> None:
    """A status line on stderr, like every other command's (stdout holds the tables)."""
    Console(stderr=True).print(message, markup=False, highlight=False, soft_wrap=True)
