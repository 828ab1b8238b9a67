"""Animated GIF, animated WebP, APNG and multi-page TIFF: every frame (page) upscaled.

Each frame goes through the still-image path (`resample` on its Picture, alpha included).
Pillow decodes frames one at a time (seek) and gives them composited onto the canvas (the
source's disposal and blending already applied), so every output frame is a full frame;
its duration, the loop count and (GIF) the disposal method are carried over. Pillow's
writers take the frames after the first as a list, so the output frames are held in memory
(8-bit, as the formats store them); the source frames are not. Pages of a multi-page TIFF are
read and written at 8 bits per channel, but 16-bit gray pages stay 16-bit. Nothing here
prints.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import LiifError, Warn, one_line
from .files import create_temp, move_into_place
from .images import (
    _DECODE_ERRORS,
    _EXIF_FORMATS,
    _ICC_FORMATS,
    Picture,
    _output_exif,
    _quiet_pillow,
    compression,
    icc_fits,
    pil_pixels,
    quantise,
)
from .sizing import MAX_SIDE, centre_crop_box, check_max_pixels

# Output suffix -> Pillow format of an animation.
_WRITERS = {".gif": "GIF", ".webp": "WEBP", ".png": "PNG", ".apng": "PNG", ".tif": "TIFF",
            ".tiff": "TIFF"}
WRITE_SUFFIXES = frozenset(_WRITERS)
_NAMES = {"GIF": "GIF", "WEBP": "WebP", "PNG": "APNG", "TIFF": "TIFF"}
# The longest side each format holds (GIF's 16-bit sizes, WebP's 14-bit ones), and the most
# bytes of pixels a classic TIFF file (32-bit offsets, as Pillow writes them) can hold.
_MAX_SIDE_OF = {"GIF": 65_535, "WEBP": 16_383, "PNG": MAX_SIDE, "TIFF": 2**32 - 1}
_MAX_TIFF_BYTES = 2**32 - 1
READ_SUFFIXES = frozenset({".gif", ".webp", ".png", ".apng", ".tif", ".tiff"})
Resample = Callable[[Picture, tuple[int, int]], Picture]
SizeRule = Callable[[tuple[int, int]], tuple[int, int]]


def frame_count(path: str | Path) -> int:
    """How many frames (pages) the image file at `path` holds; 1 for a still, an MPO (a
    camera JPEG with previews) or anything Pillow cannot open (read_image then says why)."""
    if Path(path).suffix.lower() not in READ_SUFFIXES:
        return 1
    try:
        with _quiet_pillow(), Image.open(path) as image:
            return 1 if image.format == "MPO" else int(getattr(image, "n_frames", 1))
    except Exception:
        return 1


def is_animated(path: str | Path) -> bool:
    """Whether `path` is an animation or multi-page file (more than one frame)."""
    return frame_count(path) > 1


def check_animation_output(path: Path, *, overwrite: bool = False,
                           size: tuple[int, int] | None = None, frames: int = 1) -> None:
    """LiifError if an animation cannot be written to `path`: a still-only format (JPEG,
    BMP), frames of (H, W) `size` too large for the format (a TIFF of `frames` 8-bit gray
    pages over 4 GiB), an existing file (without `overwrite`), a missing or read-only folder."""
    if path.suffix.lower() not in _WRITERS:
        raise LiifError(f"{path}: {path.suffix or 'no suffix'} holds one picture only; write "
                        f"an animation as {', '.join(sorted(_WRITERS))}")
    if size is not None:
        _check_frame_size(path, size, frames)
    if os.path.isdir(path):
        raise LiifError(f"{path}: is a folder; give an output file name")
    if not os.path.isdir(path.parent):
        raise LiifError(f"{path}: output folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise LiifError(f"{path}: no permission to write in folder {path.parent}")
    if os.path.lexists(path) and not overwrite:
        raise LiifError(f"{path}: already exists; use --overwrite to replace it")


def _check_frame_size(path: Path, size: tuple[int, int], frames: int) -> None:
    """LiifError if `frames` frames of (H, W) `size` are too large for `path`'s format (see
    check_animation_output)."""
    fmt = _WRITERS[path.suffix.lower()]
    if max(size) > _MAX_SIDE_OF[fmt]:
        raise LiifError(f"{path}: {size[1]}x{size[0]} frames are too large for {fmt}, which "
                        f"holds at most {_MAX_SIDE_OF[fmt]:,} pixels a side; ask for a "
                        "smaller size" + ("" if fmt in ("PNG", "TIFF") else
                                          " or write an .apng or .tif instead"))
    if fmt == "TIFF" and size[0] * size[1] * frames > _MAX_TIFF_BYTES:
        raise LiifError(f"{path}: {frames} pages of {size[1]}x{size[0]} are too large for a "
                        "TIFF file (liif writes classic TIFF, at most 4 GiB); ask for a "
                        "smaller size")


def upscale_animation(resample: Resample, src: str | Path, dst: str | Path,
                      size_rule: SizeRule, *, overwrite: bool = False, max_pixels: int = 0,
                      quality: int = 95, crop_to: tuple[int, int] | None = None,
                      strip_metadata: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Upscale every frame of the animation or multi-page file `src` into `dst` (format
    from its suffix), atomically; returns notes (a `Warn` for a file that looks cut short).
    The colour profile is kept where the format holds one, the EXIF unless
    `strip_metadata`. Problems are one-line LiifErrors."""
    src, dst = Path(src), Path(dst)
    check_animation_output(dst, overwrite=overwrite)
    fmt = _WRITERS[dst.suffix.lower()]
    frames: list[Image.Image] = []
    durations: list[int] = []
    with _quiet_pillow():
        with _damage_as_error(src):
            opened = Image.open(src)
        with opened as image:
            with _damage_as_error(src):
                total = int(getattr(image, "n_frames", 1))  # Pillow may seek every frame
            info = dict(image.info)
            source_format = image.format
            # An APNG's default image is shown only where animation is not supported: an
            # APNG output keeps it hidden, the other formats have no such frame.
            hidden_first = bool(info.get("default_image")) and total > 1
            keep_hidden = hidden_first and fmt == "PNG"
            first = int(hidden_first and not keep_hidden)  # the first frame rendered
            sizes = _frame_sizes(image, total, src)
            out_sizes = [size_rule(size) for size in sizes]
            for size in out_sizes:
                check_max_pixels(size, max_pixels)
            if crop_to is None and fmt != "TIFF" and len(set(out_sizes[hidden_first:])) > 1:
                raise LiifError(f"{src}: its pages differ in size, which {fmt} cannot hold "
                                "(every frame of an animation has one size); write a .tif")
            for size in set(out_sizes):  # before any frame is rendered
                _check_frame_size(dst, crop_to or size, total)
            lossy, quality_in = compression(image)
            for index in range(first, total):
                picture = Picture.from_array(_frame_pixels(image, index, src))
                if picture.size != sizes[index]:  # Pillow widens the canvas for a stray frame
                    raise LiifError(f"{src}: frame {index + 1} is {picture.size[1]}x"
                                    f"{picture.size[0]}, not the {sizes[index][1]}x"
                                    f"{sizes[index][0]} of the animation (a damaged file?)")
                picture.lossy, picture.quality = lossy, quality_in
                size = out_sizes[index]
                out = resample(picture, size)
                if crop_to is not None and tuple(crop_to) != tuple(size):
                    top, left, bottom, right = centre_crop_box(size, crop_to)
                    alpha = None if out.alpha is None else out.alpha[top:bottom, left:right]
                    out = out.with_pixels(out.rgb[top:bottom, left:right], alpha)
                frames.append(_pil_frame(out, fmt))
                durations.append(int(image.info.get("duration", 0) or 0))  # none: no delay
                if progress:
                    progress(index + 1 - first, total - first)
    notes = [f"{src}: {total - hidden_first} {'pages' if fmt == 'TIFF' else 'frames'} upscaled"]
    if keep_hidden:
        notes[0] += " (and its hidden default image, kept hidden)"
    elif hidden_first:
        notes[0] += f" (its hidden default image left out: {_NAMES[fmt]} has none)"
    options = _save_options(fmt, frames, durations, info, source_format, lossy=lossy,
                            quality=quality, hidden_first=keep_hidden)
    notes += _metadata_options(options, fmt, frames, info, src, strip_metadata)
    merged = _merged_frames(fmt, frames[keep_hidden:])
    if merged:
        notes.append(f"{dst}: {merged} frame(s) identical to the one before stored with it, "
                     f"its duration lengthened ({_NAMES[fmt]} keeps a still moment so); it "
                     "plays the same")
    cut = _cut_short(src, source_format)
    if cut:
        notes.append(cut)
    fd, temp = create_temp(dst)
    try:
        os.close(fd)
        frames[0].save(temp, format=fmt, **options)  # by name: TIFF's writer reads back
        with open(temp, "rb+") as file:
            os.fsync(file.fileno())
        move_into_place(temp, dst, overwrite)
    except LiifError:
        raise
    except (OSError, ValueError, ArithmeticError, RuntimeError, struct.error) as exc:
        raise LiifError(f"{dst}: could not write the animation ({one_line(exc)})") from None
    finally:
        temp.unlink(missing_ok=True)
    return notes


