"""Metrics: BT.601 luma, shaving, PSNR and SSIM against analytic values and a brute force."""

import math

import numpy as np
import pytest
import torch

from liif_cli.bench.sets import MIN_SCORED_SIDE, shave_for_scale
from liif_cli.metrics import (
    SSIM_K1,
    SSIM_K2,
    SSIM_WINDOW,
    gaussian_window,
    psnr,
    rgb_to_y,
    shave,
    ssim,
    y_psnr,
    y_ssim,
)


def _rgb(r: float, g: float, b: float, size: int = 4) -> torch.Tensor:
    return torch.tensor([r, g, b]).view(3, 1, 1).expand(3, size, size).clone()


# ------------------------------------------------------------------ Y conversion and shave


@pytest.mark.parametrize("rgb, expected", [
    ((0, 0, 0), 16 / 255),
    ((1, 1, 1), 235 / 255),
    ((1, 0, 0), (16 + 65.481) / 255),
    ((0, 1, 0), (16 + 128.553) / 255),
    ((0, 0, 1), (16 + 24.966) / 255),
    ((0.5, 0.25, 0.75), (16 + 65.481 * 0.5 + 128.553 * 0.25 + 24.966 * 0.75) / 255),
])
def test_rgb_to_y_known_values(rgb, expected):
    y = rgb_to_y(_rgb(*rgb))
    assert isinstance(y, torch.Tensor) and y.shape == (4, 4) and y.dtype == torch.float64
    assert torch.allclose(y, torch.full((4, 4), expected, dtype=torch.float64), atol=1e-12)


def test_rgb_to_y_keeps_numpy_and_batch_dims():
    batch = np.random.default_rng(0).random((2, 3, 5, 6))
    y = rgb_to_y(batch)
    assert isinstance(y, np.ndarray) and y.shape == (2, 5, 6)
    expected = (16 + 65.481 * batch[:, 0] + 128.553 * batch[:, 1] + 24.966 * batch[:, 2]) / 255
    np.testing.assert_allclose(y, expected, atol=1e-12)
    with pytest.raises(ValueError):
        rgb_to_y(np.zeros((4, 5, 6)))


def test_shave():
    img = torch.arange(3 * 10 * 12).view(3, 10, 12)
    out = shave(img, 2)
    assert out.shape == (3, 6, 8)
    assert torch.equal(out, img[:, 2:8, 2:10])
    assert shave(img, 0) is img
    assert shave(np.zeros((10, 12)), 3).shape == (4, 6)
    with pytest.raises(ValueError):
        shave(img, 5)  # nothing would be left of the 10 rows
    with pytest.raises(ValueError):
        shave(img, -1)


@pytest.mark.parametrize("scale, expected", [(2, 2), (4.0, 4), (12, 12), (2.5, 3), (12.5, 13)])
def test_shave_for_scale(scale, expected):
    assert shave_for_scale(scale) == expected


def test_benchmark_sets_leave_ssim_its_window():
    """The benchmark plan (torch-free) refuses images too small for SSIM by this constant."""
    assert MIN_SCORED_SIDE == SSIM_WINDOW


# ------------------------------------------------------------------ PSNR


def test_psnr_identical_is_infinite():
    img = torch.rand(3, 8, 8)
    assert psnr(img, img) == math.inf
    assert y_psnr(img, img, 2) == math.inf


def test_psnr_constant_offset_is_20_db():
    a = torch.full((3, 16, 16), 0.5)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-5)
    assert psnr(a.numpy() * 255, (a.numpy() + 0.1) * 255, data_range=255) == pytest.approx(20.0)


@pytest.mark.parametrize("d", [0.01, 0.05, 0.2])
def test_psnr_of_plus_minus_noise(d):
    rng = np.random.default_rng(1)
    a = rng.random((32, 32))
    noise = d * rng.choice([-1.0, 1.0], size=a.shape)  # every error has magnitude d: MSE = d^2
    assert psnr(a, a + noise) == pytest.approx(-20 * math.log10(d), abs=1e-9)


