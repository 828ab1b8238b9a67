"""Benchmark results out: strict JSON files (written atomically) and Rich tables."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..files import json_safe, write_text_atomic
from .options import check_json_target, format_scale
from .sets import LR_FILE_SOURCE

# --------------------------------------------------------------------------- JSON


def to_json(result: dict[str, Any]) -> str:
    """The result as strict JSON text (infinite PSNRs, from identical images, become null)."""
    return json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n"


def write_json(result: dict[str, Any], path: str | os.PathLike[str],
               overwrite: bool = False) -> Path:
    """Write a result as JSON (atomically: a temporary file, then a rename)."""
    path = check_json_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, to_json(result), overwrite=overwrite)
    return path


# --------------------------------------------------------------------------- tables


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def quality_table(result: dict[str, Any]) -> Table:
    """A rich table of a quality result: one row per (set, scale)."""
    # Names come from files and folders: shown as they are, never read as Rich markup.
    name = escape(str(result.get("weights_name") or "model"))
    title = f"Y-PSNR (dB) / Y-SSIM, shave = ceil(scale): {name}"
    degrade = result.get("degrade")
    if degrade:
        title += f", LR inputs degraded with {escape(str(degrade))}"
    table = Table(title=title, title_justify="left")
    for name, justify in (("Set", "left"), ("Scale", "right"), ("LR source", "left"),
                          ("N", "right"), ("LIIF PSNR", "right"), ("LIIF SSIM", "right"),
                          ("Bicubic PSNR", "right"), ("Bicubic SSIM", "right"),
                          ("Lanczos PSNR", "right"), ("Lanczos SSIM", "right"),
                          ("Gain (dB)", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in result["results"]:
        source = escape(str(e["lr_folder"])) if e["lr_source"] == LR_FILE_SOURCE \
            else "PIL bicubic"
        if degrade:
            source += f" + {escape(str(degrade))}"
        gain = e["gain_psnr"]
        gain_text = _fmt(gain, 2)
        if gain is not None and math.isfinite(gain):
            gain_text = f"[green]{gain:+.2f}[/]" if gain > 0 else f"[red]{gain:+.2f}[/]"
        table.add_row(escape(str(e["set"])), f"x{format_scale(e['scale'])}", source,
                      str(e["n_images"]),
                      _fmt(e["model"]["psnr"], 2), _fmt(e["model"]["ssim"], 4),
                      _fmt(e["bicubic"]["psnr"], 2), _fmt(e["bicubic"]["ssim"], 4),
                      _fmt(e["lanczos"]["psnr"], 2), _fmt(e["lanczos"]["ssim"], 4), gain_text)
    return table


def speed_table(result: dict[str, Any]) -> Table:
    """A rich table of a speed result: one row per scale."""
    h, w = result["input_size"]
    device = escape(f"{result['device']} ({result['device_name']})")
    table = Table(title=f"Speed on {device}, input {w}x{h}",
                  title_justify="left")
    for name in ("Scale", "Output", "Timed", "Engine MP/s", "Engine MB", "Ref. MP/s",
                 "Ref. MB", "Speed-up", "Max |diff|"):
        table.add_column(name, justify="left" if name in ("Output", "Timed") else "right")
    for e in result["results"]:
        oh, ow = e["output_size"]
        start, stop = e["rows"]
        region = "all" if (start, stop) == (0, oh) else f"{e['region_mp']:.2f} MP band"
        ref = e["reference"] or {}
        speedup = e["speedup"]
        diff = e["max_abs_diff"]
        table.add_row(f"x{format_scale(e['scale'])}", f"{ow}x{oh}", region,
                      _fmt(e["engine"]["mp_per_s"], 3), _fmt(e["engine"]["peak_memory_mb"], 0),
                      _fmt(ref.get("mp_per_s"), 3), _fmt(ref.get("peak_memory_mb"), 0),
                      "-" if speedup is None else f"{speedup:.1f}x",
                      "-" if diff is None else f"{diff:.1e}")
    table.caption = ("MB: peak memory growth. Band: a centred band of output rows, each "
                     "decoder charged the band's share of its whole-image encoding.")
    return table


def print_quality(console: Console, result: dict[str, Any]) -> None:
    """Print a quality result's table, and its warnings."""
    for warning in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)
    console.print(quality_table(result))


def print_speed(console: Console, result: dict[str, Any]) -> None:
    """Print a speed result's table and how memory was measured."""
    for warning in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)
    console.print(speed_table(result))
    console.print(f"[dim]peak memory: {escape(str(result['peak_memory_method']))}[/]",
                  highlight=False)


def training_speed_table(result: dict[str, Any]) -> Table:
    """A rich table of a training-speed result: one row per thread count."""
    table = Table(title=f"Training throughput, batch {result['batch_size']}, "
                        f"amp {result['amp']} ({result['cpu_capability']})",
                  title_justify="left")
    for name in ("Threads", "Reference crops/s", "liif train crops/s", "Speed-up"):
        table.add_column(name, justify="right")
    for row in result["rows"]:
        table.add_row(str(row["threads"]), _fmt(row["reference_crops_per_s"], 2),
                      _fmt(row["liif_crops_per_s"], 2), f"{row['speedup']:.2f}x")
    table.caption = (f"median of {result['repeats']} blocks of {result['steps_per_block']} "
                     "steps; reference: NCHW, float32 first decoder layer, default allocator")
    return table


def print_training_speed(console: Console, result: dict[str, Any]) -> None:
    console.print(training_speed_table(result))
