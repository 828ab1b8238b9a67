"""Tests for liif_cli.degrade and liif_cli.degrade_settings: each degradation alone, the seeded
training chain, the settings and specs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from liif_cli import degrade
from liif_cli.degrade import apply_spec
from liif_cli.degrade_settings import (
    DegradationConfig,
    image_seed,
    parse_spec,
    parse_training_spec,
)
from liif_cli.errors import LiifError

pytestmark = pytest.mark.usefixtures("one_thread")

# Only the step under test: every other probability 0, one pass.
OFF = dict(second_pass_prob=0.0, blur_prob=0.0, resize_prob=0.0, noise_prob=0.0, jpeg_prob=0.0)


def _textured(h: int = 48, w: int = 48, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus fine detail: what JPEG and blur visibly change."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.int16)
    detail = rng.integers(-40, 41, (h, w, 3))
    return np.clip(smooth + detail, 0, 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) - b.astype(np.float64)


# --------------------------------------------------------------------------- blur


def test_gaussian_kernels_sum_to_one_and_have_their_shape() -> None:
    for size, sx, sy, theta in ((1, 1.0, None, 0.0), (3, 0.2, None, 0.0), (7, 1.5, None, 0.0),
                                (11, 3.0, 0.4, 0.7), (21, 0.3, 2.0, 2.5)):
        k = degrade.gaussian_kernel(size, sx, sy, theta)
        assert k.shape == (size, size) and k.dtype == torch.float32
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
        assert bool((k >= 0).all()) and float(k.max()) == float(k[size // 2, size // 2])
        assert torch.allclose(k, k.flip(0).flip(1))  # centred: no shift of the image
    iso = degrade.gaussian_kernel(21, 2.0)
    assert torch.allclose(iso, iso.t()) and torch.allclose(iso, iso.flip(0))
    # The spread is the requested sigma: variance along each axis ~ sigma^2.
    ax = torch.arange(21, dtype=torch.float32) - 10
    assert float((iso.sum(0) * ax ** 2).sum()) == pytest.approx(4.0, rel=1e-3)
    wide = degrade.gaussian_kernel(21, 3.0, 1.0)  # theta 0: sigma_x along the columns
    assert float((wide.sum(0) * ax ** 2).sum()) == pytest.approx(9.0, rel=0.02)
    assert float((wide.sum(1) * ax ** 2).sum()) == pytest.approx(1.0, rel=0.02)
    # A quarter turn swaps the axes.
    assert torch.allclose(degrade.gaussian_kernel(21, 3.0, 1.0, math.pi / 2), wide.t(), atol=1e-7)
    with pytest.raises(ValueError):
        degrade.gaussian_kernel(4, 1.0)


def test_random_kernels_have_odd_sizes_in_range_and_sum_to_one() -> None:
    config = DegradationConfig(blur_size=(4, 9), anisotropic_prob=0.5)
    sizes, shapes = set(), set()
    for seed in range(60):
        k = degrade.random_kernel(config, degrade._Random(seed))
        sizes.add(k.shape[0])
        shapes.add(bool(torch.allclose(k, k.t())))  # anisotropic ones are not symmetric
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert sizes == {5, 7, 9} and shapes == {True, False}


def test_blur_keeps_flat_areas_and_softens_detail() -> None:
    flat = torch.full((3, 10, 12), 0.4)
    assert torch.allclose(degrade.blur(flat, degrade.gaussian_kernel(11, 2.0)), flat, atol=1e-6)
    img = degrade.to_float(_textured())
    out = degrade.blur(img, degrade.gaussian_kernel(7, 1.5))
    assert out.shape == img.shape
    detail = (img[:, :, 1:] - img[:, :, :-1]).abs().mean()
    assert (out[:, :, 1:] - out[:, :, :-1]).abs().mean() < 0.5 * detail
    # A kernel larger than the image still works (borders are replicated).
    assert degrade.blur(img[:, :4, :4], degrade.gaussian_kernel(11, 2.0)).shape == (3, 4, 4)


# --------------------------------------------------------------------------- JPEG


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_codec_lowers_quality_and_is_reproducible(codec: str) -> None:
    clean = _textured(64, 64)
    img = degrade.to_float(clean)
    round_trip = getattr(degrade, codec)
    low = degrade.to_uint8(round_trip(img, 30))
    high = degrade.to_uint8(round_trip(img, 95))
    assert low.shape == clean.shape and low.dtype == np.uint8
    assert _psnr(low, clean) < _psnr(high, clean) < math.inf
    assert _psnr(low, clean) < 35
    assert np.array_equal(low, degrade.to_uint8(round_trip(img, 30)))  # no randomness
    spec = parse_spec(f"{codec}:30")
    assert np.array_equal(apply_spec(spec, clean, seed=1), low)
    assert np.array_equal(apply_spec(spec, clean, seed=2), low)
    other = degrade.webp if codec == "jpeg" else degrade.jpeg
    assert not np.array_equal(low, degrade.to_uint8(other(img, 30)))


def test_training_chain_with_jpeg_alone_is_the_jpeg_round_trip() -> None:
    clean = _textured(64, 64)
    only = DegradationConfig(**{**OFF, "jpeg_prob": 1.0, "jpeg_quality": (30, 30)})
    expected = degrade.to_uint8(degrade.jpeg(degrade.to_float(clean), 30))
    assert np.array_equal(degrade.degrade(clean, only, seed=5), expected)


# --------------------------------------------------------------------------- noise


def test_gaussian_noise_has_the_requested_sigma() -> None:
    grey = np.full((96, 96, 3), 128, np.uint8)
    spec = parse_spec("noise:5")
    noisy = apply_spec(spec, grey, seed=3)
    d = _diff(noisy, grey)
    assert d.std() == pytest.approx(5.0, abs=0.15) and abs(d.mean()) < 0.15
    # Colour noise: independent channels.
    assert abs(np.corrcoef(d[..., 0].ravel(), d[..., 1].ravel())[0, 1]) < 0.05
    assert np.array_equal(apply_spec(spec, grey, seed=3), noisy)
    assert not np.array_equal(apply_spec(spec, grey, seed=4), noisy)
    assert np.array_equal(apply_spec(parse_spec("noise:0"), grey, seed=3), grey)

    g = torch.Generator().manual_seed(0)
    mono = degrade.to_uint8(degrade.gaussian_noise(degrade.to_float(grey), 10, g, gray=True))
    d = _diff(mono, grey)
    assert d.std() == pytest.approx(10.0, rel=0.05)
    assert np.array_equal(d[..., 0], d[..., 1]) and np.array_equal(d[..., 1], d[..., 2])


def test_poisson_noise_grows_with_brightness() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.cat([torch.full((3, 64, 32), 0.5), torch.full((3, 64, 32), 0.05)], dim=2)
    d = (degrade.poisson_noise(img, 1.0, g) - img) * 255
    # Shot noise of 255 photons at white: std sqrt(255 x) levels at intensity x.
    assert float(d[:, :, :32].std()) == pytest.approx(math.sqrt(255 * 0.5), rel=0.05)
    assert float(d[:, :, 32:].std()) == pytest.approx(math.sqrt(255 * 0.05), rel=0.08)
    half = (degrade.poisson_noise(img, 0.5, torch.Generator().manual_seed(0)) - img) * 255
    assert float(half[:, :, :32].std()) == pytest.approx(0.5 * float(d[:, :, :32].std()),
                                                         rel=1e-4)
    gray = degrade.poisson_noise(img, 1.0, g, gray=True) - img
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


# --------------------------------------------------------------------------- the chain


def test_chain_is_the_same_for_a_seed_and_different_for_another() -> None:
    lr = _textured()
    config = DegradationConfig()
    a = degrade.degrade(lr, config, seed=7)
    assert a.shape == lr.shape and a.dtype == np.uint8
    assert np.array_equal(a, degrade.degrade(lr.copy(), config, seed=7))
    outputs = [degrade.degrade(lr, config, seed=s) for s in range(8)]
    assert all(not np.array_equal(x, y) for i, x in enumerate(outputs) for y in outputs[i + 1:])
    assert all(_psnr(x, lr) < 45 for x in outputs)  # every one of them degraded
    assert np.array_equal(lr, _textured())  # the input is left alone


def test_chain_with_every_step_off_is_the_identity_and_sizes_come_back() -> None:
    lr = _textured(20, 30)
    assert np.array_equal(degrade.degrade(lr, DegradationConfig(**OFF), seed=1), lr)
    shrink = DegradationConfig(**{**OFF, "resize_prob": 1.0, "resize_scale": (0.5, 0.5)})
    out = degrade.degrade(lr, shrink, seed=1)
    assert out.shape == lr.shape and not np.array_equal(out, lr)
    # Noise alone at a fixed sigma: that sigma.
    grey = np.full((64, 64, 3), 100, np.uint8)
    noisy = DegradationConfig(**{**OFF, "noise_prob": 1.0, "poisson_prob": 0.0,
                                 "gray_noise_prob": 0.0, "noise_sigma": (8.0, 8.0)})
    assert _diff(degrade.degrade(grey, noisy, seed=2), grey).std() == pytest.approx(8, rel=0.05)


def test_tiny_crops_survive_the_chain() -> None:
    lr = _textured(8, 8)
    heavy = DegradationConfig(second_pass_prob=1.0, blur_prob=1.0, resize_prob=1.0,
                              noise_prob=1.0, jpeg_prob=1.0, resize_scale=(0.1, 0.2))
    for seed in range(5):
        assert degrade.degrade(lr, heavy, seed).shape == (8, 8, 3)


# --------------------------------------------------------------------------- configs and specs


def test_degradation_config_round_trips_and_rejects_bad_values() -> None:
    config = DegradationConfig(jpeg_quality=[40, 90], noise_sigma=[2, 10])
    assert config.jpeg_quality == (40, 90) and config.noise_sigma == (2.0, 10.0)
    raw = config.to_dict()
    assert raw["jpeg_quality"] == [40, 90] and raw["blur_prob"] == 0.8
    assert DegradationConfig.from_dict(raw) == config
    assert DegradationConfig.from_dict({}) == DegradationConfig()
    for bad, words in (({"jpeg_quality": (20, 101)}, "jpeg_quality"),
                       ({"jpeg_quality": (30.5, 90)}, "whole numbers"),
                       ({"noise_sigma": (10, 2)}, "lo <= hi"),
                       ({"blur_size": (4, 4)}, "odd"),
                       ({"blur_prob": 1.5}, "probability"),
                       ({"resize_scale": 2.0}, "range"),
                       ({"jpeg_quality": "39"}, "jpeg_quality='39'"),  # not the range 3-9
                       ({"wobble": 1}, "unknown degradation setting 'wobble'")):
        with pytest.raises(LiifError, match=words) as info:
            DegradationConfig.from_dict(bad)
        assert "\n" not in str(info.value)


def test_parse_training_spec() -> None:
    assert parse_training_spec("none") is None
    assert parse_training_spec(" Real ") == DegradationConfig()
    custom = parse_training_spec("real:jpeg_quality=50-90, noise_sigma=4,second_pass_prob=0")
    assert custom == DegradationConfig(jpeg_quality=(50, 90), noise_sigma=(4.0, 4.0),
                                       second_pass_prob=0.0)
    for bad, words in (("bsrgan", "expected none, real"), ("real:jpeg_quality", "KEY=LO-HI"),
                       ("real:blur_prob=0.1-0.2", "probability, not a range"),
                       ("real:jpeg_quality=0-50", "jpeg_quality"),
                       ("real:noise=3", "unknown degradation setting 'noise'")):
        with pytest.raises(LiifError, match=words):
            parse_training_spec(bad)


def test_parse_bench_spec() -> None:
    spec = parse_spec("blur:1.5+noise:5+JPEG:75")
    assert str(spec) == "blur:1.5+noise:5+jpeg:75"
    assert [(s.kind, s.value) for s in spec.steps] == [("blur", 1.5), ("noise", 5.0),
                                                       ("jpeg", 75.0)]
    out = apply_spec(spec, _textured(), seed=0)
    assert out.shape == (48, 48, 3) and np.array_equal(out, apply_spec(spec, _textured(), seed=0))
    for bad, words in (("jpeg:abc", "whole number from 1 to 100"), ("jpeg:0", "1 to 100"),
                       ("jpeg:75.5", "whole number"), ("noise:-1", "noise sigma"),
                       ("blur:0", "blur sigma"), ("wobble:3", "unknown degradation 'wobble:3'"),
                       ("jpeg", "jpeg needs a value"), ("", "empty step"),
                       ("noise:5+", "empty step"), ("noise:nan", "noise sigma"),
                       ("webp:101", "WEBP quality must be a whole number")):
        with pytest.raises(LiifError, match=words) as info:
            parse_spec(bad)
        assert "\n" not in str(info.value) and "--degrade" in str(info.value)
    assert image_seed("Set5", "baby", 4) == image_seed("Set5", "baby", "4")
    assert image_seed("Set5", "baby", 4) != image_seed("Set5", "bird", 4)
