"""The public Python API: `Upscaler.from_pretrained().upscale(image, scale=4)`, and
`AutoUpscaler().upscale(image, scale=4)`, which picks a bundled model per image.

Takes and returns PIL images or numpy arrays; the CLI is a thin layer over this module.
8- and 16-bit results are rendered straight into that depth, tile by tile (`resample_into`,
as the CLI renders files), so the output is never held in float; float results come from
`resample`, the float32 path.
Colour goes through the LIIF model; an alpha channel is resampled with a bicubic filter;
when the target is no larger than the input in both directions the model is not used at all
(it is made for upscaling) and a Lanczos filter downsamples instead.

Bad arguments raise TypeError (the wrong kind of value) or ArgumentError, a ValueError (and
a LiifError) whose message names the argument and what it expects, as the CLI refuses the
same things: animated PIL images, tiles under MIN_TILE, float pixels outside [0, 1]. A PIL
image's EXIF orientation is applied, as the CLI applies a file's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import bundled, checkpoint
from .engine import (
    PRECISIONS,
    Progress,
    precision_name,
    render_tiles,
    resolve_device,
    resolve_tile_chunk,
)
from .errors import ArgumentError, LiifError, OutOfMemory, is_out_of_memory
from .images import (
    Layout,
    Picture,
    StoredPicture,
    compression,
    icc_fits,
    quantise,
    upright_pixels,
)
from .model import ImplicitImage
from .sizing import MAX_SIDE, check_scale, check_tile, target_size, uses_model

# The encoder pads its input with zeros (as the paper's code does), which darkens and
# distorts about PAD_SMALL pixels along each border. Harmless on ordinary images, it dominates
# tiny ones (a 1x1 image of (200, 50, 50) came out about (138, 114, 110)): along any side
# shorter than MIN_SIDE the input is first extended by repeating its edge pixels.
MIN_SIDE = 16
PAD_SMALL = 8
_ALPHA_BAND = 1 << 20  # output alpha values resized at a time (8 MB of float64)

# Where Upscaler.render_into puts a finished tile: (output rows, output columns, (rows,
# cols, 3) float32 RGB in [0, 1]).
RgbSink = Callable[[slice, slice, np.ndarray], None]


class _Resampler:
    """What Upscaler and AutoUpscaler share: `upscale` on top of their `resample`."""

    def resample(self, picture: Picture, size: tuple[int, int],
                 progress: Progress | None = None, *, name: str | None = None) -> Picture:
        raise NotImplementedError

    def resample_into(self, picture: Picture, out: StoredPicture,
                      progress: Progress | None = None, *,
                      name: str | None = None) -> StoredPicture:
        raise NotImplementedError

    def upscale(self, image: Image.Image | np.ndarray, *, scale: float | None = None,
                size: tuple[int, int] | None = None,
                progress: Progress | None = None) -> Image.Image | np.ndarray:
        """Resize a PIL image or numpy array by `scale` or to `size` = (width, height).

        Returns the same kind of object: PIL in the same mode (L, LA, RGB, RGBA, I;16 in
        either byte order, I, F; palette, bilevel, CMYK and YCbCr images come back as L, RGB
        or RGBA) with the input's ICC profile where it fits, upright as its EXIF orientation
        says (the CLI's result for the same pixels); numpy with the same dtype and channel
        count (uint8, uint16, or float in [0, 1]). TypeError or ArgumentError (a ValueError)
        for bad arguments.
        """
        hw = _size_argument(size)
        if scale is not None:
            _scale_argument(scale)
        if (scale is None) == (hw is None):
            raise ArgumentError("give exactly one of scale= (a factor) and size= (width, height)")
        if isinstance(image, Image.Image):
            picture, mode = _picture_from_pil(image), image.mode
        else:
            array = _array_argument(image)
            picture, mode = Picture.from_array(array), None
        try:
            target = target_size(picture.size, scale=scale, size=hw)
        except LiifError as exc:  # e.g. a side too long for any image
            raise ArgumentError(str(exc)) from None
        if mode is not None and mode != "F":
            # Rendered straight into the 8- or 16-bit result, as the CLI renders a file.
            layout, pillow = _pil_layout(picture, mode)
            stored = _output_buffer(target, layout, pillow)
            return _with_profile(_pil_from_stored(self.resample_into(picture, stored, progress),
                                                  mode), picture.icc_profile)
        if mode is None and array.dtype in (np.uint8, np.uint16):
            stored = _output_buffer(target, _array_layout(array), False)
            pixels = self.resample_into(picture, stored, progress).pixels
            return pixels[:, :, 0] if array.ndim == 2 else pixels
        out = self.resample(picture, target, progress)  # float results: the float path
        if mode is not None:  # 'F': float gray
            gray = np.clip(out.rgb.mean(axis=-1), 0.0, 1.0).astype(np.float32)
            return _with_profile(Image.fromarray(gray), picture.icc_profile)
        return _array_like(out, array)

    def upscale_video(self, src: str | Path, dst: str | Path, *, scale: float | None = None,
                      size: tuple[int, int] | None = None, crf: int = 18,
                      overwrite: bool = False,
                      progress: Progress | None = None) -> list[str]:
        """Upscale every frame of the video file `src` by `scale` or to `size` = (width,
        height) and write it to `dst` (.mp4, .mov, .mkv: H.264; .webm: VP9), atomically.

        Frame count, rate and timestamps are the source's; audio is copied unchanged where
        the container holds it; an odd side is rounded to even. `progress(frames done,
        total)`. Returns the notes (e.g. the even rounding); needs `pip install
        'liif[video]'`. LiifError for a damaged or frameless video or an unwritable `dst`.
        """
        from . import video

        hw = _size_argument(size)
        if scale is not None:
            _scale_argument(scale)
        if (scale is None) == (hw is None):
            raise ArgumentError("give exactly one of scale= (a factor) and size= (width, height)")
        return video.upscale_video(
            lambda picture, out_size: self.resample(picture, out_size), src, dst,
            lambda in_size: target_size(in_size, scale=scale, size=hw), crf=crf,
            overwrite=overwrite, progress=progress)


class Upscaler(_Resampler):
    """A loaded model plus how to run it (device, precision, tile and chunk sizes).

    min_side: inputs with a side shorter than this are edge-padded along it before encoding
    (see MIN_SIDE; 0 turns this off); the output covers exactly the original image.
    """

    def __init__(self, model: ImplicitImage, *, device: str | torch.device = "auto",
                 precision: str = "auto", tile: int | None = None, chunk: int | None = None,
                 name: str = "custom", metadata: dict[str, Any] | None = None,
                 min_side: int = MIN_SIDE):
        if not isinstance(getattr(model, "_orig_mod", model), ImplicitImage):  # or compiled
            hint = (" (to load weights by name or file: Upscaler.from_pretrained(...))"
                    if isinstance(model, (str, Path)) else "")
            raise TypeError(f"model= must be a liif model (LIIF or LMF); got "
                            f"{type(model).__name__}{hint}")
        check_tile(tile, chunk)
        _min_side_argument(min_side)
        # 'auto' becomes bf16 or fp32 here; errors (e.g. fp16 on the CPU) surface early.
        self.device, self.precision = _device_and_precision(device, precision)
        self.model = model.eval().to(self.device)
        # None: the device's and precision's defaults (engine.default_tile_chunk).
        self.tile, self.chunk = resolve_tile_chunk(self.device, tile, chunk,
                                                   PRECISIONS[self.precision],
                                                   model.spec.decoder)
        self.min_side = min_side
        self.name, self.metadata = name, dict(metadata or {})

    @classmethod
    def from_pretrained(cls, weights: str | Path | None = None, **options: Any) -> Upscaler:
        """Load bundled weights by name (default: the project's EDSR-baseline LIIF) or a file."""
        path = bundled.resolve_weights(weights)
        ckpt = checkpoint.load(path)
        return cls(ckpt.build(), name=str(weights or bundled.DEFAULT),
                   metadata=ckpt.metadata, **options)

    def model_for(self, picture: Picture) -> Upscaler:
        """The Upscaler that resamples `picture`: this one (see AutoUpscaler)."""
        return self

    # ------------------------------------------------------------------ core

    def render_rgb(self, rgb: np.ndarray, size: tuple[int, int],
                   progress: Progress | None = None) -> np.ndarray:
        """(H, W, 3) float RGB in [0, 1] -> (H', W', 3) float32 at `size` = (H', W')."""
        _check_float_rgb(rgb)
        if not uses_model(rgb.shape[:2], size):
            if progress:
                progress(size[0] * size[1], size[0] * size[1])
            return np.stack([_resize_plane(rgb[..., c], size, Image.Resampling.LANCZOS)
                             for c in range(3)], axis=-1)
        out = np.empty((*size, 3), np.float32)

        def put(rows: slice, cols: slice, tile: np.ndarray) -> None:
            out[rows, cols] = tile

        self.render_into(rgb, size, put, progress)
        return out

    def render_into(self, rgb: np.ndarray, size: tuple[int, int], sink: RgbSink,
                    progress: Progress | None = None) -> None:
        """Render (H, W, 3) float RGB in [0, 1] with the model at `size` = (H', W'), handing
        each finished tile to `sink(rows, cols, tile)`: output rows and columns (slices) and
        (rows, cols, 3) float32 RGB, the values render_rgb returns there. Only the tile being
        rendered is held in float (engine.render_tiles)."""
        _check_float_rgb(rgb)
        (h, w), (out_h, out_w) = rgb.shape[:2], size
        pad_h, pad_w = edge_padding(h, out_h, self.min_side), edge_padding(w, out_w, self.min_side)
        region: dict[str, tuple[int, int]] = {}
        if pad_h or pad_w:
            # Render the padded image at the same pixel size and keep the original's pixels:
            # each pad holds a whole number of output pixels, so the geometry is exact.
            rgb = np.pad(rgb, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)), mode="edge")
            top, left = pad_h * out_h // h, pad_w * out_w // w
            size = (out_h + 2 * top, out_w + 2 * left)
            region = {"out_rows": (top, top + out_h), "out_cols": (left, left + out_w)}
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))

        def put(rows: slice, cols: slice, tile: torch.Tensor) -> None:
            sink(rows, cols, tile.numpy())

        render_tiles(self.model, image, size, put, tile=self.tile, chunk=self.chunk,
                     device=self.device, precision=self.precision, progress=progress, **region)

    def resample(self, picture: Picture, size: tuple[int, int],
                 progress: Progress | None = None, *, name: str | None = None) -> Picture:
        """A Picture at `size` (H', W'), keeping its alpha, bit depth and colour profile, in
        float (resample_into renders straight into the stored bit depth).

        Running out of memory raises OutOfMemory (a LiifError) naming `name` (what is being
        rendered, e.g. the output file), the size and what lowers memory use. A downscale is
        `downscale`'s (no model).
        """
        if not uses_model(picture.size, size):
            return downscale(picture, size, progress)
        with self._memory_errors(size, name):
            rgb = self.render_rgb(visible_colours(picture), size, progress)
            alpha = None
            if picture.alpha is not None:  # bicubic: uses_model means it grows
                alpha = _resize_plane(picture.alpha, size, Image.Resampling.BICUBIC)
        return picture.with_pixels(rgb, alpha)

    def resample_into(self, picture: Picture, out: StoredPicture,
                      progress: Progress | None = None, *,
                      name: str | None = None) -> StoredPicture:
        """Resample `picture` to `out.size` into `out` and return it: as `resample`, but each
        tile is quantised into the output's stored depth as it is rendered (alpha likewise,
        in bands of rows), so memory holds the output at that depth, not in float. The same
        values as `store(resample(picture, out.size), out.layout)`; errors as `resample`'s.
        """
        size = out.size
        if not uses_model(picture.size, size):
            return out.fill(downscale(picture, size, progress))
        with self._memory_errors(size, name):
            self.render_into(visible_colours(picture), size, out.put_rgb, progress)
            if out.layout.alpha:
                if picture.alpha is None:
                    raise ValueError("the output has an alpha channel and the picture has none")
                for rows, band in resized_bands(picture.alpha, size):
                    out.put_alpha(rows, band)
        return out

    @contextmanager
    def _memory_errors(self, size: tuple[int, int], name: str | None) -> Iterator[None]:
        """Turn running out of memory in the block into one OutOfMemory error."""
        try:
            yield
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            what = f"{name} at " if name else ""
            raise OutOfMemory(f"out of memory rendering {what}{size[1]}x{size[0]} "
                              f"({size[0] * size[1] / 1e6:,.1f} MP) on {self.device.type}: "
                              f"use a smaller tile (now {self.tile}; --tile, or tile= in "
                              f"Python) or chunk (now {self.chunk}; --chunk, chunk=), or a "
                              "smaller output (the CLI's --max-pixels refuses large ones up "
                              "front)") from None


