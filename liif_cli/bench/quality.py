"""The quality benchmark: Y-PSNR and SSIM on the standard SR test sets, beside bicubic and
Lanczos.

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
  `sets.shave_for_scale(s)` = ceil(s) pixels shaved from every border, PSNR (peak 1) and SSIM
  (Wang et al. 2004, 11x11 Gaussian sigma 1.5), each averaged over the images of a set.
* `degrade` (`liif bench --degrade jpeg:75`, see liif_cli.degrade_settings.parse_spec): the LR
  input, once found or made, is degraded before anything is scored, the same way for the
  model and the baselines, and deterministically per image (noise seeded from the set name,
  image stem and scale). The result's `degrade` field names it (null when clean).
* Files in HR/ whose extension is not an image extension (README, .DS_Store, ...) are
  skipped with a warning in the result; an image file that cannot be decoded is an error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..degrade import apply_spec
from ..degrade_settings import image_seed
from ..errors import LiifError
from ..images import Picture, write_image
from ..metrics import y_psnr, y_ssim
from ..model import ImplicitImage
from .common import BenchProgress, common_fields, engine_kwargs, resolve_device
from .options import format_scale
from .sets import (
    LR_FILE_SOURCE,
    LR_PIL_SOURCE,
    QualityPlan,
    lr_folder,
    make_pair,
    pil_resize,
    save_target,
    shave_for_scale,
)

QUALITY_PROTOCOL = (
    "LR input: SET/LR_bicubic/X{s}/{stem}x{s}.png when that folder exists (integer scales), "
    "else HR cropped top-left to round(floor(H/s)*s) x round(floor(W/s)*s) and downscaled to "
    "floor(H/s) x floor(W/s) with PIL bicubic (antialiased) on uint8; output rendered at the "
    "cropped HR size; baselines: PIL bicubic and Lanczos upscaling of the same uint8 LR; "
    "scores: output clamped to [0,1] (not quantised), ITU-R BT.601 Y (16-235), ceil(s) "
    "pixels shaved from every border, PSNR with peak 1, SSIM (Wang et al. 2004: 11x11 "
    "Gaussian sigma 1.5, K1=0.01, K2=0.03, valid windows), each averaged over the images."
)


def _to_chw(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def _to_u8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 (rounded)."""
    return img.clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- scoring


def _save_output(sr: torch.Tensor, target: Path, overwrite: bool) -> None:
    """Write a model output as an 8-bit PNG, atomically (a temporary file, then a rename)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiifError(f"cannot create folder {target.parent}: {exc.strerror or exc}") from None
    write_image(Picture.from_array(_to_u8(sr)), target, overwrite=overwrite)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def run_quality(plan: QualityPlan, model: ImplicitImage, *, device: torch.device | str = "cpu",
                tile: int | None = None, chunk: int | None = None, precision: str = "fp32",
                weights_name: str | None = None, weights_sha256: str | None = None,
                progress: BenchProgress | None = None) -> dict[str, Any]:
    """Score `model` against PIL bicubic and Lanczos as `plan` says (see the module doc);
    returns the JSON-ready result (see `report.write_json`)."""
    from ..engine import render

    device = resolve_device(device)
    degrade, save_dir = plan.degrade, plan.save_dir
    engine_options = engine_kwargs(tile, chunk, precision)
    protocol = QUALITY_PROTOCOL
    if degrade is not None:
        protocol += (f"; every LR input then degraded with {degrade} (blur: Gaussian sigma in "
                     "px; noise: Gaussian sigma in 8-bit levels, seeded per set, image and "
                     "scale; jpeg: Pillow quality), for the model and the baselines alike")
    result = common_fields("quality", model, device, weights_name=weights_name,
                           weights_sha256=weights_sha256, protocol=protocol,
                           engine_options=engine_options)
    result["warnings"] = list(plan.warnings)
    result.update({"data_root": str(plan.root), "sets": [p[0] for p in plan.sets],
                   "scales": plan.scales, "degrade": str(degrade) if degrade else None,
                   "results": []})
    total = sum(len(images) for _, _, images in plan.sets) * len(plan.scales)
    done = 0
    model.eval()
    for set_name, set_dir, images in plan.sets:
        for s in plan.scales:
            border = shave_for_scale(s)
            rows = []
            for path in images:
                pair = make_pair(path, set_dir, s)
                if degrade is not None:
                    pair.lr = apply_spec(degrade, pair.lr, image_seed(set_name, pair.stem,
                                                                format_scale(s)))
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
                    _save_output(sr, save_target(save_dir, set_name, s, pair.stem,
                                                 plan.degrade), plan.overwrite)
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
