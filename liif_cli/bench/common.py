"""What both benchmarks share: defaults, option parsing and the top-level result fields."""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import platform
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import __version__
from ..errors import LiifError
from ..model import LIIF
from ..sizing import parse_size

SCHEMA_VERSION = 1
DEFAULT_SETS = ("Set5", "Set14")
DEFAULT_QUALITY_SCALES = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
DEFAULT_SPEED_SCALES = (4.0, 12.5)
DEFAULT_SPEED_SIZE = (512, 512)  # (H, W) of the synthetic input

# (done, total, label): called after each unit of work (an image rendered, a timing done).
BenchProgress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------- option parsing


def parse_sets(sets: str | Sequence[str] | None) -> list[str]:
    """'Set5,Set14' (or a list) -> ['Set5', 'Set14']; None gives the default sets."""
    if sets is None:
        return list(DEFAULT_SETS)
    items = sets.split(",") if isinstance(sets, str) else list(sets)
    names = list(dict.fromkeys(s.strip() for s in items if s.strip()))
    if not names:
        raise LiifError("no benchmark sets given (e.g. --sets Set5,Set14)")
    return names


def parse_scales(scales: str | Sequence[float] | None,
                 default: Sequence[float] = DEFAULT_QUALITY_SCALES) -> list[float]:
    """'2,3,x4,12.5' (or a list of numbers) -> [2.0, 3.0, 4.0, 12.5], duplicates dropped."""
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
        if value not in out:
            out.append(value)
    if not out:
        raise LiifError("no scales given (e.g. --scales 2,3,4)")
    return out


def speed_input_size(size: str | Sequence[int] | None) -> tuple[int, int]:
    """The speed benchmark's input size as (H, W): a 'WIDTHxHEIGHT' string, an (H, W) pair,
    or None for the default."""
    if size is None:
        return DEFAULT_SPEED_SIZE
    h, w = parse_size(size) if isinstance(size, str) else (int(v) for v in size)
    if h < 1 or w < 1:
        raise LiifError(f"bad size {w}x{h}: both sides must be at least 1 pixel")
    return h, w


def format_scale(scale: float) -> str:
    """2.0 -> '2', 12.5 -> '12.5'."""
    return str(int(scale)) if float(scale).is_integer() else f"{scale:g}"


# --------------------------------------------------------------------------- shared fields


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or device.type


def resolve_device(device: torch.device | str) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from ..engine import resolve_device as engine_device

    return engine_device(device)


def engine_kwargs(tile: int | None, chunk: int | None, precision: str) -> dict[str, Any]:
    """The keyword arguments passed to engine.render (None: the engine's own default)."""
    kwargs: dict[str, Any] = {"precision": precision}
    if tile is not None:
        kwargs["tile"] = tile
    if chunk is not None:
        kwargs["chunk"] = chunk
    return kwargs


def common_fields(kind: str, model: LIIF, device: torch.device, *, weights_name: str | None,
                  weights_sha256: str | None, protocol: str,
                  engine_options: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields both benchmark results carry."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "liif_version": __version__,
        "torch_version": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "weights_name": weights_name,
        "weights_sha256": weights_sha256,
        "model_spec": model.spec.to_dict(),
        "engine_options": dict(engine_options),
        "protocol": protocol,
        "warnings": [],
    }