class AutoUpscaler(_Resampler):
    """The bundled models, one picked per image (`--weights auto`): the real-photo model for
    visibly compressed sources (JPEGs up to quality bundled.AUTO_MAX_QUALITY, lossy WebP;
    `Picture.lossy` and `Picture.quality`), the default model for the rest
    (bundled.auto_choice). Numpy arrays count as uncompressed.

    fast: choose between the fast models instead (`--fast`: fast-real and fast).
    The other options are Upscaler's, for every model.
    """

    def __init__(self, *, device: str | torch.device = "auto", precision: str = "auto",
                 fast: bool = False, tile: int | None = None, chunk: int | None = None,
                 min_side: int = MIN_SIDE):
        # Check the options now, so that a bad one fails before any image is read; each
        # model loads when the first image that needs it comes (a run of PNGs never reads
        # the real-photo weights).
        check_tile(tile, chunk)
        _min_side_argument(min_side)
        if not isinstance(fast, (bool, np.bool_)):
            raise TypeError(f"fast= must be True or False; got {fast!r}")
        fast = bool(fast)
        device, _ = _device_and_precision(device, precision)
        # The name as given: 'auto' resolves per model (see engine.precision_name).
        self.options = dict(device=device, precision=precision, tile=tile, chunk=chunk,
                            min_side=min_side)
        self.upscalers: dict[str, Upscaler] = {}  # name -> loaded model
        self.fast = fast

    def model_for(self, picture: Picture) -> Upscaler:
        """The Upscaler for `picture`: its `name` says which model it is."""
        name = bundled.auto_choice(picture.lossy, picture.quality, self.fast)
        if name not in self.upscalers:
            self.upscalers[name] = Upscaler.from_pretrained(name, **self.options)
        return self.upscalers[name]

    def resample(self, picture: Picture, size: tuple[int, int],
                 progress: Progress | None = None, *, name: str | None = None) -> Picture:
        """Upscaler.resample with the model picked for `picture` (none, for a downscale)."""
        if not uses_model(picture.size, size):
            return downscale(picture, size, progress)
        return self.model_for(picture).resample(picture, size, progress, name=name)

    def resample_into(self, picture: Picture, out: StoredPicture,
                      progress: Progress | None = None, *,
                      name: str | None = None) -> StoredPicture:
        """Upscaler.resample_into with the model picked for `picture` (none, to downscale)."""
        if not uses_model(picture.size, out.size):
            return out.fill(downscale(picture, out.size, progress))
        return self.model_for(picture).resample_into(picture, out, progress, name=name)


