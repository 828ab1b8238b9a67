"""`liif bench`: quality on the standard SR test sets, and speed against the reference decoder.

Library code: nothing here prints except the table helpers, which take a rich Console, and
`bench_command`, which does everything a parsed `liif bench` command line asks for.

Quality protocol (the LIIF paper's, see `QUALITY_PROTOCOL`)
-----------------------------------------------------------
For every image NAME/HR/<stem>.<ext> of a set and every scale s > 1:

* LR input: NAME/LR_bicubic/X<s>/<stem>x<s>.png when the folder NAME/LR_bicubic/X<s> exists
  (integer s only; these are MATLAB `imresize` downscales in the usual benchmark packages).
  If that folder exists, every image of the set must have its file there (a set is never
  scored on a mix of LR sources). Otherwise the LR is made here: lr = floor(H / s) x
  floor(W / s), the HR is cropped from the top-left to round(lr * s) (for integer s exactly
  the usual "modcrop"), and the crop is downscaled to lr with PIL's antialiased bicubic
  `Image.resize` on uint8. Which source was used is recorded per (set, scale).
* The model renders the LR to exactly the cropped HR size. Baselines: PIL bicubic and
  Lanczos upscaling of the same uint8 LR to the same size.
* Scores (`liif_cli.metrics`): output clamped to [0, 1] and not quantised, BT.601 Y channel,
  `shave_for_scale(s)` = ceil(s) pixels shaved from every border, PSNR (peak 1) and SSIM
  (Wang et al. 2004, 11x11 Gaussian sigma 1.5), each averaged over the images of a set.
* Files in HR/ whose extension is not an image extension (README, .DS_Store, ...) are
  skipped with a warning in the result; an image file that cannot be decoded is an error.

Speed protocol (see `run_speed`)
--------------------------------
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
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import LiifError
from .files import create_temp
from .metrics import SSIM_WINDOW, shave_for_scale, y_psnr, y_ssim
from .model import LIIF
from .sizing import parse_size, round_size

SCHEMA_VERSION = 1
DEFAULT_SETS = ("Set5", "Set14")
DEFAULT_QUALITY_SCALES = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
DEFAULT_SPEED_SCALES = (4.0, 12.5)
DEFAULT_SPEED_SIZE = (512, 512)  # (H, W) of the synthetic input
CPU_DEFAULT_MAX_OUTPUT_MP = 0.25  # the reference decodes only tens of kilopixels/s on a CPU
DATA_ENV = "LIIF_DATA"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm"})
LR_FILE_SOURCE = "file"
LR_PIL_SOURCE = "pil-bicubic"

QUALITY_PROTOCOL = (
    "LR input: SET/LR_bicubic/X{s}/{stem}x{s}.png when that folder exists (integer scales), "
    "else HR cropped top-left to round(floor(H/s)*s) x round(floor(W/s)*s) and downscaled to "
    "floor(H/s) x floor(W/s) with PIL bicubic (antialiased) on uint8; output rendered at the "
    "cropped HR size; baselines: PIL bicubic and Lanczos upscaling of the same uint8 LR; "
    "scores: output clamped to [0,1] (not quantised), ITU-R BT.601 Y (16-235), ceil(s) "
    "pixels shaved from every border, PSNR with peak 1, SSIM (Wang et al. 2004: 11x11 "
    "Gaussian sigma 1.5, K1=0.01, K2=0.03, valid windows), each averaged over the images."
)

# (done, total, label): called after each unit of work (an image rendered, a timing done).
BenchProgress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------- option parsing


def parse_sets(sets: str | Sequence[str] | None) -> list[str]:
    """'Set5,Set14' (or a list) -> ['Set5', 'Set14']; None gives the default sets."""
    if sets is None:
        return list(DEFAULT_SETS)
    items = sets.split(",") if isinstance(sets, str) else list(sets)
    names = list(dict.fromkeys(s.strip() for s in items if s.strip()))
    if not names:
        raise LiifError("no benchmark sets given (e.g. --sets Set5,Set14)")
    return names


def parse_scales(scales: str | Sequence[float] | None,
                 default: Sequence[float] = DEFAULT_QUALITY_SCALES) -> list[float]:
    """'2,3,x4,12.5' (or a list of numbers) -> [2.0, 3.0, 4.0, 12.5], duplicates dropped."""
    if scales is None:
        return [float(s) for s in default]
    items = scales.split(",") if isinstance(scales, str) else list(scales)
    out: list[float] = []
    for item in items:
        text = str(item).strip().lstrip("xX")
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise LiifError(f"bad scale {str(item).strip()!r}: expected a number such as 4 "
                            "or 12.5") from None
        if not math.isfinite(value) or value <= 0:
            raise LiifError(f"bad scale {str(item).strip()!r}: must be a positive number")
        if value not in out:
            out.append(value)
    if not out:
        raise LiifError("no scales given (e.g. --scales 2,3,4)")
    return out


def speed_input_size(size: str | Sequence[int] | None) -> tuple[int, int]:
    """The speed benchmark's input size as (H, W): a 'WIDTHxHEIGHT' string, an (H, W) pair,
    or None for the default."""
    if size is None:
        return DEFAULT_SPEED_SIZE
    h, w = parse_size(size) if isinstance(size, str) else (int(v) for v in size)
    if h < 1 or w < 1:
        raise LiifError(f"bad size {w}x{h}: both sides must be at least 1 pixel")
    return h, w


def format_scale(scale: float) -> str:
    """2.0 -> '2', 12.5 -> '12.5'."""
    return str(int(scale)) if float(scale).is_integer() else f"{scale:g}"


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
    if scale <= 1:
        raise LiifError(f"scale must be greater than 1 for the quality benchmark, got "
                        f"{format_scale(scale)}")
    hr = load_rgb_u8(hr_path)
    stem = hr_path.stem
    hr_size = (hr.shape[0], hr.shape[1])
    lr_size = lr_size_for(hr_size, scale)
    crop = hr_crop_for(lr_size, scale)
    border = shave_for_scale(scale)
    if min(lr_size) < 1 or min(crop) - 2 * border < SSIM_WINDOW:
        raise LiifError(f"set {set_dir.name}: {hr_path.name} ({hr_size[1]}x{hr_size[0]}) is too "
                        f"small to score at x{format_scale(scale)}")
    lr_path = find_lr_file(set_dir, stem, scale)
    if lr_path is not None:
        lr = load_rgb_u8(lr_path)
        if (lr.shape[0], lr.shape[1]) != lr_size:
            raise LiifError(f"{lr_path}: LR image is {lr.shape[1]}x{lr.shape[0]}, expected "
                            f"{lr_size[1]}x{lr_size[0]} for the {hr_size[1]}x{hr_size[0]} HR "
                            f"image at x{format_scale(scale)}")
        source = LR_FILE_SOURCE
    hr = np.ascontiguousarray(hr[: crop[0], : crop[1]])
    if lr_path is None:
        lr = pil_resize(hr, lr_size, "bicubic")
        source = LR_PIL_SOURCE
    return BenchPair(stem, hr, lr, source, lr_path)


def _to_chw(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def _to_u8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 (rounded)."""
    return img.clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- shared fields


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or device.type