def test_y_psnr_offset_clamp_and_shave():
    hr = torch.full((3, 20, 20), 0.5)
    # The same offset d on R, G and B moves Y by d * 219 / 255.
    d = 0.1
    assert y_psnr(hr + d, hr) == pytest.approx(-20 * math.log10(d * 219 / 255), abs=1e-4)
    # Values outside [0, 1] are clamped before scoring.
    assert y_psnr(torch.full((3, 20, 20), 1.7), torch.ones(3, 20, 20)) == math.inf
    # Errors confined to the shaved border do not count.
    sr = hr.clone()
    sr[:, :3] = 0.0
    sr[:, :, -3:] = 1.0
    assert y_psnr(sr, hr, 3) == math.inf
    assert y_psnr(sr, hr, 2) < 30
    with pytest.raises(ValueError):
        y_psnr(hr, hr[:, :10])


# ------------------------------------------------------------------ SSIM


def _ssim_brute_force(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Wang et al.'s formula evaluated window by window (11x11 Gaussian, valid windows)."""
    taps = gaussian_window().numpy()
    w = np.outer(taps, taps)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            x, y = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            mx, my = (w * x).sum(), (w * y).sum()
            vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
            cov = (w * (x - mx) * (y - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cov + c2)
                          / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_gaussian_window_matches_fspecial():
    taps = gaussian_window().numpy()
    x = np.arange(-5, 6)
    expected = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    np.testing.assert_allclose(taps, expected / expected.sum(), atol=1e-15)


def test_ssim_identical_is_one():
    img = np.random.default_rng(2).random((20, 24))
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    rgb = torch.rand(3, 30, 30)
    assert y_ssim(rgb, rgb, 4) == pytest.approx(1.0, abs=1e-12)
    assert y_ssim(torch.rand(3, 30, 30), rgb) < 0.5  # unrelated noise


def test_ssim_matches_brute_force():
    rng = np.random.default_rng(3)
    a = rng.random((17, 19))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(_ssim_brute_force(a, b), abs=1e-12)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-15)
    # Same value in 8-bit units with the matching data range.
    assert ssim(a * 255, b * 255, data_range=255) == pytest.approx(ssim(a, b), abs=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    m, c = 0.4, 0.1
    c1 = (SSIM_K1 * 1.0) ** 2
    a = np.full((15, 15), m)
    expected = (2 * m * (m + c) + c1) / (m ** 2 + (m + c) ** 2 + c1)
    assert ssim(a, a + c) == pytest.approx(expected, abs=1e-12)


def test_ssim_of_shifted_texture_keeps_only_the_luminance_term():
    # b = a + c leaves variances and covariance unchanged, so each window's contrast-structure
    # term is exactly 1 and SSIM is the mean luminance term: below 1, above the constant case.
    rng = np.random.default_rng(4)
    a = 0.3 + 0.2 * rng.random((16, 16))
    c = 0.2
    value = ssim(a, a + c)
    assert value == pytest.approx(_ssim_brute_force(a, a + c), abs=1e-12)
    c1 = (SSIM_K1 * 1.0) ** 2
    lum = [(2 * m * (m + c) + c1) / (m ** 2 + (m + c) ** 2 + c1) for m in (0.3, 0.5)]
    assert min(lum) - 1e-9 <= value <= max(lum) + 1e-9 < 1


def test_ssim_rejects_small_or_mismatched_images():
    with pytest.raises(ValueError):
        ssim(np.zeros((10, 30)), np.zeros((10, 30)))
    with pytest.raises(ValueError):
        ssim(np.zeros((20, 20)), np.zeros((20, 21)))


def test_y_ssim_uses_y_channel_and_averages_channels_for_3d_input():
    rng = np.random.default_rng(5)
    hr = rng.random((3, 24, 24))
    sr = np.clip(hr + 0.05 * rng.standard_normal(hr.shape), 0, 1)
    expected = ssim(shave(rgb_to_y(sr), 2), shave(rgb_to_y(hr), 2))
    assert y_ssim(sr, hr, 2) == pytest.approx(expected, abs=1e-15)
    per_channel = np.mean([ssim(sr[i], hr[i]) for i in range(3)])
    assert ssim(sr, hr) == pytest.approx(per_channel, abs=1e-12)
