"""The speed benchmark: the engine against the paper's straightforward decoder.

A seeded synthetic image of the given size is rendered at each scale by the engine
(`engine.render`) and by the straightforward decoder (`engine.render_reference`): `warmup`
untimed runs, then the median of `repeats` timed runs, as output megapixels per second.
With `max_output_mp`, both render only the same centred band of output rows holding about
that many megapixels (the reference still encodes the whole input, as it must). Peak
memory is the growth over the timed runs: on CUDA `torch.cuda.max_memory_allocated`; on a
Linux CPU the process's peak resident set size, reset to the current size just before the
runs through /proc/self/clear_refs (so every engine is measured from the same start);
elsewhere it is not measured (null).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import LiifError
from ..model import ImplicitImage
from .common import BenchProgress, common_fields, engine_kwargs, resolve_device
from .options import (
    DEFAULT_SPEED_SCALES,
    DEFAULT_SPEED_SIZE,
    check_max_output_mp,
    format_scale,
    speed_input_size,
    speed_output_sizes,
)

CPU_DEFAULT_MAX_OUTPUT_MP = 0.25  # the reference decodes only tens of kilopixels/s on a CPU


def synthetic_image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A seeded, natural-looking (smooth shapes plus fine texture) (3, H, W) image in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand(1, 3, max(2, h // 16 + 2), max(2, w // 16 + 2), generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic",
                                             align_corners=False)[0]
    texture = torch.rand(3, h, w, generator=gen) - 0.5
    return (smooth + 0.1 * texture).clamp_(0, 1)


_LIBC: Any = None


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc only) so it cannot hide a new peak."""
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        _LIBC = False


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


class PeakMemory:
    """Peak memory growth over a block of code, as fairly as the device allows.

    CUDA: growth of torch.cuda.max_memory_allocated. Linux CPU: growth of the process's
    peak resident set size (VmHWM) after resetting it to the current size. Elsewhere
    `peak_bytes` stays None.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None
        self._base = 0
        self._ok = False

    @staticmethod
    def method(device: torch.device) -> str:
        if device.type == "cuda":
            return "torch.cuda.max_memory_allocated growth over the timed runs"
        if device.type == "cpu" and PeakMemory._cpu_supported():
            return ("growth of the process's peak resident set size (VmHWM, reset through "
                    "/proc/self/clear_refs) over the timed runs")
        return "not measured on this platform"

    @staticmethod
    def _cpu_supported() -> bool:
        return os.path.exists("/proc/self/clear_refs") and os.path.exists("/proc/self/status")

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self._ok = True
        elif self.device.type == "cpu" and self._cpu_supported():
            _trim_heap()
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self._base = _proc_status_kb("VmRSS") * 1024
                self._ok = True
            except OSError:
                self._ok = False
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._ok:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            try:
                peak = _proc_status_kb("VmHWM") * 1024
            except OSError:
                return
        self.peak_bytes = max(0, peak - self._base)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        with contextlib.suppress(Exception):
            torch.mps.synchronize()


def timer_name(device: torch.device) -> str:
    """How renders are timed: CUDA events on a GPU, else the host's clock after a sync."""
    return "CUDA events" if device.type == "cuda" else "wall clock (time.perf_counter)"


def _time_one(fn: Callable[[], torch.Tensor],
              device: torch.device) -> tuple[float, torch.Tensor]:
    """One run of `fn` and its seconds: the GPU's own clock on CUDA (from the first kernel
    queued), else the host's clock around the run and a sync."""
    _sync(device)
    if device.type == "cuda":
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000, out
    began = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - began, out


