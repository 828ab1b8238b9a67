"""Showing a run's progress: plain log lines, or a Rich progress bar for `liif train`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .config import TrainConfig
from .loop import ProgressFn, TrainEvent, TrainResult, run_training


def _format_val(val: dict[str, Any] | None) -> str:
    if not val or not val.get("psnr"):
        return ""
    return " ".join(f"{k} {v:.2f}" for k, v in val["psnr"].items())


def _format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def line_progress(write: Callable[[str], Any] = print, every_s: float = 60.0) -> ProgressFn:
    """A progress callback that writes one plain line per `every_s` seconds (for logs)."""
    last = [0.0]

    def callback(ev: TrainEvent) -> None:
        if ev.kind == "step":
            now = time.monotonic()
            if now - last[0] < every_s and ev.step != 1:
                return
            last[0] = now
            rate = f"{ev.steps_per_s:.3f}" if ev.steps_per_s else "?"
            write(f"step {ev.step}/{ev.total} loss {ev.loss:.4f} avg {ev.avg_loss:.4f} "
                  f"lr {ev.lr:.2e} {rate} steps/s eta {_format_eta(ev.eta_s)}")
        elif ev.kind == "val" and ev.val:
            v = ev.val
            write(f"val step {v['step']}: psnr {json.dumps(v['psnr'])} bicubic "
                  f"{json.dumps(v['bicubic_psnr'])} ({v['val_s']} s)")
        elif ev.kind == "checkpoint":
            write(f"checkpoint at step {ev.step}")
        elif ev.message:
            write(f"{ev.kind}: {ev.message}")

    return callback


def train_with_console(config: TrainConfig, console: Any) -> TrainResult:
    """run_training with a Rich progress bar on `console` (plain lines if not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.text import Text

    if not console.is_terminal:
        return run_training(config, line_progress(
            lambda line: console.print(line, markup=False, highlight=False)))

    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} it/s"),
               TextColumn("eta {task.fields[eta]}"), TextColumn("[cyan]{task.fields[val]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=config.steps, loss="-", rate="-", eta="-", val="")

        def callback(ev: TrainEvent) -> None:
            if ev.kind in ("warning", "interrupted", "done"):
                style = "yellow" if ev.kind != "done" else "green"
                bar.console.print(Text.assemble((f"{ev.kind}: ", style), ev.message))
            if ev.kind == "start":
                bar.update(task, completed=ev.step, total=ev.total)
            if ev.kind in ("step", "val", "checkpoint"):
                bar.update(task, completed=ev.step,
                           loss=f"{ev.loss:.4f}" if ev.loss is not None else "-",
                           rate=f"{ev.steps_per_s:.2f}" if ev.steps_per_s else "-",
                           eta=_format_eta(ev.eta_s), val=_format_val(ev.val))

        return run_training(config, callback)