def _resolve_device(device: torch.device | str) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from .engine import resolve_device

    return resolve_device(device)


def _engine_kwargs(tile: int | None, chunk: int | None, precision: str) -> dict[str, Any]:
    """The keyword arguments passed to engine.render (None: the engine's own default)."""
    kwargs: dict[str, Any] = {"precision": precision}
    if tile is not None:
        kwargs["tile"] = tile
    if chunk is not None:
        kwargs["chunk"] = chunk
    return kwargs


def common_fields(kind: str, model: LIIF, device: torch.device, *, weights_name: str | None,
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
        "device_name": _device_name(device),
        "threads": torch.get_num_threads(),
        "weights_name": weights_name,
        "weights_sha256": weights_sha256,
        "model_spec": model.spec.to_dict(),
        "engine_options": dict(engine_options),
        "protocol": protocol,
        "warnings": [],
    }


# --------------------------------------------------------------------------- quality


def _save_target(save_dir: Path, set_name: str, scale: float, stem: str) -> Path:
    return save_dir / set_name / f"x{format_scale(scale)}" / f"{stem}.png"


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def run_quality(sets: Sequence[str], scales: Sequence[float], data_root: str | os.PathLike[str],
                model: LIIF, *, device: torch.device | str = "cpu", tile: int | None = None,
                chunk: int | None = None, precision: str = "fp32",
                save_images: str | os.PathLike[str] | None = None, overwrite: bool = False,
                weights_name: str | None = None, weights_sha256: str | None = None,
                progress: BenchProgress | None = None) -> dict[str, Any]:
    """Score `model` against PIL bicubic and Lanczos on benchmark sets (see the module doc).

    Everything is checked before the first render: the data root, every set and its HR
    images, the LR folders, and that no image under `save_images` would be overwritten
    (unless `overwrite`). Returns the JSON-ready result (see `write_json`).
    """
    from .engine import render

    device = _resolve_device(device)
    scales = [float(s) for s in scales]
    if not scales:
        raise LiifError("no scales given (e.g. --scales 2,3,4)")
    for s in scales:
        if not math.isfinite(s) or s <= 1:
            raise LiifError(f"scale must be greater than 1 for the quality benchmark, got "
                            f"{format_scale(s)}")
    if not sets:
        raise LiifError("no benchmark sets given (e.g. --sets Set5,Set14)")
    root = resolve_data_root(data_root)
    save_dir = Path(save_images).expanduser() if save_images is not None else None

    # Plan (and validate) everything before rendering anything.
    warnings: list[str] = []
    plan: list[tuple[str, Path, list[Path]]] = []
    for name in sets:
        set_dir = find_set(root, name)
        images, skipped = list_hr_images(set_dir)
        if skipped:
            warnings.append(f"{set_dir.name}/HR: skipped {len(skipped)} non-image "
                            f"entr{'y' if len(skipped) == 1 else 'ies'}: {', '.join(skipped)}")
        for s in scales:
            for path in images:
                find_lr_file(set_dir, path.stem, s)  # fails early if a ready-made LR is missing
        plan.append((set_dir.name, set_dir, images))
    if save_dir is not None and not overwrite:
        for set_name, _, images in plan:
            for s in scales:
                for path in images:
                    target = _save_target(save_dir, set_name, s, path.stem)
                    if target.exists():
                        raise LiifError(f"{target} already exists; choose another --save-images "
                                        "folder or pass --overwrite")

    engine_options = _engine_kwargs(tile, chunk, precision)
    result = common_fields("quality", model, device, weights_name=weights_name,
                           weights_sha256=weights_sha256, protocol=QUALITY_PROTOCOL,
                           engine_options=engine_options)
    result["warnings"] = warnings
    result.update({"data_root": str(root), "sets": [p[0] for p in plan],
                   "scales": scales, "results": []})
    total = sum(len(images) for _, _, images in plan) * len(scales)
    done = 0
    model.eval()
    for set_name, set_dir, images in plan:
        for s in scales:
            border = shave_for_scale(s)
            rows = []
            for path in images:
                pair = make_pair(path, set_dir, s)
                hr_size = (pair.hr.shape[0], pair.hr.shape[1])
                hr = _to_chw(pair.hr)
                start = time.perf_counter()
                sr = render(model, _to_chw(pair.lr), hr_size, device=device, **engine_options)
                seconds = time.perf_counter() - start
                scores = {"model": sr}
                for method in ("bicubic", "lanczos"):
                    scores[method] = _to_chw(pil_resize(pair.lr, hr_size, method))
                row: dict[str, Any] = {
                    "image": pair.stem, "hr_size": list(hr_size),
                    "lr_size": [pair.lr.shape[0], pair.lr.shape[1]], "lr_source": pair.lr_source,
                    "render_seconds": round(seconds, 4)}
                for key, img in scores.items():
                    row[key] = {"psnr": y_psnr(img, hr, border), "ssim": y_ssim(img, hr, border)}
                rows.append(row)
                if save_dir is not None:
                    target = _save_target(save_dir, set_name, s, pair.stem)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_to_u8(sr)).save(target)
                done += 1
                if progress:
                    progress(done, total, f"{set_name} x{format_scale(s)} {pair.stem}")
            folder = lr_folder(set_dir, s)
            entry: dict[str, Any] = {
                "set": set_name, "scale": s, "shave": border, "n_images": len(rows),
                "lr_source": LR_FILE_SOURCE if folder is not None else LR_PIL_SOURCE,
                "lr_folder": str(folder.relative_to(set_dir.parent)) if folder else None}
            for key in ("model", "bicubic", "lanczos"):
                entry[key] = {m: _mean([r[key][m] for r in rows]) for m in ("psnr", "ssim")}
            entry["gain_psnr"] = entry["model"]["psnr"] - entry["bicubic"]["psnr"]
            entry["images"] = rows
            result["results"].append(entry)
    return result


