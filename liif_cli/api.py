"""The public Python API: `Upscaler.from_pretrained().upscale(image, scale=4)`, and
`AutoUpscaler().upscale(image, scale=4)`, which picks a bundled model per image.

Takes and returns PIL images or numpy arrays; the CLI is a thin layer over this module.
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
    render,
    resolve_device,
    resolve_tile_chunk,
)
from .errors import ArgumentError, LiifError, is_out_of_memory
from .images import Picture, compression, quantise, upright_pixels
from .model import ImplicitImage
from .sizing import MAX_SIDE, check_scale, check_tile, target_size, uses_model

# The encoder pads its input with zeros (as the paper's code does), which darkens and
# distorts about PAD_SMALL pixels along each border. Harmless on ordinary images, it dominates
# tiny ones (a 1x1 image of (200, 50, 50) came out about (138, 114, 110)): along any side
# shorter than MIN_SIDE the input is first extended by repeating its edge pixels.
MIN_SIDE = 16
PAD_SMALL = 8


class _Resampler:
    """What Upscaler and AutoUpscaler share: `upscale` on top of their `resample`."""

    def resample(self, picture: Picture, size: tuple[int, int],
                 progress: Progress | None = None) -> Picture:
        raise NotImplementedError

    def upscale(self, image: Image.Image | np.ndarray, *, scale: float | None = None,
                size: tuple[int, int] | None = None,
                progress: Progress | None = None) -> Image.Image | np.ndarray:
        """Resize a PIL image or numpy array by `scale` or to `size` = (width, height).

        Returns the same kind of object: PIL in the same mode (L, LA, RGB, RGBA, I;16, I, F;
        palette, bilevel, CMYK and YCbCr images come back as L, RGB or RGBA), upright as its
        EXIF orientation says; numpy with the same dtype and channel count (uint8, uint16, or
        float in [0, 1]). TypeError or ArgumentError (a ValueError) for bad arguments.
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
        out = self.resample(picture, target, progress)
        if mode is not None:
            return _pil_from_picture(out, mode)
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
        check_tile(tile, chunk)
        # 'auto' becomes bf16 or fp32 here; errors (e.g. fp16 on the CPU) surface early.
        self.device, self.precision = _device_and_precision(device, precision,
                                                            model.spec.decoder)
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
        if not uses_model(rgb.shape[:2], size):
            if progress:
                progress(size[0] * size[1], size[0] * size[1])
            return np.stack([_resize_plane(rgb[..., c], size, Image.Resampling.LANCZOS)
                             for c in range(3)], axis=-1)
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
        out = render(self.model, image, size, tile=self.tile, chunk=self.chunk,
                     device=self.device, precision=self.precision, progress=progress, **region)
        return out.permute(1, 2, 0).numpy()

    def resample(self, picture: Picture, size: tuple[int, int],
                 progress: Progress | None = None) -> Picture:
        """A Picture at `size` (H', W'), keeping its alpha, bit depth and colour profile.

        Running out of memory raises LiifError naming the size and what lowers memory use.
        A downscale is `downscale`'s (no model).
        """
        if not uses_model(picture.size, size):
            return downscale(picture, size, progress)
        try:
            rgb = self.render_rgb(picture.rgb, size, progress)
            alpha = None
            if picture.alpha is not None:
                grows = size[0] > picture.size[0] or size[1] > picture.size[1]
                alpha = _resize_plane(picture.alpha, size, Image.Resampling.BICUBIC if grows
                                      else Image.Resampling.LANCZOS)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise LiifError(f"out of memory rendering {size[1]}x{size[0]} "
                            f"({size[0] * size[1] / 1e6:,.1f} MP) on {self.device.type}: "
                            f"use a smaller tile (now {self.tile}; --tile, or tile= in Python) "
                            f"or chunk (now {self.chunk}; --chunk, chunk=), or a smaller output "
                            "(the CLI's --max-pixels refuses large ones up front)") from None
        return picture.with_pixels(rgb, alpha)


