"""What both benchmarks share: the device, the engine's options and the top-level result
fields."""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
from collections.abc import Callable
from typing import Any

import torch

from .. import __version__
from ..model import ImplicitImage

SCHEMA_VERSION = 1
# (done, total, label): called after each unit of work (an image rendered, a timing done).
BenchProgress = Callable[[int, int, str], None]


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


def common_fields(kind: str, model: ImplicitImage, device: torch.device, *,
                  weights_name: str | None,
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
