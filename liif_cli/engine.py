"""The rendering engine: turn an image into any output size, tile by tile, chunk by chunk.

An output pixel depends only on input pixels within `model.context_radius` of it, so a
large input is split into tiles of the *output*; each tile encodes just the window of the
input it needs (its latents plus a halo for the encoder's receptive field and the 3x3
unfold), queries its own pixel centres in bounded chunks, and writes them into place.
Latents are addressed by global index, so the tiled result equals the untiled one.
Peak memory depends on the tile and chunk sizes, not on the image size: `render_tiles` hands
each finished tile to its caller (which stores the output at its own bit depth), and `render`
is that collected into one float32 image, the reference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .errors import LiifError
from .model import (
    EPS_SHIFT,
    Decoder,
    GridDecoder,
    ImplicitImage,
    LatentProjection,
    axis_centres,
    ensemble_shifts,
    make_cells,
    make_coords,
    nearest_latent_index,
)
from .runtime import cpu_has_fast_bf16, flush_denormals

DEFAULT_TILE = 256  # input pixels per tile side (CPU)
# The fast model's CPU tile: its encoder is most of its work, and a tile's halo (35 input
# pixels each side) is encoded twice; 512 encodes a 512x384 input once instead of 1.35 times,
# for about 0.15 GB more working memory.
FAST_TILE = 512
# Queries decoded at once on the CPU, per compute dtype: the fastest of 2,048 to 65,536 in a
# sweep on a 2-core AMD EPYC with AVX512-BF16 (see README, Numbers). Either way each of the
# decoder's (4 x chunk, 256) activation buffers is 16 MiB; from 32 MiB on, glibc maps every
# such buffer afresh and page-faults it in, and decoding got 25-35% slower.
CPU_CHUNKS = {torch.float32: 4096, torch.bfloat16: 8192}
DEFAULT_CHUNK = CPU_CHUNKS[torch.float32]
CUDA_CHUNK = 1 << 18  # queries decoded at once on a GPU: enough work to keep it busy
# The fast model (LMF) decodes whole bands of rows and keeps only 16-wide activations: about
# 1 KB a query in all. Bands of 32,768 to 100,000 queries ran fastest on the CPU (a 2-core
# AMD EPYC with AVX512-BF16); smaller ones pad more of their blocks.
FAST_CHUNK, FAST_CUDA_CHUNK = 1 << 16, 1 << 20
CUDA_MAX_TILE = 2048
# Rough working memory, float32: per query (4 neighbours x 256 hidden x a few live buffers)
# and per encoded input pixel (encoder activations and the 256-channel latent projection).
QUERY_BYTES = 12 * 1024
PIXEL_BYTES = 4 * 1024
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

Progress = Callable[[int, int], None]  # (output pixels done, output pixels in all)
# Where render_tiles puts a finished tile: (output rows, output columns, (rows, cols, 3) RGB).
TileSink = Callable[[slice, slice, Tensor], None]


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; other names must be available."""
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LiifError("--device cuda: no CUDA GPU is available here")
    index = name.partition(":")[2]
    if name.startswith("cuda") and index.isdigit() and int(index) >= torch.cuda.device_count():
        raise LiifError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA "
                        "GPU(s), numbered from 0")
    if name == "mps" and not torch.backends.mps.is_available():
        raise LiifError("--device mps: Apple's MPS backend is not available here")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LiifError(f"unknown device {name!r} (use auto, cpu, cuda or mps)") from None


def precision_name(name: str, device: torch.device) -> str:
    """The precision `name` means on `device`: 'auto' is bf16 where the device multiplies
    bf16 in hardware (a CUDA GPU with bf16, a CPU with AMX or AVX512-BF16), else fp32. (For
    the fast model on the CPU bf16 covers its encoder and latent MLP: see render_dtype.)"""
    if name == "auto":
        if device.type == "cuda":
            fast = torch.cuda.is_bf16_supported()
        else:
            fast = device.type == "cpu" and cpu_has_fast_bf16()
        return "bf16" if fast else "fp32"
    if name not in PRECISIONS:
        raise LiifError(f"unknown precision {name!r} (use auto, fp32, fp16 or bf16)")
    if name == "fp16" and device.type == "cpu":
        raise LiifError("--precision fp16 needs a GPU; on the CPU use fp32 or bf16")
    return name