def downscale(picture: Picture, size: tuple[int, int],
              progress: Progress | None = None) -> Picture:
    """`picture` at a (H', W') `size` no larger along either axis, with a Lanczos filter for
    colour and alpha: what the upscalers do when the model is not needed (sizing.uses_model)."""
    if progress:
        progress(size[0] * size[1], size[0] * size[1])
    colours = visible_colours(picture)
    rgb = np.stack([_resize_plane(colours[..., c], size, Image.Resampling.LANCZOS)
                    for c in range(3)], axis=-1)
    alpha = None if picture.alpha is None else _resize_plane(picture.alpha, size,
                                                             Image.Resampling.LANCZOS)
    return picture.with_pixels(rgb, alpha)


HIDDEN_COLOUR_REACH = 31  # pixels (windows of 3 to 33): past the filters' and the model's


def visible_colours(picture: Picture, reach: int = HIDDEN_COLOUR_REACH) -> np.ndarray:
    """`picture`'s (H, W, 3) RGB to resample, with the colour of each fully transparent
    pixel (alpha 0) within `reach` pixels of a visible one replaced: by the mean of the
    visible colours in the smallest window (3, 5, 9, 17, 33 px a side, outwards, each
    window also counting colours the smaller ones filled) holding any. Visible pixels are
    unchanged. Colour and alpha are resampled apart, so without this a transparent area's
    hidden colour (often black, or left over from editing) would bleed into the visible
    edges around it as a dark or odd fringe."""
    if picture.alpha is None:
        return picture.rgb
    known = picture.alpha > 0  # (H, W)
    if known.all() or not known.any():
        return picture.rgb
    out = picture.rgb.copy()
    radius, covered = 1, 0
    while covered + radius <= reach and not known.all():  # windows of 3, 5, 9, 17, ... px
        counts = _window_sums(known.astype(np.float64), radius)
        new = ~known & (counts > 0)
        for c in range(3):
            sums = _window_sums(np.where(known, out[..., c], 0.0), radius)
            out[..., c][new] = sums[new] / counts[new]
        known |= new
        covered, radius = covered + radius, 2 * radius
    return out