def _time_renders(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int,
                  repeats: int, pixels: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Warm up, then time `repeats` runs; the stats and the last run's output."""
    for _ in range(warmup):
        fn()
    times = []
    out: torch.Tensor | None = None
    with PeakMemory(device) as mem:
        for _ in range(repeats):
            out = None  # do not hold the previous output through the next run
            seconds, out = _time_one(fn, device)
            times.append(seconds)
    median = statistics.median(times)
    stats = {
        "seconds": [round(t, 6) for t in times],
        "median_seconds": median,
        "mp_per_s": pixels / median / 1e6 if median > 0 else math.inf,
        "peak_memory_mb": None if mem.peak_bytes is None else mem.peak_bytes / 2 ** 20,
    }
    assert out is not None
    return stats, out


def _time_engine(model: ImplicitImage, image: torch.Tensor, out_size: tuple[int, int],
                 region: dict[str, Any], engine_options: dict[str, Any], device: torch.device,
                 warmup: int, repeats: int, pixels: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Time the engine on the whole output, or on a band of it.

    For a band, the engine's encoding is charged as in a whole-image render: its decoding of
    the band plus the band's share (by output pixels) of encoding every tile window of the
    whole image, at the seconds per encoded pixel it measured on the band's own windows.
    """
    from ..engine import RenderTimes, plan_tiles, render, resolve_tile_chunk

    runs: list[RenderTimes] = []

    def run() -> torch.Tensor:
        runs.append(RenderTimes())
        return render(model, image, out_size, device=device, times=runs[-1], **engine_options,
                      **region)

    stats, out = _time_renders(run, device, warmup, repeats, pixels)
    if not region:
        return stats, out
    timed = runs[-repeats:]
    tile, _ = resolve_tile_chunk(device, engine_options.get("tile"), None,
                                 decoder=model.spec.decoder)
    whole = plan_tiles(model, tuple(image.shape[1:]), out_size, tile).encoded_pixels
    encode = [t.encode_seconds / t.encoded_pixels * whole for t in timed]
    return _band_stats([t.decode_seconds for t in timed], encode, out_size, pixels,
                       stats["peak_memory_mb"]), out


def _time_reference(model: ImplicitImage, image: torch.Tensor, out_size: tuple[int, int],
                    region: dict[str, Any], device: torch.device, warmup: int, repeats: int,
                    pixels: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Time the reference decoder on the whole output, or on a band of it.

    For a band, the paper's code would encode the whole image once for all output rows, so
    the band is charged its share of one encoding: encoding and decoding are timed apart.
    """
    from ..engine import normalise, render_reference, true_fp32

    if not region:
        def run_whole() -> torch.Tensor:
            return render_reference(model, image, out_size, device=device)
        return _time_renders(run_whole, device, warmup, repeats, pixels)

    with torch.no_grad(), true_fp32(device):
        encode, features = _time_renders(lambda: model.encode(normalise(image, device)),
                                         device, warmup, repeats, pixels)

    def run_band() -> torch.Tensor:
        return render_reference(model, image, out_size, device=device, features=features,
                                **region)

    decode, out = _time_renders(run_band, device, warmup, repeats, pixels)
    peaks = [p for p in (encode["peak_memory_mb"], decode["peak_memory_mb"]) if p is not None]
    return _band_stats(decode["seconds"], encode["seconds"], out_size, pixels,
                       max(peaks) if peaks else None), out


def _band_stats(decode: list[float], whole_encode: list[float], out_size: tuple[int, int],
                pixels: int, peak_memory_mb: float | None) -> dict[str, Any]:
    """Timing stats for a band, as if rendered within the whole image: per repeat, decoding
    the band plus the band's share (by output pixels) of encoding the whole image."""
    share = pixels / (out_size[0] * out_size[1])
    seconds = [round(d + e * share, 6) for d, e in zip(decode, whole_encode, strict=True)]
    median = statistics.median(seconds)
    return {"seconds": seconds, "median_seconds": median,
            "mp_per_s": pixels / median / 1e6 if median > 0 else math.inf,
            "peak_memory_mb": peak_memory_mb,
            "decode_seconds": [round(d, 6) for d in decode],
            "whole_encode_seconds": [round(e, 6) for e in whole_encode],
            "encode_share": share}


def band_rows(out_size: tuple[int, int], max_output_mp: float | None) -> tuple[int, int]:
    """The output rows [start, stop) timed at one scale: all of them, or a centred band of
    about `max_output_mp` megapixels (at least one row)."""
    height, width = out_size
    if not max_output_mp or height * width <= max_output_mp * 1e6:
        return 0, height
    rows = max(1, min(height, int(max_output_mp * 1e6 // width)))
    start = (height - rows) // 2
    return start, start + rows


def run_speed(model: ImplicitImage, size: tuple[int, int] | str = DEFAULT_SPEED_SIZE,
              scales: Sequence[float] = DEFAULT_SPEED_SCALES, *,
              device: torch.device | str = "cpu", repeats: int = 3, warmup: int = 1,
              max_output_mp: float | None = None, reference: bool = True,
              tile: int | None = None, chunk: int | None = None, precision: str = "fp32",
              seed: int = 0, weights_name: str | None = None,
              weights_sha256: str | None = None,
              progress: BenchProgress | None = None) -> dict[str, Any]:
    """Time the engine (and the reference decoder) rendering an (H, W) = `size` image
    (or a 'WIDTHxHEIGHT' string).

    For each scale the output is (round(H*s), round(W*s)); with `max_output_mp` both
    decoders render only the same centred band of output rows (see `band_rows`).
    Returns the JSON-ready result (see `write_json`).
    """
    device = resolve_device(device)
    h, w = speed_input_size(size)
    scales = [float(s) for s in scales]
    if not scales:
        raise LiifError("no scales given (e.g. --scales 4,12.5)")
    for s in scales:
        if not math.isfinite(s) or s <= 0:
            raise LiifError(f"bad scale {s!r}: must be a positive number")
    if repeats < 1:
        raise LiifError(f"repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise LiifError(f"warm-up runs cannot be negative, got {warmup}")
    check_max_output_mp(max_output_mp)
    out_sizes = speed_output_sizes((h, w), scales, max_output_mp)

    engine_options = engine_kwargs(tile, chunk, precision)
    protocol = (f"seeded synthetic {w}x{h} RGB input (seed {seed}); per scale, {warmup} "
                f"warm-up run(s) then the median of {repeats} timed run(s), output megapixels "
                "per second; engine = engine.render, reference = engine.render_reference (the "
                "paper's straightforward decoder, fp32), same input, weights and output region; "
                + (f"only a centred band of output rows of at most {max_output_mp:g} MP is "
                   "rendered when the output is larger, and each decoder is charged as in a "
                   "whole-image render: its decoding of the band plus the band's share (by "
                   "output pixels) of its encoding of the whole image (the reference: one "
                   "encoding of the whole input, timed; the engine: every tile window with "
                   "its halo, at the time per pixel measured on the band's windows); "
                   if max_output_mp else "the whole output is rendered; ")
                + f"timed with {timer_name(device)}; peak memory: {PeakMemory.method(device)}")
    result = common_fields("speed", model, device, weights_name=weights_name,
                           weights_sha256=weights_sha256, protocol=protocol,
                           engine_options=engine_options)
    result.update({"input_size": [h, w], "scales": scales, "repeats": repeats,
                   "warmup": warmup, "max_output_mp": max_output_mp or None,
                   "peak_memory_method": PeakMemory.method(device),
                   "timer": timer_name(device), "results": []})

    model.eval().to(device)
    image = synthetic_image((h, w), seed)
    total = len(scales) * (2 if reference else 1)
    done = 0
    for s, out_size in zip(scales, out_sizes, strict=True):
        rows = band_rows(out_size, max_output_mp)
        region = {} if rows == (0, out_size[0]) else {"out_rows": rows}
        pixels = (rows[1] - rows[0]) * out_size[1]
        entry: dict[str, Any] = {"scale": s, "output_size": list(out_size),
                                 "rows": list(rows), "region_mp": pixels / 1e6}

        entry["engine"], engine_out = _time_engine(model, image, out_size, region,
                                                   engine_options, device, warmup, repeats,
                                                   pixels)
        done += 1
        if progress:
            progress(done, total, f"x{format_scale(s)} engine")
        entry["reference"] = entry["speedup"] = entry["max_abs_diff"] = None
        if reference:
            entry["reference"], ref_out = _time_reference(model, image, out_size, region,
                                                          device, warmup, repeats, pixels)
            entry["speedup"] = entry["engine"]["mp_per_s"] / entry["reference"]["mp_per_s"]
            entry["max_abs_diff"] = float((engine_out - ref_out).abs().max())
            del ref_out
            done += 1
            if progress:
                progress(done, total, f"x{format_scale(s)} reference")
        del engine_out
        result["results"].append(entry)
    return result
