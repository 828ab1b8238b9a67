"""Output sizes: parse what the user asked for and turn it into pixel dimensions.

Internally sizes are (height, width) like tensors; users write WIDTHxHEIGHT like image tools.
"""

from __future__ import annotations

import math
import re

from .errors import LiifError

DEFAULT_MAX_PIXELS = 250_000_000
MAX_SIDE = 2**31 - 1  # no image format liif writes can hold a longer side
FITS = ("contain", "cover", "stretch")


def parse_size(text: str) -> tuple[int, int]:
    """'4000x3000' (width x height) -> (3000, 4000) as (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not match:
        raise LiifError(f"malformed size {text!r}: expected WIDTHxHEIGHT, e.g. 4000x3000")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 1 or height < 1:
        raise LiifError(f"size {text!r} must be at least 1x1")
    if max(width, height) > MAX_SIDE:
        raise LiifError(f"size {text!r} is too large (no image format holds a side over "
                        f"{MAX_SIDE:,} pixels)")
    return height, width


def round_size(value: float) -> int:
    """A side length: value rounded half up (7 x 1.5 = 10.5 gives 11, as people expect;
    Python's round() would give 10), at least 1; LiifError if no image could be that long."""
    if not math.isfinite(value) or value + 0.5 > MAX_SIDE:
        raise LiifError(f"output side of {value:.4g} pixels is too large "
                        f"(no image format holds more than {MAX_SIDE:,})")
    return max(1, math.floor(value + 0.5))


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
