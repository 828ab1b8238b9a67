"""Degradations of low-resolution inputs: Gaussian blur, resizing, noise and JPEG compression.

A model trained only on clean bicubic downscales sharpens the blur, noise and compression
artefacts of real photos along with their detail. Two uses here:

* Training (`liif train --degradation real`): after the bicubic downscale, each LR crop goes
  through a random chain, in the spirit of Real-ESRGAN's second-order pipeline (Wang et al.,
  2021) with BSRGAN's shuffled order (Zhang et al., 2021). One pass applies, in a random
  order and each with its own probability: a Gaussian blur (isotropic or anisotropic kernel
  of random size and sigma), a resize by a random factor, Gaussian or Poisson noise (colour
  or grey) and JPEG compression at a random quality. A second pass follows with probability
  `second_pass_prob`, and the result is resized back to the crop's size. The HR target stays
  clean. Every choice comes from one per-sample seed: `degrade(lr, config, seed)` is a pure
  function, so a run that saves its generator state resumes bit-for-bit.
* Benchmarks (`liif bench --degrade jpeg:75`): a fixed chain of named steps
  (`apply_spec`), seeded per image.

What the chains are (their settings, parsed without torch) lives in
liif_cli.degrade_settings.

Inside a chain images are float32 tensors (3, H, W) in [0, 1]; the chains take and return
uint8 (H, W, 3) arrays. JPEG uses Pillow's encoder and decoder (libjpeg), the rest torch ops.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .degrade_settings import DegradationConfig, DegradeSpec, DegradeStep

RESIZE_MODES = ("area", "bilinear", "bicubic")

# --------------------------------------------------------------------------- conversions


def to_float(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, order="C")).permute(2, 0, 1).float() / 255


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [0, 1] -> uint8 (H, W, 3), clamped and rounded."""
    return img.clamp(0, 1).mul(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


# --------------------------------------------------------------------------- single steps


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None,
                    theta: float = 0.0) -> torch.Tensor:
    """A (size, size) Gaussian blur kernel, normalised to sum to 1 (blurring keeps brightness).

    `size` is odd; sigma_x and sigma_y (default: sigma_x, isotropic) are the standard
    deviations in pixels along the kernel's axes, rotated by `theta` radians.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 1 (got {size})")
    sigma_y = sigma_x if sigma_y is None else sigma_y
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * x + sin * y, cos * y - sin * x
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).float()


def kernel_size_for(sigma: float) -> int:
    """The odd kernel side that holds +-3 sigma: 2 * ceil(3 sigma) + 1."""
    return 2 * math.ceil(3 * sigma) + 1


def blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of (C, H, W) with a (k, k) kernel; borders are replicated, so
    any kernel fits any image."""
    k = kernel.shape[-1]
    pad = k // 2
    padded = F.pad(img[None], (pad, pad, pad, pad), mode="replicate")
    weight = kernel.to(img.dtype).expand(img.shape[0], 1, k, k)
    return F.conv2d(padded, weight, groups=img.shape[0])[0]


def resize(img: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize (C, H, W) to (h, w) with torch's `mode` interpolation, not antialiased (as cheap
    resizers in cameras and apps are); clamped to [0, 1]."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    corners = None if mode == "area" else False
    out = F.interpolate(img[None], size=size, mode=mode, align_corners=corners)[0]
    return out.clamp_(0, 1)


def gaussian_noise(img: torch.Tensor, sigma: float, g: torch.Generator,
                   gray: bool = False) -> torch.Tensor:
    """Add zero-mean Gaussian noise of standard deviation `sigma` 8-bit levels (sigma / 255),
    independent per channel, or the same in all channels (`gray`, like luminance noise)."""
    shape = (1, *img.shape[1:]) if gray else tuple(img.shape)
    noise = torch.randn(shape, generator=g) * (sigma / 255)
    return (img + noise).clamp_(0, 1)


def poisson_noise(img: torch.Tensor, scale: float, g: torch.Generator,
                  gray: bool = False) -> torch.Tensor:
    """Add shot noise: each value taken as a count of photons (255 at white), Poisson-sampled,
    and the difference times `scale` added (scale 1: a standard deviation of sqrt(255 x)
    levels at intensity x). `gray`: counted on the luma and added to all channels."""
    base = img
    if gray:
        base = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
    counts = torch.poisson(base * 255, generator=g)
    return (img + (counts / 255 - base) * scale).clamp_(0, 1)


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip (C, H, W) through Pillow's JPEG encoder at `quality` (1-100; its default
    4:2:0 chroma subsampling, as cameras and the web use) and decoder."""
    return _codec_round_trip(img, "JPEG", quality)


def webp(img: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip (C, H, W) through Pillow's lossy WebP encoder at `quality` (1-100)."""
    return _codec_round_trip(img, "WEBP", quality)


