"""Image quality metrics as super-resolution papers report them (pure numpy/torch, no I/O).

Images are RGB in [0, 1], channels first: (3, H, W) (or (..., 3, H, W)), as torch tensors
or numpy arrays. Single-channel images (the Y channel) are (H, W). Scores are computed in
float64 and returned as Python floats.

The benchmark protocol of the LIIF paper (and of EDSR/RDN before it) is what `y_psnr` and
`y_ssim` do: clamp the output to [0, 1], convert both images to the luma channel Y of
ITU-R BT.601 ("studio swing", 16-235), shave `scale` pixels from every border, then score
with a peak value of 1 (255 on 8-bit data). The output is not quantised to 8 bits first,
like the paper's evaluation code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601 luma for RGB in [0, 1], giving Y in [16/255, 235/255] (MATLAB's rgb2ycbcr).
Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
Y_OFFSET = 16.0 / 255.0

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

ArrayLike = Tensor | np.ndarray


def _to_tensor(img: ArrayLike) -> Tensor:
    """A float64 CPU tensor view/copy of a tensor or numpy array."""
    if isinstance(img, np.ndarray):
        return torch.from_numpy(np.asarray(img, dtype=np.float64))
    if isinstance(img, Tensor):
        return img.detach().to("cpu", torch.float64)
    raise TypeError(f"expected a torch tensor or numpy array, got {type(img).__name__}")


def _like_input(result: Tensor, original: ArrayLike) -> ArrayLike:
    """Return `result` as numpy if the caller passed numpy, else as a tensor."""
    return result.numpy() if isinstance(original, np.ndarray) else result


def rgb_to_y(img: ArrayLike) -> ArrayLike:
    """Luma Y (ITU-R BT.601, 16-235) of RGB in [0, 1]: (..., 3, H, W) -> (..., H, W).

    Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, so black -> 16/255, white -> 235/255.
    Returns float64, as numpy if given numpy, else as a tensor.
    """
    x = _to_tensor(img)
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected an RGB image shaped (..., 3, H, W), got {tuple(x.shape)}")
    r, g, b = x.unbind(-3)
    y = Y_OFFSET + Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b
    return _like_input(y, img)


def shave(img: ArrayLike, n: int) -> ArrayLike:
    """Drop `n` pixels from every border of the last two (H, W) dimensions."""
    if n < 0 or int(n) != n:
        raise ValueError(f"shave must be a non-negative integer, got {n!r}")
    n = int(n)
    if n == 0:
        return img
    h, w = img.shape[-2], img.shape[-1]
    if 2 * n >= h or 2 * n >= w:
        raise ValueError(f"cannot shave {n} pixels from each border of a {w}x{h} image")
    return img[..., n:h - n, n:w - n]


def psnr(a: ArrayLike, b: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements; inf for identical images."""
    x, y = _to_tensor(a), _to_tensor(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = float(torch.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range ** 2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 1-D Gaussian taps (float64); the 2-D window is their outer product,
    the same as MATLAB's fspecial('gaussian', size, sigma)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return taps / taps.sum()


def ssim(a: ArrayLike, b: ArrayLike, data_range: float = 1.0) -> float:
    """Mean structural similarity (Wang, Bovik, Sheikh & Simoncelli, 2004).

    The standard parameters: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
    K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2 with L = `data_range`, population (not sample)
    statistics, and only windows that lie wholly inside the image ("valid"), averaged.
    This is Wang's MATLAB `ssim_index.m` (no automatic downsampling), BasicSR's
    `calculate_ssim`, and skimage's `structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`.

    `a` and `b` are (H, W) single-channel images (the Y channel for SR benchmarks); for
    (C, H, W) the per-channel SSIMs are averaged.
    """
    x, y = _to_tensor(a), _to_tensor(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() == 2:
        x, y = x[None], y[None]
    if x.dim() != 3:
        raise ValueError(f"expected an (H, W) or (C, H, W) image, got {tuple(x.shape)}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
                         f"got {x.shape[-1]}x{x.shape[-2]}")
    x, y = x[:, None], y[:, None]  # (C, 1, H, W): channels as a batch
    taps = gaussian_window()
    col, row = taps.view(1, 1, -1, 1), taps.view(1, 1, 1, -1)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian, valid region only
        return F.conv2d(F.conv2d(t, col), row)

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return float((num / den).mean())


def _prepare_y(sr: ArrayLike, hr: ArrayLike, border: int) -> tuple[Tensor, Tensor]:
    """Clamp both RGB images to [0, 1], take Y, shave `border` pixels."""
    x, y = _to_tensor(sr).clamp(0, 1), _to_tensor(hr).clamp(0, 1)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return shave(rgb_to_y(x), border), shave(rgb_to_y(y), border)


def y_psnr(sr: ArrayLike, hr: ArrayLike, shave: int = 0) -> float:
    """PSNR on the BT.601 Y channel after clamping to [0, 1] and shaving `shave` pixels
    from each border (peak 1.0): the benchmark PSNR of the LIIF/EDSR/RDN papers."""
    x, y = _prepare_y(sr, hr, shave)
    return psnr(x, y, data_range=1.0)


def y_ssim(sr: ArrayLike, hr: ArrayLike, shave: int = 0) -> float:
    """SSIM (see `ssim`) on the BT.601 Y channel after clamping and shaving, like `y_psnr`."""
    x, y = _prepare_y(sr, hr, shave)
    return ssim(x, y, data_range=1.0)