# --------------------------------------------------------------------------- speed


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
            _sync(device)
            start = time.perf_counter()
            out = fn()
            _sync(device)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    stats = {
        "seconds": [round(t, 6) for t in times],
        "median_seconds": median,
        "mp_per_s": pixels / median / 1e6 if median > 0 else math.inf,
        "peak_memory_mb": None if mem.peak_bytes is None else mem.peak_bytes / 2 ** 20,
    }
    assert out is not None
    return stats, out


def _time_engine(model: LIIF, image: torch.Tensor, out_size: tuple[int, int],
                 region: dict[str, Any], engine_options: dict[str, Any], device: torch.device,
                 warmup: int, repeats: int, pixels: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Time the engine on the whole output, or on a band of it.

    For a band, the engine's encoding is charged as in a whole-image render: its decoding of
    the band plus the band's share (by output pixels) of encoding every tile window of the
    whole image, at the seconds per encoded pixel it measured on the band's own windows.
    """
    from .engine import DEFAULT_TILE, RenderTimes, plan_tiles, render

    runs: list[RenderTimes] = []

    def run() -> torch.Tensor:
        runs.append(RenderTimes())
        return render(model, image, out_size, device=device, times=runs[-1], **engine_options,
                      **region)

    stats, out = _time_renders(run, device, warmup, repeats, pixels)
    if not region:
        return stats, out
    timed = runs[-repeats:]
    whole = plan_tiles(model, tuple(image.shape[1:]), out_size,
                       engine_options.get("tile", DEFAULT_TILE)).encoded_pixels
    encode = [t.encode_seconds / t.encoded_pixels * whole for t in timed]
    return _band_stats([t.decode_seconds for t in timed], encode, out_size, pixels,
                       stats["peak_memory_mb"]), out


def _time_reference(model: LIIF, image: torch.Tensor, out_size: tuple[int, int],
                    region: dict[str, Any], device: torch.device, warmup: int, repeats: int,
                    pixels: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Time the reference decoder on the whole output, or on a band of it.

    For a band, the paper's code would encode the whole image once for all output rows, so
    the band is charged its share of one encoding: encoding and decoding are timed apart.
    """
    from .engine import normalise, render_reference

    if not region:
        def run_whole() -> torch.Tensor:
            return render_reference(model, image, out_size, device=device)
        return _time_renders(run_whole, device, warmup, repeats, pixels)

    with torch.no_grad():
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


def run_speed(model: LIIF, size: tuple[int, int] | str = DEFAULT_SPEED_SIZE,
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
    device = _resolve_device(device)
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
    if max_output_mp is not None and (not math.isfinite(max_output_mp) or max_output_mp < 0):
        raise LiifError(f"bad --max-output-mp {max_output_mp}: must be a positive number")

    engine_options = _engine_kwargs(tile, chunk, precision)
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
                + f"peak memory: {PeakMemory.method(device)}")
    result = common_fields("speed", model, device, weights_name=weights_name,
                           weights_sha256=weights_sha256, protocol=protocol,
                           engine_options=engine_options)
    result.update({"input_size": [h, w], "scales": scales, "repeats": repeats,
                   "warmup": warmup, "max_output_mp": max_output_mp or None,
                   "peak_memory_method": PeakMemory.method(device), "results": []})

    model.eval().to(device)
    image = synthetic_image((h, w), seed)
    total = len(scales) * (2 if reference else 1)
    done = 0
    for s in scales:
        out_size = (round_size(h * s), round_size(w * s))
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


# --------------------------------------------------------------------------- JSON


def _json_safe(obj: Any) -> Any:
    """Non-finite floats become null (JSON has no inf/nan); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def to_json(result: dict[str, Any]) -> str:
    """The result as strict JSON text (infinite PSNRs, from identical images, become null)."""
    return json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n"


def check_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """LiifError if `path` exists (and not `overwrite`) or is a folder; else the Path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise LiifError(f"{path} is a folder, not a file name for the JSON results")
    if path.exists() and not overwrite:
        raise LiifError(f"{path} already exists; choose another --json file or pass --overwrite")
    return path


def write_json(result: dict[str, Any], path: str | os.PathLike[str],
               overwrite: bool = False) -> Path:
    """Write a result as JSON (atomically: a temporary file, then a rename)."""
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(to_json(result))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- tables


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def quality_table(result: dict[str, Any]) -> Table:
    """A rich table of a quality result: one row per (set, scale)."""
    title = f"Y-PSNR (dB) / Y-SSIM, shave = ceil(scale): {result.get('weights_name') or 'model'}"
    table = Table(title=title, title_justify="left")
    for name, justify in (("Set", "left"), ("Scale", "right"), ("LR source", "left"),
                          ("N", "right"), ("LIIF PSNR", "right"), ("LIIF SSIM", "right"),
                          ("Bicubic PSNR", "right"), ("Bicubic SSIM", "right"),
                          ("Lanczos PSNR", "right"), ("Lanczos SSIM", "right"),
                          ("Gain (dB)", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in result["results"]:
        source = e["lr_folder"] if e["lr_source"] == LR_FILE_SOURCE else "PIL bicubic"
        gain = e["gain_psnr"]
        gain_text = _fmt(gain, 2)
        if gain is not None and math.isfinite(gain):
            gain_text = f"[green]{gain:+.2f}[/]" if gain > 0 else f"[red]{gain:+.2f}[/]"
        table.add_row(e["set"], f"x{format_scale(e['scale'])}", source, str(e["n_images"]),
                      _fmt(e["model"]["psnr"], 2), _fmt(e["model"]["ssim"], 4),
                      _fmt(e["bicubic"]["psnr"], 2), _fmt(e["bicubic"]["ssim"], 4),
                      _fmt(e["lanczos"]["psnr"], 2), _fmt(e["lanczos"]["ssim"], 4), gain_text)
    return table


def speed_table(result: dict[str, Any]) -> Table:
    """A rich table of a speed result: one row per scale."""
    h, w = result["input_size"]
    table = Table(title=f"Speed on {result['device']} ({result['device_name']}), input {w}x{h}",
                  title_justify="left")
    for name in ("Scale", "Output", "Timed", "Engine MP/s", "Engine MB", "Ref. MP/s",
                 "Ref. MB", "Speed-up", "Max |diff|"):
        table.add_column(name, justify="left" if name in ("Output", "Timed") else "right")
    for e in result["results"]:
        oh, ow = e["output_size"]
        start, stop = e["rows"]
        region = "all" if (start, stop) == (0, oh) else f"{e['region_mp']:.2f} MP band"
        ref = e["reference"] or {}
        speedup = e["speedup"]
        diff = e["max_abs_diff"]
        table.add_row(f"x{format_scale(e['scale'])}", f"{ow}x{oh}", region,
                      _fmt(e["engine"]["mp_per_s"], 3), _fmt(e["engine"]["peak_memory_mb"], 0),
                      _fmt(ref.get("mp_per_s"), 3), _fmt(ref.get("peak_memory_mb"), 0),
                      "-" if speedup is None else f"{speedup:.1f}x",
                      "-" if diff is None else f"{diff:.1e}")
    table.caption = ("MB: peak memory growth. Band: a centred band of output rows, each "
                     "decoder charged the band's share of its whole-image encoding.")
    return table


def print_quality(console: Console, result: dict[str, Any]) -> None:
    """Print a quality result's table, and its warnings."""
    for warning in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(quality_table(result))


def print_speed(console: Console, result: dict[str, Any]) -> None:
    """Print a speed result's table and how memory was measured."""
    for warning in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(speed_table(result))
    console.print(f"[dim]peak memory: {result['peak_memory_method']}[/]", highlight=False)


# --------------------------------------------------------------------------- command


def bench_command(*, data_root: str | os.PathLike[str] | None = None,
                  sets: str | Sequence[str] | None = None,
                  scales: str | Sequence[float] | None = None, weights: str | None = None,
                  device: str = "auto", json_path: str | os.PathLike[str] | None = None,
                  save_images: str | os.PathLike[str] | None = None, speed: bool = False,
                  size: str | Sequence[int] | None = None, repeats: int = 3,
                  max_output_mp: float | None = None, reference: bool = True,
                  tile: int | None = None, chunk: int | None = None, precision: str = "fp32",
                  overwrite: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Everything `liif bench` does, given its parsed options; returns the result dict.

    Quality benchmark by default; `speed=True` runs the speed benchmark instead (no data
    needed). `scales` defaults to 2,3,4,6,8,12 (quality) or 4,12.5 (speed). `size` is
    WIDTHxHEIGHT. `max_output_mp` None means automatic: 0.25 MP bands on the CPU, whole
    outputs elsewhere; 0 renders whole outputs everywhere. Raises LiifError on bad input.
    """
    from .checkpoint import DEFAULT_WEIGHTS, file_sha256, load, resolve_weights

    console = console or Console()
    scale_list = parse_scales(scales, DEFAULT_SPEED_SCALES if speed else DEFAULT_QUALITY_SCALES)
    set_list = parse_sets(sets)
    in_size = speed_input_size(size)
    json_file = check_writable(json_path, overwrite) if json_path is not None else None
    if speed and save_images is not None:
        raise LiifError("--save-images applies to the quality benchmark, not to --speed")
    if not speed:
        bad = [s for s in scale_list if s <= 1]
        if bad:
            raise LiifError(f"scale must be greater than 1 for the quality benchmark, got "
                            f"{format_scale(bad[0])}")
        root = resolve_data_root(data_root)

    weights_path = resolve_weights(weights)
    checkpoint = load(weights_path)
    model = checkpoint.build()
    sha = file_sha256(weights_path)
    name = str(weights or DEFAULT_WEIGHTS)
    dev = _resolve_device(device)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("speed" if speed else "quality", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        if speed:
            cap = max_output_mp
            if cap is None:
                cap = CPU_DEFAULT_MAX_OUTPUT_MP if dev.type == "cpu" else None
            result = run_speed(model, in_size, scale_list, device=dev, repeats=repeats,
                               max_output_mp=cap or None, reference=reference, tile=tile,
                               chunk=chunk, precision=precision, weights_name=name,
                               weights_sha256=sha, progress=progress)
        else:
            result = run_quality(set_list, scale_list, root, model, device=dev, tile=tile,
                                 chunk=chunk, precision=precision, save_images=save_images,
                                 overwrite=overwrite, weights_name=name, weights_sha256=sha,
                                 progress=progress)
    result["weights_metadata"] = _json_safe(dict(checkpoint.metadata))
    (print_speed if speed else print_quality)(console, result)
    if save_images is not None and not speed:
        console.print(f"saved LIIF outputs under {Path(save_images).expanduser()}",
                      highlight=False)
    if json_file is not None:
        write_json(result, json_file, overwrite=overwrite)
        console.print(f"wrote {json_file}", highlight=False)
    return result