def render_dtype(dtype: torch.dtype, device: torch.device, decoder: str = "liif") -> torch.dtype:
    """The dtype the decoder renders in for a compute dtype: `dtype`, except for the fast
    model on the CPU, whose 16-wide render layers ran half as fast in bf16 as in fp32 (a
    2-core AMD EPYC with AVX512-BF16): there only its encoder and latent MLP take bf16."""
    return torch.float32 if device.type == "cpu" and decoder == "lmf" else dtype


def default_tile_chunk(device: torch.device, dtype: torch.dtype = torch.float32,
                       decoder: str = "liif") -> tuple[int, int]:
    """Tile and chunk sizes for a device, compute dtype and decoder family. CPU: tiles of
    DEFAULT_TILE and the chunk measured fastest for the dtype (CPU_CHUNKS), for the fast
    model FAST_TILE and FAST_CHUNK. CUDA: chunks
    of 2^18 queries (2^20 for the fast model) and the largest tile (up to 2048) whose working
    memory fits in half of the GPU's free memory, so one render keeps the GPU busy without
    running out."""
    fast = decoder == "lmf"
    if device.type != "cuda":
        return (FAST_TILE, FAST_CHUNK) if fast else (DEFAULT_TILE, CPU_CHUNKS.get(
            dtype, DEFAULT_CHUNK))
    free, _ = torch.cuda.mem_get_info(device)
    budget = max(0, free // 2 - CUDA_CHUNK * QUERY_BYTES)
    tile = min(CUDA_MAX_TILE, int((budget / PIXEL_BYTES) ** 0.5) // 64 * 64)
    return max(DEFAULT_TILE, tile), FAST_CUDA_CHUNK if fast else CUDA_CHUNK


def resolve_tile_chunk(device: torch.device, tile: int | None, chunk: int | None,
                       dtype: torch.dtype = torch.float32,
                       decoder: str = "liif") -> tuple[int, int]:
    """`tile` and `chunk` as given, each None replaced by the default for the device,
    compute dtype and decoder family."""
    auto_tile, auto_chunk = default_tile_chunk(device, dtype, decoder)
    return (auto_tile if tile is None else tile), (auto_chunk if chunk is None else chunk)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The dtype to render in: fp32 everywhere, fp16/bf16 where the device computes in
    them, 'auto' as precision_name says."""
    return PRECISIONS[precision_name(name, device)]


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Span:
    """One tile's extent along one axis: output pixels [out_start, out_stop) and the input
    window [in_start, in_stop) that must be encoded to render them exactly."""

    out_start: int
    out_stop: int
    in_start: int
    in_stop: int


@dataclass(frozen=True)
class TilePlan:
    """How a render of an (H, W) input to (H', W') splits into tiles (rows x columns)."""

    row_spans: tuple[Span, ...]
    col_spans: tuple[Span, ...]

    def __len__(self) -> int:
        return len(self.row_spans) * len(self.col_spans)

    def __iter__(self) -> Iterator[tuple[Span, Span]]:
        for rows in self.row_spans:
            for cols in self.col_spans:
                yield rows, cols

    @property
    def encoded_pixels(self) -> int:
        """Input pixels encoded over all tiles (halos included, so more than the image)."""
        return (sum(r.in_stop - r.in_start for r in self.row_spans)
                * sum(c.in_stop - c.in_start for c in self.col_spans))


@dataclass
class RenderTimes:
    """Where a `render` spent its time, for benchmarks: encoding input windows (encoder and
    latent projection) and decoding queries, and how many input pixels it encoded."""

    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    encoded_pixels: int = 0


def plan_tiles(model: ImplicitImage, in_size: tuple[int, int], out_size: tuple[int, int],
               tile: int = DEFAULT_TILE, out_rows: tuple[int, int] | None = None,
               out_cols: tuple[int, int] | None = None) -> TilePlan:
    """Split the output into tiles of about `tile` input pixels a side (0: one tile).

    `out_rows` and `out_cols` restrict the render to output rows and columns [start, stop).
    """
    halo = model.encoder.receptive_radius + (1 if model.spec.feat_unfold else 0)
    first, last = out_rows or (0, out_size[0])
    left, right = out_cols or (0, out_size[1])
    rows = _spans(in_size[0], out_size[0], tile, halo, model.spec.local_ensemble, first, last)
    cols = _spans(in_size[1], out_size[1], tile, halo, model.spec.local_ensemble, left, right)
    return TilePlan(tuple(rows), tuple(cols))


def _spans(n_in: int, n_out: int, tile: int, halo: int, ensemble: bool,
           first: int, last: int) -> list[Span]:
    """Tile one axis: output ranges of ~tile input pixels each, and their input windows."""
    step = n_out if tile <= 0 or tile >= n_in else max(1, round(tile * n_out / n_in))
    centres = axis_centres(n_out)  # (n_out,) output pixel centres on this axis
    spans = []
    for start in range(first, last, step):
        stop = min(start + step, last)
        ends = centres[[start, stop - 1]]
        lows, highs = [], []
        for shift, _ in ensemble_shifts(ensemble):
            eps = EPS_SHIFT if ensemble else 0.0
            idx = nearest_latent_index((ends + shift / n_in + eps).clamp(-1 + 1e-6, 1 - 1e-6),
                                       n_in)
            lows.append(int(idx[0]))
            highs.append(int(idx[1]))
        spans.append(Span(start, stop, max(0, min(lows) - halo), min(n_in, max(highs) + halo + 1)))
    return spans


# --------------------------------------------------------------------------- rendering


def true_fp32(device: torch.device) -> AbstractContextManager[Any]:
    """On CUDA, fp32 means fp32: cuDNN's TF32 convolutions (on by default) are switched off.

    A new context manager per call: cuDNN's flags context can be entered only once."""
    if device.type != "cuda":
        return nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                       deterministic=cudnn.deterministic, allow_tf32=False)


def _compute_context(device: torch.device, dtype: torch.dtype) -> AbstractContextManager[Any]:
    """The arithmetic of one tile's encoding: autocast to `dtype`, or true fp32. New per tile."""
    if dtype == torch.float32:
        return true_fp32(device)
    return torch.autocast(device.type, dtype=dtype)


def _clock(device: torch.device) -> Callable[[], float]:
    """A timer that waits for the device to finish queued work before reading the time."""
    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter()
    return now


def normalise(image: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """(3, H, W) RGB in [0, 1] -> (1, 3, H, W) float32 in [-1, 1], the model's input range."""
    return (image.to(device, torch.float32).unsqueeze(0) - 0.5) / 0.5


@torch.no_grad()
def render(model: ImplicitImage, image: Tensor, size: tuple[int, int], *, tile: int | None = None,
           chunk: int | None = None, device: torch.device | str = "cpu",
           precision: str = "fp32", out_rows: tuple[int, int] | None = None,
           out_cols: tuple[int, int] | None = None, progress: Progress | None = None,
           times: RenderTimes | None = None) -> Tensor:
    """Upscale (or resample) an image to `size` with the fast decoder: the float32 reference.

    image: (3, H, W) float RGB in [0, 1]. Returns (3, H', W') float32 in [0, 1] on the CPU,
    or only output rows `out_rows` = (start, stop) and columns `out_cols` of it. `times`, if
    given, is added to. `tile` and `chunk` default to the device's and precision's
    (default_tile_chunk). `render_tiles` renders the same pixels without building the
    whole float image.
    """
    first, last = out_rows or (0, size[0])
    left, right = out_cols or (0, size[1])
    out = torch.empty(3, last - first, right - left)

    def put(rows: slice, cols: slice, rgb: Tensor) -> None:
        out[:, rows, cols] = rgb.permute(2, 0, 1)

    render_tiles(model, image, size, put, tile=tile, chunk=chunk, device=device,
                 precision=precision, out_rows=out_rows, out_cols=out_cols, progress=progress,
                 times=times)
    return out


@torch.no_grad()
def render_tiles(model: ImplicitImage, image: Tensor, size: tuple[int, int], sink: TileSink, *,
                 tile: int | None = None, chunk: int | None = None,
                 device: torch.device | str = "cpu", precision: str = "fp32",
                 out_rows: tuple[int, int] | None = None,
                 out_cols: tuple[int, int] | None = None, progress: Progress | None = None,
                 times: RenderTimes | None = None) -> None:
    """`render`, tile by tile: each finished tile goes to `sink(rows, cols, rgb)` instead of
    into one float image, so a caller can store it at the output's own bit depth at once and
    never hold the whole output in float32 (`api.Upscaler.render_into`).

    rows, cols: the tile's output rows and columns, as slices of the rendered region
    (`out_rows` x `out_cols`, by default the whole output); rgb: (rows, cols, 3) float32 in
    [0, 1] on the CPU, the values `render` puts there; the sink may change it. The tiles
    cover the region exactly once. Other arguments as for `render`.
    """
    device = torch.device(device)
    dtype = resolve_precision(precision, device)
    tile, chunk = resolve_tile_chunk(device, tile, chunk, dtype, model.spec.decoder)
    _check_render_args(image, size, chunk)
    # oneDNN's convolutions run fastest on channels-last tensors (the encoder 1.3x, CPU)
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    _check_finite_weights(model)
    in_size = (image.shape[1], image.shape[2])
    plan = plan_tiles(model, in_size, size, tile, out_rows, out_cols)
    first, last = out_rows or (0, size[0])
    left, right = out_cols or (0, size[1])
    row_centres, col_centres = axis_centres(size[0]), axis_centres(size[1])
    cell = make_cells(size, 1).to(device)  # (1, 2)
    decode_dtype = render_dtype(dtype, device, model.spec.decoder)
    decode = model.renderer(decode_dtype)

    clock = _clock(device) if times is not None else None
    done, total = 0, (last - first) * (right - left)  # output pixels, for `progress`

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    for rows, cols in plan:
        with flush_denormals():  # see runtime.flush_denormals; not around the sink
            started = clock() if clock else 0.0
            window = image[:, rows.in_start:rows.in_stop, cols.in_start:cols.in_stop]
            window = normalise(window, device).contiguous(memory_format=layout)
            with _compute_context(device, dtype):
                proj = model.project_latents(model.encode(window), grid_size=in_size,
                                             offset=(rows.in_start, cols.in_start))
            # Once per tile, so that no chunk converts the whole window's values again
            # (the fast model under bf16 renders in fp32: that made x12.5 slower than fp32).
            proj = replace(proj, values=proj.values.to(decode_dtype))
            if not _all_finite(proj.values):
                raise LiifError("the encoder produced NaN or infinite values"
                                + ("" if dtype == torch.float32 else
                                   f": {precision} overflowed (try --precision fp32)"))
            encoded = clock() if clock else 0.0
            tile_rows = row_centres[rows.out_start:rows.out_stop]
            tile_cols = col_centres[cols.out_start:cols.out_stop]
            tile_rgb = _decode_tile(decode, proj, tile_rows, tile_cols, cell, chunk, advance)
            del proj
            # Clamping would hide NaN as black.
            if not _all_finite(tile_rgb):
                raise LiifError("the model produced NaN or infinite values: its weights are broken"
                                + ("" if dtype == torch.float32 else
                                   f", or {precision} overflowed (try --precision fp32)"))
            tile_rgb = tile_rgb.mul_(0.5).add_(0.5).clamp_(0, 1).view(
                rows.out_stop - rows.out_start, cols.out_stop - cols.out_start, 3).cpu()
            if clock is not None and times is not None:
                times.encode_seconds += encoded - started
                times.decode_seconds += clock() - encoded
                times.encoded_pixels += window.shape[-2] * window.shape[-1]
        sink(slice(rows.out_start - first, rows.out_stop - first),
             slice(cols.out_start - left, cols.out_stop - left), tile_rgb)


def _all_finite(values: Tensor) -> bool:
    """Whether `values` holds no NaN or infinity. The extremes propagate NaN and show an
    infinity: one reduction, 50x faster than isfinite().all() on the CPU."""
    return bool(torch.isfinite(torch.stack(torch.aminmax(values))).all())


def _check_finite_weights(model: ImplicitImage) -> None:
    """LiifError if any weight is NaN or infinite. The output check after each tile cannot
    see all of them: oneDNN's fused linear + ReLU (LIIF's decoder) turns NaN into 0, so
    broken weights rendered a flat colour. One host synchronisation per render."""
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    if not bool(finite):
        raise LiifError("the model's weights hold NaN or infinite values: the weights file "
                        "is broken")


def _decode_tile(decode: Decoder | GridDecoder, proj: LatentProjection, rows: Tensor,
                 cols: Tensor, cell: Tensor, chunk: int,
                 advance: Callable[[int], None]) -> Tensor:
    """(R*C, 3) normalised RGB of a tile's (R,) x (C,) pixel centres, decoded about `chunk`
    queries at a time; `advance(n)` after each chunk of n. The decoders skip the window
    check: plan_tiles sized the window from these very queries."""
    device = proj.values.device
    tile_rgb = torch.empty(len(rows) * len(cols), 3, device=device)  # (Q_tile, 3)
    if isinstance(decode, GridDecoder):  # near-square pieces of about `chunk` queries
        width = min(len(cols), max(1, math.isqrt(chunk)))
        band = max(1, chunk // width)
        grid = tile_rgb.view(len(rows), len(cols), 3)
        for top in range(0, len(rows), band):
            for left in range(0, len(cols), width):
                part = decode(proj, rows[top:top + band], cols[left:left + width], cell[0])
                grid[top:top + band, left:left + width] = part  # (band, width, 3)
                advance(part.shape[0] * part.shape[1])
        return tile_rgb
    coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).view(-1, 2)
    coords = coords.to(device)  # (Q_tile, 2)
    cells = cell.expand(1, min(chunk, coords.shape[0]), 2)  # (1, Q, 2)
    for begin in range(0, coords.shape[0], chunk):  # chunks in row-major order
        query = coords[begin:begin + chunk].unsqueeze(0)  # (1, Q, 2)
        tile_rgb[begin:begin + chunk] = decode(proj, query, cells[:, :query.shape[1]])[0]
        advance(query.shape[1])
    return tile_rgb


@torch.no_grad()
def render_reference(model: ImplicitImage, image: Tensor, size: tuple[int, int], *,
                     chunk: int = 30000,
                     device: torch.device | str = "cpu",
                     out_rows: tuple[int, int] | None = None,
                     features: Tensor | None = None) -> Tensor:
    """The straightforward renderer, as the paper's code does it: encode the whole image,
    then for each chunk of queries unfold the feature map and run the whole MLP four times.
    The yardstick for `render`'s speed and exactness; same inputs and outputs.

    features: `model.encode` of this image, if already computed (lets a benchmark time the
    encoding apart from the decoding).
    """
    device = torch.device(device)
    _check_render_args(image, size, chunk)
    model = model.to(device)
    first, last = out_rows or (0, size[0])
    coords = make_coords(size)[first * size[1]:last * size[1]].to(device)
    cells = make_cells(size, coords.shape[0]).to(device)
    with true_fp32(device):
        feat = features if features is not None else model.encode(normalise(image, device))
        pieces = [model.query_rgb_reference(feat, coords[None, i:i + chunk],
                                            cells[None, i:i + chunk])[0]
                  for i in range(0, coords.shape[0], chunk)]
    rgb = torch.cat(pieces).view(last - first, size[1], 3)
    return (rgb * 0.5 + 0.5).clamp_(0, 1).permute(2, 0, 1).cpu()


def _check_render_args(image: Tensor, size: tuple[int, int], chunk: int) -> None:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got {tuple(image.shape)}")
    if min(size) < 1 or min(image.shape[1:]) < 1:
        raise LiifError(f"cannot render an image of size {image.shape[2]}x{image.shape[1]} "
                        f"to {size[1]}x{size[0]}")
    if chunk < 1:
        raise LiifError("chunk size must be at least 1")
