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
  (`parse_spec`), seeded per image.

Inside a chain images are float32 tensors (3, H, W) in [0, 1]; the chains take and return
uint8 (H, W, 3) arrays. JPEG uses Pillow's encoder and decoder (libjpeg), the rest torch ops.
"""

from __future__ import annotations

import io
import math
import re
import zlib
from dataclasses import dataclass, fields
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import LiifError

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
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return to_float(np.asarray(decoded.convert("RGB")))


# --------------------------------------------------------------------------- training chain


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges and probabilities of the random training chain (`--degradation real`).

    The chain runs on the LR crop, so blur sizes and sigmas are in LR pixels. A (lo, hi)
    range is sampled uniformly (blur_size: odd sizes only; jpeg_quality: integers).
    Probabilities are per pass.
    """

    second_pass_prob: float = 0.5  # chance of running the chain a second time
    blur_prob: float = 0.8
    blur_size: tuple[int, int] = (3, 11)  # kernel side, px
    blur_sigma: tuple[float, float] = (0.2, 1.5)  # px, per axis for anisotropic kernels
    anisotropic_prob: float = 0.5  # of the blurs: two sigmas and a random angle
    resize_prob: float = 0.7
    resize_scale: tuple[float, float] = (0.5, 1.5)  # factor of the current size
    noise_prob: float = 0.8
    poisson_prob: float = 0.5  # of the noisy passes: Poisson rather than Gaussian
    gray_noise_prob: float = 0.4  # of the noisy passes: the same noise in every channel
    noise_sigma: tuple[float, float] = (1.0, 25.0)  # Gaussian, 8-bit levels
    poisson_scale: tuple[float, float] = (0.05, 2.5)  # see poisson_noise
    jpeg_prob: float = 0.9
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        """Check every setting (LiifError, one line) and store ranges as tuples."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not 0.0 <= value <= 1.0:
                    _bad_setting(f.name, value, "a probability from 0 to 1")
                continue
            object.__setattr__(self, f.name, _check_range(f.name, value))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (ranges as lists), as checkpoints and config.json hold them."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DegradationConfig:
        """The config a dict describes (missing settings keep their defaults); LiifError for
        unknown settings or bad values."""
        known = [f.name for f in fields(cls)]
        unknown = [k for k in raw if k not in known]
        if unknown:
            raise LiifError(f"unknown degradation setting {unknown[0]!r} (known: "
                            f"{', '.join(known)})")
        return cls(**raw)


# Bounds of the ranges (first <= lo <= hi <= second), and which hold whole numbers.
_LIMITS = {"blur_size": (1, 51), "blur_sigma": (0.01, 20.0), "resize_scale": (0.05, 4.0),
           "noise_sigma": (0.0, 255.0), "poisson_scale": (0.0, 10.0), "jpeg_quality": (1, 100)}
_WHOLE = ("blur_size", "jpeg_quality")


def _check_range(name: str, value: Any) -> tuple[float, float] | tuple[int, int]:
    low, high = _LIMITS[name]
    whole = name in _WHOLE
    expected = (f"a range [lo, hi] of {'whole numbers' if whole else 'numbers'} with "
                f"{low:g} <= lo <= hi <= {high:g}")
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        _bad_setting(name, value, expected)
    if not low <= lo <= hi <= high or (whole and not (lo.is_integer() and hi.is_integer())):
        _bad_setting(name, value, expected)
    if name == "blur_size" and int(lo) // 2 > (int(hi) - 1) // 2:
        _bad_setting(name, value, "a range holding an odd kernel size")
    return (int(lo), int(hi)) if whole else (lo, hi)


def _bad_setting(name: str, value: Any, expected: str) -> NoReturn:
    def show(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else repr(v)

    shown = ("-".join(show(v) for v in value) if isinstance(value, (tuple, list))
             else show(value))
    raise LiifError(f"bad degradation setting {name}={shown}: expected {expected}")


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


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_VALUE = re.compile(rf"^{_NUMBER}(?:-{_NUMBER})?$")


def parse_training_spec(text: str) -> DegradationConfig | None:
    """`--degradation`: 'none' -> None; 'real' -> the default ranges; 'real:KEY=VALUE,...'
    overrides some, a range as LO-HI (e.g. real:jpeg_quality=50-95,second_pass_prob=0)."""
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name == "none" and not rest:
        return None
    if name != "real":
        raise LiifError(f"bad --degradation {text!r}: expected none, real or "
                        "real:KEY=VALUE,... (e.g. real:jpeg_quality=50-95)")
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        match = _VALUE.match(value)
        if not eq or not match:
            raise LiifError(f"bad --degradation setting {item!r}: expected KEY=NUMBER or "
                            "KEY=LO-HI (e.g. jpeg_quality=50-95)")
        lo, hi = match.groups()
        if key.endswith("_prob"):
            if hi is not None:
                raise LiifError(f"bad --degradation setting {item!r}: {key} is a probability, "
                                "not a range")
            overrides[key] = float(lo)
        else:
            overrides[key] = (float(lo), float(hi if hi is not None else lo))
    return DegradationConfig.from_dict(overrides)


# --------------------------------------------------------------------------- benchmark specs


@dataclass(frozen=True)
class DegradeStep:
    """One fixed step of a benchmark degradation: blur (sigma, px), noise (Gaussian sigma,
    8-bit levels) or jpeg (quality)."""

    kind: str
    value: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"

    def apply(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.kind == "blur":
            return blur(img, gaussian_kernel(kernel_size_for(self.value), self.value))
        if self.kind == "noise":
            return gaussian_noise(img, self.value, g)
        return jpeg(img, int(self.value))


@dataclass(frozen=True)
class DegradeSpec:
    """A fixed chain of degradations (`liif bench --degrade blur:1+noise:5+jpeg:75`), applied
    in the order written."""

    steps: tuple[DegradeStep, ...]

    def __str__(self) -> str:
        return "+".join(str(step) for step in self.steps)

    def apply(self, img: np.ndarray, seed: int) -> np.ndarray:
        """The chain on a uint8 (H, W, 3) image; noise comes from `seed` (see image_seed)."""
        g = torch.Generator().manual_seed(seed)
        out = to_float(img)
        for step in self.steps:
            out = step.apply(out, g)
        return to_uint8(out)


_SPEC_HELP = "use jpeg:QUALITY, noise:SIGMA or blur:SIGMA, several joined with +"


def parse_spec(text: str) -> DegradeSpec:
    """'jpeg:75', 'noise:5', 'blur:1.5' or a chain such as 'blur:1+jpeg:75'; LiifError (one
    line) for anything else."""
    steps = []
    for item in (part.strip() for part in text.split("+")):
        kind, colon, raw = (s.strip().lower() for s in item.partition(":"))
        if kind not in ("jpeg", "noise", "blur"):
            what = f"unknown degradation {item!r}" if item else "an empty step"
            raise LiifError(f"bad --degrade {text!r}: {what} ({_SPEC_HELP})")
        if not colon:
            raise LiifError(f"bad --degrade {text!r}: {kind} needs a value ({_SPEC_HELP})")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if kind == "jpeg" and not (value.is_integer() and 1 <= value <= 100):
            raise LiifError(f"bad --degrade {text!r}: JPEG quality must be a whole number "
                            "from 1 to 100 (e.g. jpeg:75)")
        if kind == "noise" and not 0 <= value <= 255:
            raise LiifError(f"bad --degrade {text!r}: noise sigma must be a number of 8-bit "
                            "levels from 0 to 255 (e.g. noise:5)")
        if kind == "blur" and not 0 < value <= 20:
            raise LiifError(f"bad --degrade {text!r}: blur sigma must be a number of pixels "
                            "above 0 and at most 20 (e.g. blur:1.5)")
        steps.append(DegradeStep(kind, value))
    return DegradeSpec(tuple(steps))


def image_seed(*parts: object) -> int:
    """A seed that depends only on what names an image (set, file, scale): every run, and
    every selection of sets and scales, degrades an image the same way."""
    return zlib.crc32("/".join(str(p) for p in parts).encode())