def _frame_sizes(image: Image.Image, total: int, src: Path) -> list[tuple[int, int]]:
    """The (H, W) of each frame: the canvas for GIF, WebP and APNG (Pillow composites their
    frames onto it), each page's own for a TIFF (read from its header, not decoded)."""
    if image.format != "TIFF":
        return [(image.height, image.width)] * total
    sizes = []
    with _damage_as_error(src):
        for index in range(total):
            image.seek(index)
            sizes.append((image.height, image.width))
        image.seek(0)
    return sizes


def _save_options(fmt: str, frames: list[Image.Image], durations: list[int], info: dict,
                  source_format: str | None, *, lossy: bool, quality: int,
                  hidden_first: bool) -> dict[str, object]:
    """Pillow's save options for `frames` as a `fmt` animation: durations, the loop count
    and how each frame replaces the last (every frame is a full one)."""
    options: dict[str, object] = {"save_all": True, "append_images": frames[1:]}
    if fmt in ("GIF", "WEBP", "PNG"):
        if hidden_first:  # Pillow times the animation frames only, not the default image
            durations = durations[1:]
        options["duration"] = _gif_delays(durations) if fmt == "GIF" else durations
        loop = _loop_count(info, source_format, fmt)
        if loop is not None:
            options["loop"] = loop
    transparent = any(frame.mode == "RGBA" for frame in frames)
    if fmt == "GIF":
        # Full frames: each drawn over the last (1), or (2) cleared first where transparent
        # pixels must show through; the source's own methods were for its partial frames.
        options["disposal"] = 2 if transparent else 1
    elif fmt == "WEBP":
        # Pillow's lossy animated WebP drops the alpha channel: transparent ones go lossless.
        options.update(quality=quality, lossless=not lossy or transparent)
    elif fmt == "PNG":
        options.update(disposal=0, blend=0, default_image=hidden_first)  # each replaces the last
    elif fmt == "TIFF":
        options["compression"] = "tiff_deflate"
    return options


