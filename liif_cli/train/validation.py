"""Validation during training: Y-PSNR of the model against bicubic on held-out images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..dataset import bicubic_resize, to_unit
from ..degrade import apply_spec
from ..degrade_settings import DegradeSpec, image_seed, parse_spec
from ..engine import render
from ..metrics import y_psnr
from ..model import ImplicitImage


def _centre_crop(array: np.ndarray, limit: int | None) -> np.ndarray:
    if not limit:
        return array
    h, w = array.shape[:2]
    ch, cw = min(h, limit), min(w, limit)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return array[y0:y0 + ch, x0:x0 + cw]


def validate(model: ImplicitImage, images: list[np.ndarray], scales: list[int],
             crop: int | None = None, precision: str = "fp32",
             degrades: Sequence[DegradeSpec | str] = ()) -> dict[str, dict[str, float]]:
    """Mean Y-PSNR of LIIF and of bicubic at each scale: {'psnr': {'x2': ..}, 'bicubic_psnr': ..}.

    LR = HR cropped to a multiple of the scale, then antialiased bicubic downscale (PIL);
    `scale` px are shaved from each border. Each of `degrades` (e.g. 'jpeg:75') adds a score
    per scale on the LR input so degraded ('x4 jpeg:75'), seeded per image as `liif bench
    --degrade` does. `precision` is the rendering precision (bf16 renders 2-3x faster on
    CPUs with bf16 units and moves PSNR by about 0.003 dB).
    """
    conditions = [None, *(parse_spec(d) if isinstance(d, str) else d for d in degrades)]
    was_training = model.training
    model.eval()
    psnr: dict[str, float] = {}
    bic: dict[str, float] = {}
    try:
        for s in scales:
            for degrade in conditions:
                key = f"x{s}" if degrade is None else f"x{s} {degrade}"
                ours, base = [], []
                for i, image in enumerate(images):
                    hr = _centre_crop(image, crop)
                    h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
                    if h // s < 1 or w // s < 1 or min(h, w) <= 2 * s:
                        continue
                    hr = hr[:h, :w]
                    lr = bicubic_resize(hr, (h // s, w // s))
                    if degrade is not None:
                        lr = apply_spec(degrade, lr, image_seed("val", i, s))
                    sr = render(model, to_unit(lr), (h, w),
                                device=next(model.parameters()).device, precision=precision)
                    truth = to_unit(hr)
                    ours.append(y_psnr(sr, truth, shave=s))
                    base.append(y_psnr(to_unit(bicubic_resize(lr, (h, w))), truth, shave=s))
                if ours:
                    psnr[key] = round(sum(ours) / len(ours), 4)
                    bic[key] = round(sum(base) / len(base), 4)
    finally:
        model.train(was_training)
    return {"psnr": psnr, "bicubic_psnr": bic}

