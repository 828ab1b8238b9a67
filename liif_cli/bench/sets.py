"""The benchmark sets on disk: where they are, their HR images and LR inputs, and the checked
plan of a quality benchmark. No torch here, so a wrong data folder or a missing LR file
answers at once (importing torch takes seconds). liif_cli.bench.quality scores the plan.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..degrade_settings import DegradeSpec, parse_spec
from ..errors import LiifError
from ..sizing import round_size
from .options import check_save_folder, format_scale, unique_scales

DATA_ENV = "LIIF_DATA"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm"})
LR_FILE_SOURCE = "file"
LR_PIL_SOURCE = "pil-bicubic"
# The smallest side left to score after shaving: the SSIM window (metrics.SSIM_WINDOW).
MIN_SCORED_SIDE = 11


def shave_for_scale(scale: float) -> int:
    """Border pixels excluded from scoring at `scale`: the scale itself, rounded up.

    Integer scales give the usual `shave = scale` of benchmark tables; a fractional scale
    such as 2.5 shaves 3 pixels (at least one whole low-resolution pixel's worth).
    """
    return int(math.ceil(scale - 1e-9))


# --------------------------------------------------------------------------- data discovery


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> Path:
    """The benchmark folder: `data_root`, else $LIIF_DATA; LiifError if neither is a folder."""
    if data_root is None or str(data_root) == "":
        env = os.environ.get(DATA_ENV)
        if not env:
            raise LiifError(f"no benchmark data: pass --data-root DIR or set {DATA_ENV}")
        data_root = env
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise LiifError(f"benchmark data folder not found: {root}")
    return root


def available_sets(root: Path) -> list[str]:
    """Names of the folders under `root` (or `root/bench`) that hold an HR folder."""
    names = set()
    for base in (root, root / "bench"):
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if (p / "HR").is_dir())
    return sorted(names, key=str.lower)


def find_set(root: Path, name: str) -> Path:
    """The folder of set `name` under `root` or `root/bench` (case-insensitive if unique)."""
    if not name or any(sep in name for sep in ("/", "\\")) or name in (".", ".."):
        raise LiifError(f"bad set name {name!r}: give a folder name such as Set5")
    for base in (root, root / "bench"):
        exact = base / name
        if exact.is_dir():
            if not (exact / "HR").is_dir():
                raise LiifError(f"set {name}: no HR folder in {exact}")
            return exact
    matches = [base / entry.name for base in (root, root / "bench") if base.is_dir()
               for entry in base.iterdir()
               if entry.is_dir() and entry.name.lower() == name.lower()]
    if len(matches) == 1:
        if not (matches[0] / "HR").is_dir():
            raise LiifError(f"set {name}: no HR folder in {matches[0]}")
        return matches[0]
    known = ", ".join(available_sets(root)) or "none"
    raise LiifError(f"unknown benchmark set {name!r} in {root} (available: {known})")


def list_hr_images(set_dir: Path) -> tuple[list[Path], list[str]]:
    """The HR images of a set (sorted by name) and the names of the other entries skipped.

    An image is a file with an extension in IMAGE_EXTENSIONS; hidden files are ignored, and
    anything else (notes, sub-folders) is skipped and named so the caller can warn. LiifError
    if HR/ holds no image at all.
    """
    hr_dir = set_dir / "HR"
    if not hr_dir.is_dir():
        raise LiifError(f"set {set_dir.name}: no HR folder in {set_dir}")
    images, skipped = [], []
    for path in sorted(hr_dir.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):  # hidden files (.DS_Store, ._name): silently ignored
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(path)
        else:
            skipped.append(path.name)
    if not images:
        raise LiifError(f"set {set_dir.name}: {hr_dir} holds no images "
                        f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images, skipped


def lr_folder(set_dir: Path, scale: float) -> Path | None:
    """SET/LR_bicubic/X<s> when it exists and s is an integer, else None."""
    if not float(scale).is_integer():
        return None
    folder = set_dir / "LR_bicubic" / f"X{int(scale)}"
    return folder if folder.is_dir() else None


def find_lr_file(set_dir: Path, stem: str, scale: float) -> Path | None:
    """The ready-made LR file for an HR image at `scale`, or None to make one from the HR.

    LiifError when the scale's LR folder exists but lacks this image: a set is never scored
    on a mix of ready-made and home-made LR inputs.
    """
    folder = lr_folder(set_dir, scale)
    if folder is None:
        return None
    name = f"{stem}x{int(scale)}"
    for path in sorted(folder.iterdir()):
        if path.stem == name and path.suffix.lower() in IMAGE_EXTENSIONS:
            return path
    raise LiifError(f"set {set_dir.name}: {folder} has no {name}.png for HR image {stem!r} "
                    "(add it, or move the folder away to make LR inputs from the HR images)")


def load_rgb_u8(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (greyscale and palette images are expanded)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                arr = np.asarray(im, dtype=np.float64) / 257.0
                grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if im.mode in ("I", "F"):
                raise LiifError(f"{path}: {im.mode}-mode images are not supported (use 8-bit)")
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except LiifError:
        raise
    except Exception as exc:
        raise LiifError(f"cannot read image {path}: {exc}") from None


def lr_size_for(hr_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(floor(H / s), floor(W / s)): the LR size made from an (H, W) HR image."""
    return tuple(int(math.floor(n / scale + 1e-9)) for n in hr_size)  # type: ignore[return-value]


def hr_crop_for(lr_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """round(lr * s) per side: the HR size the model must reproduce from an LR image."""
    return tuple(round_size(n * scale) for n in lr_size)  # type: ignore[return-value]


def pil_resize(img: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """Resize (H, W, 3) uint8 to (h, w) with PIL ('bicubic' or 'lanczos'), on uint8."""
    resample = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}[method]
    out = Image.fromarray(img).resize((size[1], size[0]), resample)
    return np.array(out, dtype=np.uint8)


@dataclass
class BenchPair:
    """One HR image (cropped to fit the scale) and its LR input, both (H, W, 3) uint8."""

    stem: str
    hr: np.ndarray
    lr: np.ndarray
    lr_source: str  # LR_FILE_SOURCE or LR_PIL_SOURCE
    lr_path: Path | None


def make_pair(hr_path: Path, set_dir: Path, scale: float) -> BenchPair:
    """Load an HR image and find or make its LR input at `scale` (see the module doc)."""
    hr = load_rgb_u8(hr_path)
    lr_size, crop, lr_path = check_pair(hr_path, (hr.shape[0], hr.shape[1]), set_dir, scale)
    hr = np.ascontiguousarray(hr[: crop[0], : crop[1]])
    if lr_path is None:
        return BenchPair(hr_path.stem, hr, pil_resize(hr, lr_size, "bicubic"), LR_PIL_SOURCE,
                         None)
    return BenchPair(hr_path.stem, hr, load_rgb_u8(lr_path), LR_FILE_SOURCE, lr_path)


def check_pair(hr_path: Path, hr_size: tuple[int, int], set_dir: Path,
               scale: float) -> tuple[tuple[int, int], tuple[int, int], Path | None]:
    """For an (H, W) HR image at `scale`: the LR size, the HR crop and the ready-made LR file
    (None: made from the HR). LiifError if the image is too small to score or its LR file
    is missing, unreadable or of the wrong size (the file is decoded once)."""
    if scale <= 1:
        raise LiifError(f"scale must be greater than 1 for the quality benchmark, got "
                        f"{format_scale(scale)}")
    lr_size = lr_size_for(hr_size, scale)
    crop = hr_crop_for(lr_size, scale)
    border = shave_for_scale(scale)
    if min(lr_size) < 1 or min(crop) - 2 * border < MIN_SCORED_SIDE:
        raise LiifError(f"set {set_dir.name}: {hr_path.name} ({hr_size[1]}x{hr_size[0]}) is too "
                        f"small to score at x{format_scale(scale)}")
    lr_path = find_lr_file(set_dir, hr_path.stem, scale)
    if lr_path is not None:
        try:
            with Image.open(lr_path) as im:
                width, height = im.size
                im.load()  # a truncated file fails here, before the first render
        except Exception as exc:
            raise LiifError(f"cannot read image {lr_path}: {exc}") from None
        if (height, width) != lr_size:
            raise LiifError(f"{lr_path}: LR image is {width}x{height}, expected "
                            f"{lr_size[1]}x{lr_size[0]} for the {hr_size[1]}x{hr_size[0]} HR "
                            f"image at x{format_scale(scale)}")
    return lr_size, crop, lr_path


def save_target(save_dir: Path, set_name: str, scale: float, stem: str,
                degrade: DegradeSpec | None = None) -> Path:
    """Where --save-images puts the model's output for one image and scale: SET/x4/STEM.png,
    or SET/x4-jpeg75/STEM.png for degraded inputs (`--degrade jpeg:75`), so that a clean and
    a degraded run never write the same files."""
    folder = f"x{format_scale(scale)}"
    if degrade is not None:
        folder += "-" + str(degrade).replace(":", "").replace("+", "-")
    return save_dir / set_name / folder / f"{stem}.png"


@dataclass
class QualityPlan:
    """A quality benchmark, checked before anything renders: the data folder, each set's
    name, folder and HR images, the scales, the LR degradation, where outputs are saved."""

    root: Path
    sets: list[tuple[str, Path, list[Path]]]
    scales: list[float]
    degrade: DegradeSpec | None = None
    save_dir: Path | None = None
    overwrite: bool = False
    warnings: list[str] = field(default_factory=list)


def _check_unique_stems(set_dir: Path, images: list[Path]) -> None:
    """LiifError if two HR images share a name (a.png, a.bmp): results and saved outputs
    are named by it."""
    seen: dict[str, Path] = {}
    for path in images:
        other = seen.setdefault(path.stem, path)
        if other != path:
            raise LiifError(f"set {set_dir.name}: {other.name} and {path.name} share the name "
                            f"{path.stem!r}, which names their results; keep one")


def plan_quality(sets: Sequence[str], scales: Sequence[float],
                 data_root: str | os.PathLike[str] | None, *,
                 save_images: str | os.PathLike[str] | None = None, overwrite: bool = False,
                 degrade: DegradeSpec | str | None = None) -> QualityPlan:
    """Check everything a quality benchmark needs, so that it fails before the first render,
    not an hour in: the data root, every set, every HR image and every LR file (decoded
    once), and that no image under `save_images` would be overwritten (unless
    `overwrite`) or written twice (two HR images of one name, a.png and a.bmp). A set or a
    scale named twice (Set5 and set5, 2 and 2.0000001: they print alike) counts once."""
    scales = unique_scales(float(s) for s in scales)
    if not scales:
        raise LiifError("no scales given (e.g. --scales 2,3,4)")
    for s in scales:
        if not math.isfinite(s) or s <= 1:
            raise LiifError(f"scale must be greater than 1 for the quality benchmark, got "
                            f"{format_scale(s)}")
    if not sets:
        raise LiifError("no benchmark sets given (e.g. --sets Set5,Set14)")
    if isinstance(degrade, str):
        degrade = parse_spec(degrade)
    root = resolve_data_root(data_root)
    save_dir = check_save_folder(save_images) if save_images is not None else None
    plan = QualityPlan(root, [], scales, degrade, save_dir, overwrite)
    for name in sets:
        set_dir = find_set(root, name)
        if any(set_dir.samefile(planned) for _, planned, _ in plan.sets):
            continue
        images, skipped = list_hr_images(set_dir)
        _check_unique_stems(set_dir, images)
        if skipped:
            plan.warnings.append(f"{set_dir.name}/HR: skipped {len(skipped)} non-image "
                                 f"entr{'y' if len(skipped) == 1 else 'ies'}: "
                                 f"{', '.join(skipped)}")
        for path in images:
            hr = load_rgb_u8(path)
            for s in scales:
                check_pair(path, (hr.shape[0], hr.shape[1]), set_dir, s)
                if save_dir is not None and not overwrite:
                    target = save_target(save_dir, set_dir.name, s, path.stem, plan.degrade)
                    if target.exists():
                        raise LiifError(f"{target} already exists; choose another "
                                        "--save-images folder or pass --overwrite")
        plan.sets.append((set_dir.name, set_dir, images))
    return plan