class AutoUpscaler(_Resampler):
    """The bundled models, one picked per image (`--weights auto`): the real-photo model for
    visibly compressed sources (JPEGs up to quality bundled.AUTO_MAX_QUALITY, lossy WebP;
    `Picture.lossy` and `Picture.quality`), the default model for the rest
    (bundled.auto_choice). Numpy arrays count as uncompressed.

    fast: choose between the fast models instead (`--fast`: fast-real and fast).
    Takes Upscaler's options (device, precision, tile, chunk, min_side).
    """

    def __init__(self, *, device: str | torch.device = "auto", precision: str = "auto",
                 fast: bool = False, **options: Any):
        # Check the options now, so that a bad one fails before any image is read; each
        # model loads when the first image that needs it comes (a run of PNGs never reads
        # the real-photo weights).
        check_tile(options.get("tile"), options.get("chunk"))
        device, _ = _device_and_precision(device, precision)
        # The name as given: 'auto' resolves per model (see engine.precision_name).
        self.options = dict(device=device, precision=precision, **options)
        self.upscalers: dict[str, Upscaler] = {}  # name -> loaded model
        self.fast = fast

    def model_for(self, picture: Picture) -> Upscaler:
        """The Upscaler for `picture`: its `name` says which model it is."""
        name = bundled.auto_choice(picture.lossy, picture.quality, self.fast)
        if name not in self.upscalers:
            self.upscalers[name] = Upscaler.from_pretrained(name, **self.options)
        return self.upscalers[name]

    def resample(self, picture: Picture, size: tuple[int, int],
                 progress: Progress | None = None) -> Picture:
        """Upscaler.resample with the model picked for `picture` (none, for a downscale)."""
        if not uses_model(picture.size, size):
            return downscale(picture, size, progress)
        return self.model_for(picture).resample(picture, size, progress)


def downscale(picture: Picture, size: tuple[int, int],
              progress: Progress | None = None) -> Picture:
    """`picture` at a (H', W') `size` no larger along either axis, with a Lanczos filter for
    colour and alpha: what the upscalers do when the model is not needed (sizing.uses_model)."""
    if progress:
        progress(size[0] * size[1], size[0] * size[1])
    rgb = np.stack([_resize_plane(picture.rgb[..., c], size, Image.Resampling.LANCZOS)
                    for c in range(3)], axis=-1)
    alpha = None if picture.alpha is None else _resize_plane(picture.alpha, size,
                                                             Image.Resampling.LANCZOS)
    return picture.with_pixels(rgb, alpha)


def _size_argument(size: object) -> tuple[int, int] | None:
    """`size=` (width, height) as (H, W); TypeError or ArgumentError if it is none."""
    if size is None:
        return None
    expected = "size=(width, height), two whole numbers"
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__"):
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


def _device_and_precision(device: str | torch.device, precision: str,
                          decoder: str = "liif") -> tuple[torch.device, str]:
    """The device and the precision name (auto resolved for the decoder family) an Upscaler
    renders with; a bad name raises LiifError."""
    device = resolve_device(device) if isinstance(device, str) else device
    return device, precision_name(precision, device, decoder)


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
    return picture


def _pil_from_picture(picture: Picture, mode: str) -> Image.Image:
    """The picture as a PIL image in `mode` where that keeps its values (L, LA, RGB, RGBA,
    16-bit 'I;16', 32-bit 'I', float 'F'); other modes (palette 'P', bilevel '1', CMYK,
    YCbCr) as the file writer stores them: L, RGB or RGBA."""
    if mode.startswith("I;16") or mode in ("I", "F"):  # deep gray
        gray = picture.rgb.mean(axis=-1)
        if mode == "F":
            return Image.fromarray(np.clip(gray, 0.0, 1.0).astype(np.float32))
        deep = quantise(gray, 16)
        if mode == "I":
            return Image.fromarray(deep.astype(np.int32))
        # No mode argument: Pillow 13 refuses mode="I;16" here; little-endian uint16 gives I;16.
        return Image.fromarray(deep.astype("<u2"))
    array = _array_like(picture, np.zeros((1, 1, 4 if picture.alpha is not None else 3), np.uint8))
    image = Image.fromarray(array, mode="RGBA" if picture.alpha is not None else "RGB")
    if picture.grayscale:
        image = image.convert("LA" if picture.alpha is not None else "L")
    return image


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
    return values.astype(like.dtype)
