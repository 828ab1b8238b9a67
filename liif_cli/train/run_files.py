"""What a run keeps on disk beside its weights: the run folder, what the checkpoint's metadata
records (settings, validation, the earlier phases of a fine-tuned model), metrics.jsonl."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from .. import bundled, checkpoint
from ..errors import LiifError
from ..files import remove_stale_temps, write_text_atomic
from .config import TrainConfig


def prepare_run_dir(out: Path) -> Path | None:
    """Create RUN_DIR and check it is writable; LiifError otherwise. Returns the outermost
    folder it created (None if RUN_DIR existed), for remove_if_empty to undo; removes
    temporary files left in RUN_DIR by a killed run."""
    created = None
    for folder in (out, *out.parents):
        if folder.exists():
            break
        created = folder
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        remove_if_empty(out, created)
        raise LiifError(f"cannot write to run dir {out}: {exc.strerror or exc}") from None
    remove_stale_temps(out)
    return created


def remove_if_empty(out: Path, created: Path | None) -> None:
    """Remove the folders prepare_run_dir created, from RUN_DIR up to `created`, while they
    are empty: a run that failed before writing anything leaves no trace."""
    if created is None:
        return
    for folder in (out, *out.parents):
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            return
        if folder == created:
            return


def _phase_summary(meta: dict[str, Any], weights: str) -> dict[str, Any]:
    """What a fine-tuning run records of the checkpoint it started from (`liif info`)."""
    keys = ("steps", "training_images", "batch_size", "lr", "lr_schedule", "training_time_s",
            "val_set", "val_psnr")
    summary = {"weights": weights, **{k: meta[k] for k in keys if k in meta}}
    if isinstance(summary.get("val_set"), str) and Path(summary["val_set"]).is_absolute():
        summary["val_set"] = "/".join(Path(summary["val_set"]).parts[-2:])  # no machine paths
    return summary


def _lineage(meta: dict[str, Any], weights: str, depth: int = 0) -> list[dict[str, Any]]:
    """The phases that made the checkpoint with metadata `meta` (found at `weights`), oldest
    first: its recorded history, or else that of its own --init file while it is there."""
    earlier: list[dict[str, Any]] = list(meta.get("history") or [])
    if "history" not in meta and meta.get("init") and depth < 20:
        try:
            parent = checkpoint.load(bundled.resolve_weights(meta["init"])).metadata
            earlier = _lineage(parent, meta["init"], depth + 1)
        except LiifError:
            earlier = []
    return [*earlier, _phase_summary(meta, weights)]


def training_history(config: TrainConfig,
                     start: checkpoint.Checkpoint | None) -> list[dict[str, Any]]:
    """The training phases before this run (fine-tuning with --init): what made the --init
    weights. A resumed run keeps the history it saved; runs from before histories existed
    rebuild it from their --init file, while that is still there."""
    if start is None or not config.init:
        return []
    if not config.resume:
        return _lineage(start.metadata, config.init)
    if "history" in start.metadata:
        return list(start.metadata["history"])
    try:
        return _lineage(checkpoint.load(bundled.resolve_weights(config.init)).metadata,
                        config.init)
    except LiifError:
        return []


def checkpoint_metadata(config: TrainConfig, step: int, last_val: dict[str, Any] | None,
                        names: list[str], elapsed: float, world: int = 1,
                        history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a run's checkpoint records of it (`liif info` shows it): settings, progress, the
    last validation, and the earlier phases of a fine-tuned model."""
    meta = {
        "trained_with": "liif train",
        "training_data": [str(d) for d in config.data],  # as given: no absolute paths
        "training_images": len(names),
        "steps": step,
        "total_steps": config.steps,
        "encoder": config.spec().encoder,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "lr_schedule": config.lr_schedule,
        "amp": config.amp,
        "ema": config.ema,
        "training_time_s": round(elapsed, 1),
        "crop": config.crop,
        "samples": config.samples,
        "scale_range": [config.scale_min, config.scale_max],
        "shrink_max": config.shrink_max,
        "val_set": str(config.val) if config.val else None,
        "val_psnr": (last_val or {}).get("psnr"),
        "val_bicubic_psnr": (last_val or {}).get("bicubic_psnr"),
        "val_step": (last_val or {}).get("step"),
        "val_crop": config.val_crop,
        "seed": config.seed,
    }
    degradation = config.degradation_config()
    if degradation is not None:
        meta["degradation"] = degradation.to_dict()
    if config.init:
        meta["init"] = config.init
    if history:  # earlier phases (fine-tuning): what `liif info` shows as the whole story
        meta["history"] = history
        meta["steps_all_phases"] = step + sum(int(h.get("steps") or 0) for h in history)
    if config.extensions:  # resumed with more --steps: the lr schedule was stretched then
        meta["extended"] = [f"from {old} to {new} steps at step {at}"
                            for at, old, new in config.extensions]
    if world > 1:  # batch_size above is the global batch
        meta["ranks"] = world
        meta["batch_per_rank"] = config.batch_size // world
    return meta


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines newer than the resumed checkpoint (they will be recomputed)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text_atomic(path, "".join(line + "\n" for line in keep))

