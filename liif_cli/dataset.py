"""The paper's training data: images decoded once into memory, and random crops from them.

Each sample draws a scale s ~ U[scale_min, scale_max], cuts an HR crop of round(crop * s)
pixels at a random position, applies a random horizontal flip, vertical flip and transpose,
and downscales it to crop x crop with PIL's antialiased bicubic (Image.resize(BICUBIC) on
uint8). The targets are `samples` random HR pixels of the crop: their centres (make_coords
of the crop shape), their cell (2 / crop_h, 2 / crop_w) and their RGB. Inputs and targets are
normalised as (x - 0.5) / 0.5, like the official checkpoints. All randomness comes from the
torch.Generator the caller passes, so a run that saves its state resumes bit-for-bit.

With shrink_max > 1, each sample also draws a shrink factor k in [1, shrink_max], right after
its scale: the HR crop is cut round(size * k) pixels wide and shrunk to its size with the same
antialiased bicubic, so the model learns from more detail per pixel than the photos hold.

With a DegradationConfig (liif train --degradation real), each sample also draws a seed,
after its other choices, and its LR crop goes through liif_cli.degrade's random chain from
that seed; the HR targets stay clean. Without one the sampler draws exactly the numbers it
always has, so older runs resume bit-for-bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .degrade import degrade
from .degrade_settings import DegradationConfig
from .errors import LiifError
from .images import pil_pixels
from .model import make_cells, make_coords

# --------------------------------------------------------------------------- images


def _image_files(path: Path) -> tuple[list[Path], int]:
    """The files of a data folder (or the one file given), hidden ones aside, and how many
    sub-folders it has (not read: a folder is one flat set of images)."""
    if os.path.isfile(path):
        return [path], 0
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    return sorted(p for p in entries if p.is_file()), sum(p.is_dir() for p in entries)


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8/uint16 pixels as pil_pixels gives them (C: gray, gray+alpha, RGB or
    RGBA) as (H, W, 3) uint8 RGB: 16-bit samples rounded to 8 bits (Pillow's own convert
    would clip them at 255), gray repeated, alpha dropped (the colour under it is kept, as
    upscaling keeps it)."""
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    colour = pixels[:, :, :3] if pixels.shape[2] >= 3 else pixels[:, :, :1].repeat(3, axis=2)
    return np.ascontiguousarray(colour)


def load_images(paths: list[str] | list[Path], min_size: int = 1,
                what: str = "training") -> tuple[list[np.ndarray], list[str], list[str]]:
    """Decode every image under `paths` once: (uint8 HxWx3 arrays, names, warnings).

    Non-image files and images smaller than `min_size` on either side are skipped with a
    warning; LiifError if a path is missing or nothing usable is left.
    """
    images: list[np.ndarray] = []
    names: list[str] = []
    warnings: list[str] = []
    not_images: list[str] = []
    too_small: list[str] = []
    too_large: list[str] = []
    folders = 0
    seen_any = False
    for raw in paths:
        path = Path(raw).expanduser()
        if not os.path.exists(path):  # os.path: never raises (e.g. ENAMETOOLONG)
            raise LiifError(f"{what} data not found: {path}")
        if not (os.path.isdir(path) or os.path.isfile(path)):
            raise LiifError(f"{what} data is neither a folder nor a file: {path}")
        try:
            files, subfolders = _image_files(path)
            folders += subfolders
        except OSError as exc:
            raise LiifError(f"cannot read {what} folder {path}: {exc.strerror or exc}") from None
        for file in files:
            seen_any = True
            try:
                with Image.open(file) as img:
                    img.load()
                    array = _rgb8(pil_pixels(img, file.name))
            except Image.DecompressionBombError:  # over Pillow's limit, about 179 MP
                too_large.append(file.name)
                continue
            except (OSError, ValueError):
                not_images.append(file.name)
                continue
            except LiifError as exc:  # an image of a kind liif does not read (e.g. HDR)
                not_images.append(f"{file.name} ({str(exc).removeprefix(file.name + ': ')})")
                continue
            h, w = array.shape[:2]
            if min(h, w) < min_size:
                too_small.append(f"{file.name} ({w}x{h})")
                continue
            images.append(np.ascontiguousarray(array))
            names.append(str(file))
    where = ", ".join(str(p) for p in paths)
    if not_images:
        warnings.append(f"skipped {len(not_images)} non-image file(s) in the {what} data: "
                        + _short_list(not_images))
    if too_small:
        warnings.append(f"skipped {len(too_small)} {what} image(s) smaller than {min_size} px "
                        f"a side: " + _short_list(too_small))
    if too_large:
        warnings.append(f"skipped {len(too_large)} {what} image(s) too large to read (over "
                        f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP; cut them into "
                        "parts): " + _short_list(too_large))
    if folders:
        warnings.append(f"skipped {folders} sub-folder(s) of the {what} data (only the images "
                        "directly in each folder given are read; give a sub-folder as a "
                        "folder of its own)")
    if not images:
        if not seen_any:
            raise LiifError(f"no files in the {what} data: {where}")
        if too_small:
            raise LiifError(f"no usable {what} images in {where}: all images are smaller "
                            f"than {min_size} px a side (the largest crop)")
        raise LiifError(f"no images in the {what} data: {where} "
                        f"({len(not_images)} file(s), none readable as an image)")
    return images, names, warnings