def _gif_delays(durations: list[int]) -> list[int]:
    """Frame durations in milliseconds made whole hundredths of a second, as GIF stores them
    (Pillow would cut each down: 33 ms frames would play 10% fast), rounded so that every
    frame starts at its own time to the nearest hundredth."""
    starts = [0]
    for duration in durations:
        starts.append(starts[-1] + duration)
    marks = [10 * round(start / 10) for start in starts]
    return [end - begin for begin, end in zip(marks, marks[1:], strict=False)]


def _loop_count(info: dict, source_format: str | None, fmt: str) -> int | None:
    """The loop count to write (None: write none). Counts are carried as they are (0: for
    ever), but "play once" keeps its meaning across formats: a GIF plays once when it has no
    loop count at all, a WebP or APNG when its count is 1. A multi-page TIFF loops for ever."""
    if source_format == "GIF":
        once = "loop" not in info
    elif source_format in ("WEBP", "PNG"):
        once = info.get("loop") == 1
    else:
        once = False
    if once:
        return None if fmt == "GIF" else 1
    return int(info.get("loop", 0) or 0)


def _metadata_options(options: dict[str, object], fmt: str, frames: list[Image.Image],
                      info: dict, src: Path, strip_metadata: bool) -> list[str]:
    """Add the source's colour profile and EXIF to `options` where `fmt` holds them; notes
    for what is dropped."""
    lost = []
    profile = info.get("icc_profile")
    if profile:
        if fmt in _ICC_FORMATS and icc_fits(profile, len(frames[0].getbands())):
            options["icc_profile"] = profile
        else:
            lost.append("colour profile")
    exif = info.get("exif")
    if exif and not strip_metadata:
        if fmt in _EXIF_FORMATS:  # its pixel-size tags made the output's
            width, height = frames[0].size
            options["exif"] = _output_exif(exif, fmt, (height, width)) or exif
        else:
            lost.append("EXIF (camera, date, place)")
    if not lost:
        return []
    return [f"{src}: its {' and '.join(lost)} dropped ({_NAMES[fmt]} animations cannot hold "
            f"{'them' if len(lost) > 1 else 'it'} here)"]