def _window_sums(plane: np.ndarray, radius: int) -> np.ndarray:
    """Each pixel's sum of `plane` over the square of side 2 * radius + 1 around it (zero
    outside the image), from one summed-area table: the same cost for any radius."""
    h, w = plane.shape
    side = 2 * radius + 1
    table = np.pad(plane, (radius + 1, radius)).cumsum(0).cumsum(1)
    return (table[side:side + h, side:side + w] - table[:h, side:side + w]
            - table[side:side + h, :w] + table[:h, :w])


def _bicubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bicubic filter for resampling an axis of `n_in` samples to `n_out`, computed
    with the same double-precision operations in the same order as Pillow's C code (its
    precompute_coeffs), so that sums over them give Pillow's results to the bit: for each
    output sample the input samples it reads, (n_out, taps), and their weights, zero past
    the ones it has (whose indices, clipped to the axis, stay valid)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale  # the bicubic filter's support, widened when shrinking
    taps = math.ceil(support) * 2 + 1
    centre = (np.arange(n_out) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C truncation
    count = np.minimum((centre + support + 0.5).astype(np.int64), n_in) - first
    index = first[:, None] + np.arange(taps)  # (n_out, taps)
    x = np.abs((index - centre[:, None] + 0.5) * (1.0 / filterscale))
    # Keys' cubic with a = -0.5, written as Pillow writes it.
    weights = np.where(x < 1.0, ((1.5 * x - 2.5) * x) * x + 1,
                       np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * -0.5, 0.0))
    weights[np.arange(taps) >= count[:, None]] = 0.0
    total = np.zeros(n_out)
    for tap in range(taps):  # summed in order, as Pillow does
        total += weights[:, tap]
    weights = np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0.0)
    return np.minimum(index, n_in - 1), weights


