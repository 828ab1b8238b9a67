"""Output sizes: parse what the user asked for and turn it into pixel dimensions.

Internally sizes are (height, width) like tensors; users write WIDTHxHEIGHT like image tools.
"""

from __future__ import annotations

import math
import numbers
import re

from .errors import ArgumentError, LiifError

DEFAULT_MAX_PIXELS = 250_000_000
MAX_SIDE = 2**31 - 1  # no image format liif writes can hold a longer side
FITS = ("contain", "cover", "stretch")
MIN_TILE = 32  # smaller tiles re-encode their halo (~35 pixels each side) over and over


def parse_size(text: str) -> tuple[int, int]:
    """'4000x3000' (width x height) -> (3000, 4000) as (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not match:
        raise LiifError(f"malformed size {text!r}: expected WIDTHxHEIGHT, e.g. 4000x3000")
    sides = [digits.lstrip("0") or "0" for digits in match.groups()]
    if max(len(digits) for digits in sides) > len(str(MAX_SIDE)):  # int() refuses 4,300+
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise LiifError(f"size {shown!r} is too large (no image format holds a side over "
                        f"{MAX_SIDE:,} pixels)")
    width, height = int(sides[0]), int(sides[1])
    if width < 1 or height < 1:
        raise LiifError(f"size {text!r} must be at least 1x1")
    if max(width, height) > MAX_SIDE:
        raise LiifError(f"size {text!r} is too large (no image format holds a side over "
                        f"{MAX_SIDE:,} pixels)")
    return height, width


def round_size(value: float) -> int:
    """A side length: value rounded half up (7 x 1.5 = 10.5 gives 11, as people expect;
    Python's round() would give 10), at least 1; LiifError if no image could be that long.

    A product within 1e-9 of a half counts as the half: 15 x 4.1 is 61.49999999999999 in
    floating point, and people expect 62, as for 61.5."""
    if not math.isfinite(value) or value + 0.5 > MAX_SIDE:
        raise LiifError(f"output side of {value:.4g} pixels is too large "
                        f"(no image format holds more than {MAX_SIDE:,})")
    return max(1, math.floor(round(value, 9) + 0.5))


def check_scale(scale: float) -> float:
    """A usable scale factor: finite and > 0."""
    if not math.isfinite(scale) or scale <= 0:
        raise LiifError(f"scale must be a finite number > 0, got {scale}")
    return scale


def target_size(in_size: tuple[int, int], *, scale: float | None = None,
                size: tuple[int, int] | None = None, width: int | None = None,
                height: int | None = None) -> tuple[int, int]:
    """(H', W') from exactly one of: a scale, a (H, W) size, a width or a height.

    A width or height alone keeps the aspect ratio; sizes are input x scale rounded half up, >= 1.
    """
    given = [v is not None for v in (scale, size, width, height)]
    if sum(given) != 1:
        raise LiifError("give exactly one of --scale, --size, --width, --height")
    h, w = in_size
    if scale is not None:
        check_scale(scale)
        return round_size(h * scale), round_size(w * scale)
    if size is not None:
        return size
    if width is not None:
        if not 1 <= width <= MAX_SIDE:
            raise LiifError(f"--width must be between 1 and {MAX_SIDE:,}, got {width}")
        return round_size(h * width / w), width
    assert height is not None
    if not 1 <= height <= MAX_SIDE:
        raise LiifError(f"--height must be between 1 and {MAX_SIDE:,}, got {height}")
    return height, round_size(w * height / h)


def uses_model(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Whether resampling (H, W) `in_size` to `out_size` goes through the model: only when
    the output is larger along some axis (LIIF is made for upscaling); otherwise a Lanczos
    filter downsamples."""
    return out_size[0] > in_size[0] or out_size[1] > in_size[1]


def fit_size(in_size: tuple[int, int], box: tuple[int, int], fit: str) -> tuple[int, int]:
    """The size to render an image at so it fits `box` (H, W) by `fit`.

    contain: the largest size inside the box keeping aspect; cover: the smallest size that
    fills the box keeping aspect (crop it to the box with `centre_crop_box` afterwards);
    stretch: the box itself.
    """
    if fit not in FITS:
        raise LiifError(f"unknown fit {fit!r}: use one of {', '.join(FITS)}")
    if fit == "stretch":
        return box
    h, w = in_size
    ratios = (box[0] / h, box[1] / w)
    s = min(ratios) if fit == "contain" else max(ratios)
    out = (round_size(h * s), round_size(w * s))
    if fit == "cover":  # rounding must never leave the box uncovered
        out = (max(out[0], box[0]), max(out[1], box[1]))
    else:
        out = (min(out[0], box[0]), min(out[1], box[1]))
    return out


def centre_crop_box(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a box-sized window centred in an image of `size`."""
    top, left = (size[0] - box[0]) // 2, (size[1] - box[1]) // 2
    return top, left, top + box[0], left + box[1]


def check_max_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse outputs above the --max-pixels guard before any work is done."""
    if max_pixels > 0 and size[0] * size[1] > max_pixels:
        raise LiifError(f"output {size[1]}x{size[0]} has {size[0] * size[1]:,} pixels, "
                        f"above --max-pixels {max_pixels:,}; raise --max-pixels to allow it")


def check_tile(tile: int | None, chunk: int | None = None, *, cli: bool = False) -> None:
    """Refuse tile and chunk sizes that cannot work: a negative tile, one so small that
    re-encoding each tile's halo would take most of the time (--tile 1 on a 64x48 image ran
    for 14 minutes), a chunk below 1; ArgumentError (a LiifError and a ValueError), or
    TypeError for what is no whole number. None: the default. Messages name the options
    (`--tile 5`) with `cli`, else the Python API's arguments (`tile=5`)."""
    def named(arg: str, value: int) -> str:
        return f"--{arg} {value}" if cli else f"{arg}={value}"

    for arg, value in (("tile", tile), ("chunk", chunk)):
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, numbers.Integral)):
            raise TypeError(f"{arg} must be a whole number or None, got {value!r}")
    if tile is not None and tile < 0:
        raise ArgumentError(f"{named('tile', tile)} is negative: use 0 (one piece) or at "
                            f"least {MIN_TILE}")
    if tile is not None and 0 < tile < MIN_TILE:
        raise ArgumentError(f"{named('tile', tile)} is too small: each tile also encodes about "
                            f"35 pixels around it, so use 0 (one piece) or at least {MIN_TILE}")
    if chunk is not None and chunk < 1:
        raise ArgumentError(f"{named('chunk', chunk)} is too small: use at least 1")
