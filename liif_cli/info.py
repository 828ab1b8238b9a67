"""What `liif info` shows of a checkpoint: its record (file, SHA-256, architecture, size and
what its training recorded) as strict-JSON data, and as readable rows for a table."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from . import bundled, checkpoint
from .files import json_safe
from .model import count_parameters


def checkpoint_record(path: Path) -> dict[str, Any]:
    """Everything `liif info` reports of the checkpoint at `path` (LiifError if it is none).

    Shipped weights are named, not located (where an installation keeps them is pip's
    business), absolute paths in their metadata are cut short, and the weights they were
    trained from (`init`, each earlier phase's `weights`) are named by file name only: where
    those files lay on the training machine means nothing elsewhere.
    """
    ckpt = checkpoint.load(path)
    shipped = bundled.is_bundled(path)
    model_info = bundled.describe(path.stem) if shipped else None
    spec = ckpt.spec.to_dict()
    metadata = {key: _without_machine_paths(key, value) if shipped else value
                for key, value in ckpt.metadata.items()
                if spec.get(key, object()) != value}  # e.g. 'encoder', shown with the spec
    model = ckpt.build()
    return json_safe({
        "file": f"bundled weights {path.stem!r}" if shipped else str(path),
        "for": f"{model_info.use} (--weights {model_info.short})" if model_info else None,
        "sha256": checkpoint.file_sha256(path), "format": ckpt.source_format,
        "family": FAMILY_NAMES[ckpt.spec.decoder], "spec": spec,
        "parameters": count_parameters(model),
        "decoder_macs_per_pixel": {f"x{s}": round(model.decoder_macs(s)) for s in MAC_SCALES},
        "metadata": metadata})


# What `liif info` calls each decoder family, and the scales it counts the decoder's work at.
FAMILY_NAMES = {"liif": "LIIF (MLP decoder)", "lmf": "fast (latent-modulated decoder, LMF)"}
MAC_SCALES = (2, 4, 12)
# Metadata keys whose name alone would mislead: the readable rows' label, and what it counts.
LABELS = {"training_images": ("training images used",
                              "those large enough for the largest crop")}
# Metadata that names files or folders of the training machine (runs store them absolute).
PATH_KEYS = frozenset({"training_data", "val_set", "init", "teacher"})


def readable_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, text) rows of a checkpoint_record, in the order a reader wants them."""
    rows = [("file", record["file"])]
    if record["for"]:
        rows.append(("for", record["for"]))
    rows += [("sha256", record["sha256"]), ("format", record["format"]),
             ("family", record["family"])]
    rows += [(key, readable(key, value)) for key, value in record["spec"].items()]
    rows.append(("parameters", f"{record['parameters']:,}"))
    rows.append(("decoder multiply-adds per pixel",
                 ", ".join(f"{k} {v:,}" for k, v in record["decoder_macs_per_pixel"].items())))
    for key, value in record["metadata"].items():
        label, note = LABELS.get(key, (key, None))
        text = readable(key, short_paths(key, value))
        rows.append((label, f"{text} ({note})" if note and value is not None else text))
    return rows


def short_paths(key: str, value: object) -> object:
    """A metadata value as the readable rows show it: the paths of PATH_KEYS (and of the
    earlier phases' 'weights' and 'val_set') relative to the working folder when inside it,
    else with the home folder as '~'; the JSON record keeps them whole."""
    if key == "history" and isinstance(value, list):
        return [{k: short_paths("init" if k == "weights" else k, v) for k, v in phase.items()}
                if isinstance(phase, dict) else phase for phase in value]
    if key not in PATH_KEYS:
        return value
    if isinstance(value, list):
        return [short_paths(key, item) for item in value]
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    path = Path(value)
    for base, shown in ((Path.cwd(), None), (Path.home(), "~")):
        if path.is_relative_to(base) and path != base:
            rest = path.relative_to(base)
            return str(rest) if shown is None else str(Path(shown, rest))
    return value


def readable(key: str, value: object) -> str:
    """A value of the record as `liif info` shows it: numbers with thousands separators, PSNR in
    dB to two decimals, ranges as LO-HI, one line per earlier training phase."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if key.endswith("time_s") and math.isfinite(value):
            minutes = math.floor(value / 60 + 0.5)  # half up, as round_size
            return f"{value:,.0f} s ({minutes // 60} h {minutes % 60:02d} min)"
        return f"{value:g}"
    if isinstance(value, list):
        if key == "history" and all(isinstance(v, dict) for v in value):
            return "\n".join(f"{i}. {_phase_line(phase)}" for i, phase in enumerate(value, 1))
        if key.endswith(("_range", "_size", "_sigma", "_scale", "_quality")) and len(value) == 2:
            return "-".join(readable("", v) for v in value)
        return ", ".join(readable(key, v) for v in value)
    if isinstance(value, dict):
        if "psnr" in key and all(checkpoint.is_finite_number(v) for v in value.values()):
            return ", ".join(f"{k} {v:.2f}" for k, v in value.items())
        return ", ".join(f"{k} {readable(str(k), v)}" for k, v in value.items()) or "-"
    return str(value)


def _phase_line(phase: dict) -> str:
    """One earlier training phase, e.g. 'runs/phase1.pth: 26,000 steps on 80 images, batch 4,
    lr 0.00015 cosine, 10,006 s (2 h 47 min); Set5/HR x2 37.00, x4 30.88'."""
    def shown(name: str) -> str:
        value = phase.get(name)
        return readable(name, float(value) if checkpoint.is_finite_number(value) else value)

    parts = [f"{phase.get('weights', '?')}: {readable('', phase.get('steps', '?'))} steps"]
    if "training_images" in phase:
        parts[0] += f" on {readable('', phase['training_images'])} images"
    if "batch_size" in phase:
        parts.append(f"batch {phase['batch_size']}")
    if "lr" in phase:
        parts.append(f"lr {shown('lr')} {phase.get('lr_schedule') or ''}".rstrip())
    if "training_time_s" in phase:
        parts.append(shown("training_time_s"))
    line = ", ".join(parts)
    if phase.get("val_psnr"):
        line += f"; {phase.get('val_set') or 'validation'} {readable('psnr', phase['val_psnr'])}"
    return line


def _without_machine_paths(key: str, value: object) -> object:
    """Metadata of shipped weights without paths of the machine they were trained on:
    absolute paths, and relative ones that climb out of the run's folder ('../data/val'),
    cut to their last two parts ('/home/x/data/Set5/HR' -> 'Set5/HR'), and the
    weights files they started from ('init', each phase's 'weights') to their file name
    ('runs/p8-5000.pth' -> 'p8-5000.pth')."""
    if isinstance(value, list):
        return [_without_machine_paths(key, item) for item in value]
    if isinstance(value, dict):  # e.g. the earlier phases under 'history'
        return {k: _without_machine_paths(k, item) for k, item in value.items()}
    if not isinstance(value, str):
        return value
    parts = value.replace("\\", "/").rstrip("/").split("/")
    if key in ("init", "weights", "teacher"):
        return parts[-1]
    if value.startswith(("/", "\\", "..")) or value[1:3] == ":\\":
        return "/".join(parts[-2:])
    return value