def _filter_columns(rows: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R, W) float32 -> (R, W') float32 through taps from _bicubic_taps: each sum in float64,
    tap by tap, rounded to float32 at the end, as Pillow's 'F' mode resampling does."""
    total = np.zeros((rows.shape[0], index.shape[0]))
    for tap in range(index.shape[1]):
        total += rows[:, index[:, tap]] * weights[:, tap]
    return total.astype(np.float32)


def resized_bands(plane: np.ndarray, size: tuple[int, int]) -> Iterator[tuple[slice, np.ndarray]]:
    """A float plane in [0, 1] resized to (H', W') `size` with the bicubic filter, in bands of
    output rows: (rows, (rows, W') float32 clipped to [0, 1]), top to bottom, equal to those
    rows of `_resize_plane(plane, size, BICUBIC)` (Pillow resampling the whole plane in
    float) to the bit. Where the height does not shrink, only a band is ever held: Pillow's
    two passes, columns first, band by band. An upscale that shrinks the height (a stretch)
    is rare, and there Pillow picks the order of its passes by a rule of its own: the whole
    plane goes through Pillow, then."""
    plane = np.ascontiguousarray(plane, dtype=np.float32)
    (h, w), (out_h, out_w) = plane.shape, size
    band = max(1, _ALPHA_BAND // out_w)
    if out_h < h:
        whole = _resize_plane(plane, size, Image.Resampling.BICUBIC)
        for top in range(0, out_h, band):
            yield slice(top, min(top + band, out_h)), whole[top:top + band]
        return
    columns = _bicubic_taps(w, out_w) if out_w != w else None
    rows_taps = _bicubic_taps(h, out_h) if out_h != h else None
    for top in range(0, out_h, band):
        rows = slice(top, min(top + band, out_h))
        if rows_taps is None:  # only the width changes
            part = plane[rows]
            yield rows, np.clip(part if columns is None else _filter_columns(part, *columns),
                                0.0, 1.0)
            continue
        index, weights = rows_taps[0][rows], rows_taps[1][rows]
        source = slice(int(index.min()), int(index.max()) + 1)  # the input rows it reads
        part = plane[source] if columns is None else _filter_columns(plane[source], *columns)
        total = np.zeros((rows.stop - rows.start, out_w))
        for tap in range(index.shape[1]):
            total += part[index[:, tap] - source.start] * weights[:, tap, None]
        yield rows, np.clip(total.astype(np.float32), 0.0, 1.0)


def _output_buffer(size: tuple[int, int], layout: Layout, pillow: bool) -> StoredPicture:
    """An empty StoredPicture for upscale's result; OutOfMemory where memory cannot hold it."""
    try:
        return StoredPicture(size, layout, pillow=pillow)
    except MemoryError:
        raise OutOfMemory(f"cannot hold a {size[1]}x{size[0]} result "
                          f"({size[0] * size[1] / 1e6:,.1f} MP) in memory; ask for a smaller "
                          "size") from None


def _array_layout(array: np.ndarray) -> Layout:
    """The layout of a uint8/uint16 (H, W) or (H, W, 1-4) array, as upscale returns it."""
    channels = 1 if array.ndim == 2 else array.shape[2]
    return Layout(gray=channels <= 2, alpha=channels in (2, 4),
                  depth=16 if array.dtype == np.uint16 else 8)


def _pil_layout(picture: Picture, mode: str) -> tuple[Layout, bool]:
    """The layout to render a picture from a PIL image of `mode` (not 'F') in, and whether in
    a PIL image (pillow=): 16-bit gray for I;16 and I, 8-bit gray (with alpha or not) for a
    grayscale picture (gray as the CLI writes it: the mean of R, G and B), else 8-bit RGB or
    RGBA."""
    alpha = picture.alpha is not None
    if mode.startswith("I;16") or mode == "I":
        return Layout(gray=True, alpha=False, depth=16), False
    if picture.grayscale:
        return Layout(gray=True, alpha=alpha, depth=8), False
    return Layout(gray=False, alpha=alpha, depth=8), not alpha


def _pil_from_stored(stored: StoredPicture, mode: str) -> Image.Image:
    """A StoredPicture from _pil_layout as a PIL image: L, LA, RGB, RGBA, or `mode` for
    deep gray (I;16 in its byte order, or I)."""
    if mode == "I":
        return Image.fromarray(stored.pixels[:, :, 0].astype(np.int32))
    if mode.startswith("I;16"):  # from raw bytes: Pillow's convert() clips I;16B to 255
        deep = stored.pixels[:, :, 0]
        order = {"I;16B": ">", "I;16N": "="}.get(mode, "<")
        height, width = deep.shape
        return Image.frombuffer(mode, (width, height), deep.astype(f"{order}u2").tobytes(),
                                "raw", mode, 0, 1)
    return stored.pil_image()


def _with_profile(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """`image` carrying `icc_profile` (as Pillow's writers read it) where the profile
    describes its channels (gray or RGB), as the CLI carries a file's profile."""
    if icc_fits(icc_profile, len(image.getbands())):
        image.info["icc_profile"] = icc_profile
    return image


def _size_argument(size: object) -> tuple[int, int] | None:
    """`size=` (width, height) as (H, W); TypeError or ArgumentError if it is none."""
    if size is None:
        return None
    expected = "size=(width, height), two whole numbers"
    if not isinstance(size, (tuple, list, np.ndarray)):
        raise TypeError(f"{expected}; got {size!r} ({type(size).__name__})")
    if len(size) != 2:
        raise ArgumentError(f"{expected}; got {size!r}")
    for value in size:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{expected}; got {size!r}")
        if not 1 <= value <= MAX_SIDE:
            raise ArgumentError(f"{expected} from 1 to {MAX_SIDE:,}; got {size!r}")
    return int(size[1]), int(size[0])


def _scale_argument(scale: object) -> None:
    """TypeError or ArgumentError for a `scale=` that is not a finite number > 0."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale= must be a number > 0, e.g. 4 or 12.5; got {scale!r}")
    try:
        check_scale(float(scale))
    except LiifError:
        raise ArgumentError(f"scale= must be a finite number > 0; got {scale!r}") from None


def _array_argument(image: object) -> np.ndarray:
    """The pixels of a numpy (or array-like) `image`; TypeError or ArgumentError for what
    upscale cannot take: no image at all, an empty one, float pixels that are not in [0, 1]
    (e.g. 8-bit values as floats: divide them by 255) or not finite."""
    if image is None or isinstance(image, (str, bytes, Path)):
        hint = "; open a file with PIL.Image.open first" if image is not None else ""
        raise TypeError(f"image must be a PIL image or a numpy array of shape (H, W) or "
                        f"(H, W, 1-4); got {type(image).__name__}{hint}")
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise ArgumentError(f"image must have shape (H, W) or (H, W, 1-4); got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ArgumentError(f"image is empty: shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ArgumentError("image holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ArgumentError(f"a float image must hold values in [0, 1]; this one holds "
                                f"{low:g} to {high:g} (8-bit values? divide by 255, or pass a "
                                "uint8 array)")
    elif array.dtype not in (np.uint8, np.uint16):
        raise ArgumentError(f"image must be uint8, uint16 or float in [0, 1]; got {array.dtype}")
    return array


def _check_float_rgb(rgb: np.ndarray) -> None:
    """TypeError or ArgumentError unless `rgb` is a (H, W, 3) float array, as render_rgb
    takes it (its values are not scanned: that is upscale's job)."""
    if not isinstance(rgb, np.ndarray) or not np.issubdtype(rgb.dtype, np.floating):
        raise TypeError(f"rgb must be a float numpy array in [0, 1], got "
                        f"{getattr(rgb, 'dtype', type(rgb).__name__)} (8-bit pixels? divide "
                        "by 255, or call upscale, which takes uint8 and uint16)")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ArgumentError(f"rgb must have shape (H, W, 3); got {rgb.shape}")


def _device_and_precision(device: str | torch.device,
                          precision: str) -> tuple[torch.device, str]:
    """The device and the precision name (auto resolved) an Upscaler renders with; a bad
    name, or a device that is not here, raises LiifError."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device= must be a name ('auto', 'cpu', 'cuda', 'mps') or a "
                        f"torch.device; got {device!r}")
    if not isinstance(precision, str):
        raise TypeError(f"precision= must be a name ('auto', 'fp32', 'bf16', 'fp16'); got "
                        f"{precision!r}")
    device = resolve_device(str(device))  # a torch.device too: is it available here?
    return device, precision_name(precision, device)


def _min_side_argument(min_side: object) -> None:
    """TypeError or ArgumentError for a `min_side=` that is not a whole number >= 0."""
    if isinstance(min_side, bool) or not isinstance(min_side, numbers.Integral):
        raise TypeError(f"min_side= must be a whole number of pixels >= 0; got {min_side!r}")
    if min_side < 0:
        raise ArgumentError(f"min_side= must be >= 0; got {min_side}")


def edge_padding(n_in: int, n_out: int, min_side: int = MIN_SIDE) -> int:
    """Pixels to add at each end of an axis of `n_in` input pixels rendered to `n_out`: 0 if
    the axis is at least `min_side` long, else the least multiple of n_in / gcd(n_in, n_out)
    (so that the pad covers a whole number of output pixels) not below PAD_SMALL."""
    if n_in >= min_side:
        return 0
    unit = n_in // math.gcd(n_in, n_out)
    return -(-PAD_SMALL // unit) * unit


def _resize_plane(plane: np.ndarray, size: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    """Resample one float channel to (H', W') with a PIL filter, in float precision."""
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    out = np.asarray(image.resize((size[1], size[0]), method), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def _picture_from_pil(image: Image.Image) -> Picture:
    """A PIL image as the CLI reads a file: upright (EXIF orientation), animated images
    refused; ArgumentError for what cannot be upscaled."""
    image.load()
    try:
        pixels = upright_pixels(image)
    except LiifError as exc:
        raise ArgumentError(str(exc)) from None
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ArgumentError(f"image is empty: {image.width}x{image.height}")
    picture = Picture.from_array(pixels)
    picture.lossy, picture.quality = compression(image)
    profile = image.info.get("icc_profile") or None
    picture.icc_profile = profile if icc_fits(profile, pixels.shape[2]) else None
    return picture


def _array_like(picture: Picture, like: np.ndarray) -> np.ndarray:
    """The picture's pixels with the dtype and channel layout of `like`."""
    channels = 1 if like.ndim == 2 else like.shape[2]
    colour = picture.rgb.mean(axis=-1, keepdims=True) if channels <= 2 else picture.rgb
    planes = [colour]
    if channels in (2, 4):
        alpha = picture.alpha if picture.alpha is not None else np.ones(picture.size, np.float32)
        planes.append(alpha[..., None])
    values = np.concatenate(planes, axis=-1)
    if like.ndim == 2:
        values = values[..., 0]
    if like.dtype in (np.uint8, np.uint16):
        return quantise(values, 16 if like.dtype == np.uint16 else 8)
    return values.astype(like.dtype, copy=False)