def _codec_round_trip(img: torch.Tensor, fmt: str, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format=fmt, quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return to_float(np.asarray(decoded.convert("RGB")))


# --------------------------------------------------------------------------- training chain


class _Random:
    """Every random choice of one chain, from a generator seeded with the sample's seed."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def uniform(self, bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return lo + (hi - lo) * float(torch.rand(1, generator=self.g, dtype=torch.float64))

    def chance(self, p: float) -> bool:
        return float(torch.rand(1, generator=self.g, dtype=torch.float64)) < p

    def integer(self, lo: int, hi: int) -> int:
        """Uniform in lo..hi, both included."""
        return int(torch.randint(lo, hi + 1, (1,), generator=self.g))

    def choice(self, options: tuple[str, ...]) -> str:
        return options[self.integer(0, len(options) - 1)]

    def order(self, n: int) -> list[int]:
        return torch.randperm(n, generator=self.g).tolist()


def random_kernel(config: DegradationConfig, rnd: _Random) -> torch.Tensor:
    """A blur kernel drawn from `config`: odd size, isotropic or rotated anisotropic."""
    lo, hi = config.blur_size
    size = 2 * rnd.integer(lo // 2, (hi - 1) // 2) + 1  # the odd sizes in [lo, hi]
    if rnd.chance(config.anisotropic_prob):
        return gaussian_kernel(size, rnd.uniform(config.blur_sigma),
                               rnd.uniform(config.blur_sigma), rnd.uniform((0.0, math.pi)))
    return gaussian_kernel(size, rnd.uniform(config.blur_sigma))


def _blur_step(img: torch.Tensor, c: DegradationConfig, rnd: _Random) -> torch.Tensor:
    return blur(img, random_kernel(c, rnd))


def _resize_step(img: torch.Tensor, c: DegradationConfig, rnd: _Random) -> torch.Tensor:
    factor = rnd.uniform(c.resize_scale)
    h, w = img.shape[-2:]
    size = (max(2, round(h * factor)), max(2, round(w * factor)))
    return resize(img, size, rnd.choice(RESIZE_MODES))


def _noise_step(img: torch.Tensor, c: DegradationConfig, rnd: _Random) -> torch.Tensor:
    poisson, gray = rnd.chance(c.poisson_prob), rnd.chance(c.gray_noise_prob)
    if poisson:
        return poisson_noise(img, rnd.uniform(c.poisson_scale), rnd.g, gray)
    return gaussian_noise(img, rnd.uniform(c.noise_sigma), rnd.g, gray)


def _jpeg_step(img: torch.Tensor, c: DegradationConfig, rnd: _Random) -> torch.Tensor:
    return jpeg(img, rnd.integer(*c.jpeg_quality))


_STEPS = (("blur_prob", _blur_step), ("resize_prob", _resize_step),
          ("noise_prob", _noise_step), ("jpeg_prob", _jpeg_step))


def degrade(lr: np.ndarray, config: DegradationConfig, seed: int) -> np.ndarray:
    """The random training chain applied to a uint8 (H, W, 3) LR crop; same size out.

    A pure function of its arguments: the same seed gives the same image.
    """
    rnd = _Random(seed)
    img = to_float(lr)
    passes = 2 if rnd.chance(config.second_pass_prob) else 1
    for _ in range(passes):
        for i in rnd.order(len(_STEPS)):
            prob, step = _STEPS[i]
            if rnd.chance(getattr(config, prob)):
                img = step(img, config, rnd)
    img = resize(img, tuple(lr.shape[:2]), rnd.choice(RESIZE_MODES))
    return to_uint8(img)


# --------------------------------------------------------------------------- benchmark specs


def apply_step(step: DegradeStep, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One fixed step on a (3, H, W) image; noise draws from `g`."""
    if step.kind == "blur":
        return blur(img, gaussian_kernel(kernel_size_for(step.value), step.value))
    if step.kind == "noise":
        return gaussian_noise(img, step.value, g)
    if step.kind == "webp":
        return webp(img, int(step.value))
    return jpeg(img, int(step.value))


def apply_spec(spec: DegradeSpec, img: np.ndarray, seed: int) -> np.ndarray:
    """A fixed chain on a uint8 (H, W, 3) image; noise comes from `seed` (see image_seed)."""
    g = torch.Generator().manual_seed(seed)
    out = to_float(img)
    for step in spec.steps:
        out = apply_step(step, out, g)
    return to_uint8(out)