def _merged_frames(fmt: str, frames: list[Image.Image]) -> int:
    """How many frames the `fmt` writer folds into the frame before (identical pixels): GIF,
    WebP and APNG writers store a run of them once, with the durations summed."""
    if fmt == "TIFF":
        return 0
    return sum(a.mode == b.mode and a.tobytes() == b.tobytes()
               for a, b in zip(frames, frames[1:], strict=False))


def _cut_short(src: Path, source_format: str | None) -> str | None:
    """A warning when the GIF `src` lacks its end marker (a trailer byte, 0x3B): a file cut
    between two frames reads as a shorter animation, with no decoding error."""
    if source_format != "GIF":
        return None
    try:
        with open(src, "rb") as file:
            file.seek(max(0, os.path.getsize(src) - 4096))
            tail = file.read().rstrip(b"\0")
    except OSError:
        return None
    if tail.endswith(b"\x3b"):
        return None
    return Warn(f"{src}: the file ends without GIF's end marker; it looks cut short, and the "
                "output has only the frames it holds")


def _frame_pixels(image: Image.Image, index: int, src: Path) -> np.ndarray:
    """Frame `index` of the open animation `image` as pil_pixels gives it; LiifError if the
    file is damaged there."""
    with _damage_as_error(src):
        image.seek(index)
        image.load()
        return pil_pixels(image, str(src))


@contextmanager
def _damage_as_error(src: Path) -> Iterator[None]:
    """Turn what Pillow raises on a damaged file (decoding `src`) into one LiifError."""
    try:
        yield
    except LiifError:
        raise
    except _DECODE_ERRORS as exc:
        raise LiifError(f"{src}: damaged or unreadable image ({one_line(exc)})") from None


def _pil_frame(picture: Picture, fmt: str) -> Image.Image:
    """A PIL frame of `picture` for a `fmt` animation: RGBA when transparent (GIF: each pixel
    fully transparent or opaque, as GIF stores it), else RGB (L for gray); 8-bit, but 16-bit
    gray stays 16-bit in a TIFF."""
    if (fmt == "TIFF" and picture.grayscale and picture.bit_depth == 16
            and (picture.alpha is None or float(picture.alpha.min()) >= 1)):
        return Image.fromarray(quantise(picture.rgb[:, :, 0], 16))  # mode I;16
    rgb = quantise(picture.rgb, 8)
    if picture.alpha is not None and float(picture.alpha.min()) < 1:
        alpha = picture.alpha
        if fmt == "GIF":
            alpha = (alpha >= 0.5).astype(np.float32)
        return Image.fromarray(np.dstack([rgb, quantise(alpha, 8)]), mode="RGBA")
    image = Image.fromarray(rgb, mode="RGB")
    return image.convert("L") if picture.grayscale and fmt != "WEBP" else image