def _short_list(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def to_unit(array: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float (3, H, W) in [0, 1]."""
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> normalised float (3, H, W) in [-1, 1], as the model takes it."""
    return to_unit(array).sub_(0.5).div_(0.5)


def bicubic_resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bicubic resize of a uint8 HxWx3 array to (h, w): PIL BICUBIC, as in the paper."""
    h, w = size
    return np.asarray(Image.fromarray(array).resize((w, h), Image.BICUBIC), dtype=np.uint8)


# --------------------------------------------------------------------------- dataset


@lru_cache(maxsize=512)
def _coords(h: int, w: int) -> torch.Tensor:
    return make_coords((h, w))


@dataclass
class Sample:
    """One training crop: LR input, query coordinates/cells and targets (all normalised)."""

    inp: torch.Tensor  # (3, crop, crop)
    coord: torch.Tensor  # (Q, 2)
    cell: torch.Tensor  # (Q, 2)
    gt: torch.Tensor  # (Q, 3)
    hr: np.ndarray  # the augmented uint8 HR crop (for tests and debugging)
    index: torch.Tensor  # (Q,) flat indices of the queried HR pixels


@dataclass(frozen=True)
class CropDraw:
    """The random choices behind one Sample: which image, crop size and position, flips,
    and which HR pixels are queried."""

    image: int
    size: int  # HR crop side: round(crop * scale)
    y0: int
    x0: int
    hflip: bool
    vflip: bool
    transpose: bool
    index: torch.Tensor  # (Q,) flat indices of the queried HR pixels
    degrade_seed: int | None = None  # seed of the LR degradation chain; None: clean LR
    source: int | None = None  # side of the photo's region shrunk to `size`; None: `size`


# Per-sample degradation seeds are drawn below this bound (any torch.Generator seed works).
SEED_BOUND = 2 ** 62


class CropSampler:
    """The paper's training samples, drawn from in-memory images with a given generator."""

    def __init__(self, images: list[np.ndarray], crop: int = 48, samples: int = 2304,
                 scale_min: float = 1.0, scale_max: float = 4.0,
                 degradation: DegradationConfig | None = None, shrink_max: float = 1.0):
        self.images = images
        self.shrink_max = shrink_max
        self.crop = crop
        self.samples = samples
        self.scale_min = scale_min
        self.scale_max = scale_max
        self.degradation = degradation

    def _randint(self, high: int, g: torch.Generator) -> int:
        return int(torch.randint(high, (1,), generator=g))

    def draw(self, g: torch.Generator) -> CropDraw:
        """All the random choices of one sample (the generator's only use), nothing built."""
        image = self._randint(len(self.images), g)
        u = float(torch.rand(1, generator=g, dtype=torch.float64))
        s = self.scale_min + (self.scale_max - self.scale_min) * u
        size = round(self.crop * s)
        h, w = self.images[image].shape[:2]
        source = size
        if self.shrink_max > 1:  # only then: other runs draw what they always drew
            k = 1 + (self.shrink_max - 1) * float(torch.rand(1, generator=g, dtype=torch.float64))
            source = min(round(size * k), h, w)
        y0 = self._randint(h - source + 1, g)
        x0 = self._randint(w - source + 1, g)
        hflip, vflip, transpose = (torch.rand(3, generator=g) < 0.5).tolist()
        index = torch.randperm(size * size, generator=g)[: self.samples]
        seed = None
        if self.degradation is not None:  # only then: clean runs draw what they always drew
            seed = int(torch.randint(SEED_BOUND, (1,), generator=g))
        return CropDraw(image, size, y0, x0, hflip, vflip, transpose, index, seed,
                        source if source != size else None)

    def build(self, d: CropDraw) -> Sample:
        """The sample a draw describes: crop (shrunk, if the draw says so), flips, bicubic
        downscale (then the degradation chain, if the draw has a seed for it), queried pixels."""
        size = d.size
        source = d.source or size
        hr = self.images[d.image][d.y0:d.y0 + source, d.x0:d.x0 + source]
        if source != size:
            hr = bicubic_resize(np.ascontiguousarray(hr), (size, size))
        if d.hflip:
            hr = hr[:, ::-1]
        if d.vflip:
            hr = hr[::-1]
        if d.transpose:
            hr = hr.transpose(1, 0, 2)
        hr = np.ascontiguousarray(hr)
        lr = bicubic_resize(hr, (self.crop, self.crop))
        if self.degradation is not None and d.degrade_seed is not None:
            lr = degrade(lr, self.degradation, d.degrade_seed)
        coord = _coords(size, size).index_select(0, d.index)
        cell = make_cells((size, size), self.samples)
        gt = to_tensor(hr).reshape(3, -1).t().index_select(0, d.index)
        return Sample(to_tensor(lr), coord, cell, gt, hr, d.index)

    def sample(self, g: torch.Generator) -> Sample:
        return self.build(self.draw(g))

    def batch(self, batch_size: int, g: torch.Generator,
              part: tuple[int, int] = (0, 1)) -> dict[str, torch.Tensor]:
        """A batch: inp (B, 3, crop, crop), coord (B, Q, 2), cell (B, Q, 2), gt (B, Q, 3).

        part = (rank, world): draw all `batch_size` samples (advancing `g` exactly as one
        process does) but build and return only samples rank, rank + world, ...
        """
        rank, world = part
        draws = [self.draw(g) for _ in range(batch_size)]
        items = [self.build(d) for d in draws[rank::world]]
        return {key: torch.stack([getattr(it, key) for it in items])
                for key in ("inp", "coord", "cell", "gt")}
