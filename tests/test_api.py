"""Tests for liif_cli.api (the Upscaler on PIL images and numpy arrays) and liif_cli.sizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from liif_cli import api, checkpoint, engine
from liif_cli.api import AutoUpscaler, Upscaler
from liif_cli.errors import ArgumentError, LiifError, OutOfMemory
from liif_cli.images import Layout, Picture, StoredPicture, store
from liif_cli.model import ModelSpec, build_model
from liif_cli.sizing import (
    MIN_TILE,
    centre_crop_box,
    check_max_pixels,
    check_scale,
    fit_size,
    parse_size,
    target_size,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    spec = ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16, 16])
    return build_model(spec).eval()


@pytest.fixture(scope="module")
def upscaler(model):
    # min_side=0: these tiny test images go to the engine as they are, so results can be
    # compared with a plain render (edge padding of tiny inputs is tested on its own below).
    # Tiling itself is tested in test_engine (the API refuses tiles under MIN_TILE).
    return Upscaler(model, device="cpu", precision="fp32", tile=MIN_TILE, chunk=50, min_side=0)


RNG = np.random.default_rng(42)
H, W = 5, 7


def rgb8(h: int = H, w: int = W) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def model_rgb(model, rgb01: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What the engine makes of float RGB (H, W, 3) at size (H', W'): (H', W', 3) float."""
    image = torch.from_numpy(np.ascontiguousarray(rgb01.transpose(2, 0, 1), dtype=np.float32))
    return engine.render(model, image, size, tile=0).permute(1, 2, 0).numpy()


def pil_resize(plane01: np.ndarray, size: tuple[int, int], method) -> np.ndarray:
    """A float plane resampled with a PIL filter at size (H', W'), clipped to [0, 1]."""
    image = Image.fromarray(plane01.astype(np.float32), mode="F")
    return np.clip(np.asarray(image.resize((size[1], size[0]), method)), 0, 1)


def to8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)


def to16(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 1) * 65535).astype(np.uint16)


# --------------------------------------------------------------------------- PIL images


def test_pil_rgb_goes_through_the_model(model, upscaler):
    pixels = rgb8()
    out = upscaler.upscale(Image.fromarray(pixels), scale=2.2)
    assert out.mode == "RGB"
    assert out.size == (15, 11)  # (round(7 * 2.2), round(5 * 2.2)) as (width, height)
    expected = to8(model_rgb(model, pixels / np.float32(255), (11, 15)))
    assert np.array_equal(np.asarray(out), expected)


def test_pil_rgba_keeps_resampled_alpha(model, upscaler):
    pixels = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    pixels[..., 3] = np.linspace(0, 255, W, dtype=np.uint8)[None, :]  # a gradient of alpha
    out = upscaler.upscale(Image.fromarray(pixels), size=(16, 9))
    assert out.mode == "RGBA" and out.size == (16, 9)
    got = np.asarray(out)
    # The first column is fully transparent: each pixel's hidden colour gives way to the mean
    # of its visible neighbours (the second column's, one row up to one row down).
    visible = pixels[..., :3] / np.float32(255)
    for row in range(H):
        visible[row, 0] = visible[max(row - 1, 0):row + 2, 1].mean(axis=0)
    colour = to8(model_rgb(model, visible, (9, 16)))
    assert np.array_equal(got[..., :3], colour)
    alpha = to8(pil_resize(pixels[..., 3] / np.float32(255), (9, 16), Image.Resampling.BICUBIC))
    assert np.array_equal(got[..., 3], alpha)
    assert got[..., 3].min() < 30 and got[..., 3].max() > 225  # the gradient survived


def test_visible_colours_replace_hidden_ones_nearest_first():
    """Fully transparent pixels take the mean visible colour of the smallest window (3, 5,
    9, 17, 33 px a side) holding any, window by window outwards: up to 31 px from a visible
    one. Visible pixels and pixels beyond reach keep theirs."""
    rgba = np.zeros((3, 40, 4), np.uint8)
    rgba[:, :2] = (255, 0, 0, 255)  # a visible red strip, 2 px wide
    rgba[1, 1, 3] = 128  # half transparent: visible, keeps its colour
    rgba[:, 2:, 2] = 255  # hidden blue everywhere else
    picture = Picture.from_array(rgba)
    got = api.visible_colours(picture)
    np.testing.assert_array_equal(got[:, :2], picture.rgb[:, :2])
    np.testing.assert_array_equal(got[:, 2:33], np.broadcast_to([1, 0, 0], (3, 31, 3)))
    np.testing.assert_array_equal(got[:, 33:], picture.rgb[:, 33:])  # past 31 px: untouched
    opaque = Picture.from_array(rgba[..., :3])
    assert api.visible_colours(opaque) is opaque.rgb


@pytest.mark.parametrize("size", [(12, 16), (3, 4)])  # the model, and a Lanczos downscale
def test_hidden_colours_do_not_reach_the_output(upscaler, size):
    """Two images alike but for the colour under their transparent half give the same
    output: no fringe of the hidden colour along the visible edge."""
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[:, :4] = (200, 30, 10, 255)
    black, blue = rgba.copy(), rgba.copy()
    blue[:, 4:, 2] = 255
    outputs = [upscaler.upscale(Image.fromarray(x, "RGBA"), size=size[::-1]) for x in (black, blue)]
    a, b = (np.asarray(out) for out in outputs)
    np.testing.assert_array_equal(a, b)


def test_pil_l_stays_grayscale(model, upscaler):
    gray = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    out = upscaler.upscale(Image.fromarray(gray), scale=3)
    assert out.mode == "L" and out.size == (21, 15)
    rgb = model_rgb(model, np.repeat(gray[..., None] / np.float32(255), 3, axis=2), (15, 21))
    # Gray as a file written by the CLI stores it: the mean of R, G and B (not Pillow's luma).
    assert np.abs(np.asarray(out).astype(float) - rgb.mean(axis=-1) * 255).max() <= 0.5 + 1e-3
    assert np.array_equal(np.asarray(out), upscaler.upscale(gray, scale=3))


def test_pil_la_keeps_alpha_and_grayscale(upscaler):
    la = Image.fromarray(RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)).convert("LA")
    out = upscaler.upscale(la, scale=2)
    assert out.mode == "LA" and out.size == (14, 10)
    assert np.array_equal(np.asarray(out), upscaler.upscale(np.asarray(la), scale=2))


def test_pil_i16_in_either_byte_order_keeps_its_mode(upscaler):
    gray = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    little = Image.fromarray(gray)
    big = Image.frombuffer("I;16B", (W, H), gray.astype(">u2").tobytes(), "raw", "I;16B", 0, 1)
    assert np.array_equal(np.asarray(big), gray)
    out_little, out_big = (upscaler.upscale(im, scale=2) for im in (little, big))
    assert out_big.mode == "I;16B"
    assert np.array_equal(np.asarray(out_big), np.asarray(out_little))


def test_pil_icc_profile_is_carried_where_it_fits(upscaler):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.fromarray(rgb8())
    image.info["icc_profile"] = srgb
    assert upscaler.upscale(image, scale=2).info.get("icc_profile") == srgb
    gray = image.convert("L")
    gray.info["icc_profile"] = srgb  # an RGB profile cannot describe gray pixels
    assert "icc_profile" not in upscaler.upscale(gray, scale=2).info


@pytest.mark.parametrize("image", [np.zeros((4, 4, 3), np.uint8), Image.new("RGB", (4, 4)),
                                   Image.new("L", (4, 4))])
def test_a_result_too_large_for_memory_is_out_of_memory(upscaler, image, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError  # what numpy and Pillow raise for an allocation that cannot be made

    monkeypatch.setattr(api, "StoredPicture", no_memory)  # a real one could be served lazily
    with pytest.raises(OutOfMemory, match=r"200000x100000 result \(20,000.0 MP\)"):
        upscaler.upscale(image, size=(200_000, 100_000))


def test_auto_upscaler_refuses_an_unknown_option_at_once():
    with pytest.raises(TypeError, match="tiles"):
        AutoUpscaler(device="cpu", tiles=64)


def test_render_rgb_refuses_8_bit_pixels(upscaler):
    with pytest.raises(TypeError, match="divide by 255"):
        upscaler.render_rgb(rgb8(), (10, 14))
    with pytest.raises(ArgumentError, match=r"\(H, W, 3\)"):
        upscaler.render_rgb(np.zeros((H, W), np.float32), (10, 14))


def test_pil_i16_keeps_16_bits(model, upscaler):
    gray = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    image = Image.fromarray(gray)
    assert image.mode == "I;16"
    out = upscaler.upscale(image, scale=2)
    assert out.mode == "I;16" and out.size == (14, 10)
    got = np.asarray(out)
    assert got.dtype == np.uint16
    rgb = model_rgb(model, np.repeat(gray[..., None] / np.float32(65535), 3, axis=2), (10, 14))
    assert np.abs(got.astype(np.int64) - to16(rgb.mean(axis=-1)).astype(np.int64)).max() <= 1
    assert (got % 257 != 0).mean() > 0.9  # not 8-bit values stretched to 16 bits


def test_pil_float_and_int32_gray_keep_mode_and_values(model, upscaler):
    gray = RNG.random((H, W)).astype(np.float32)
    rgb = model_rgb(model, np.repeat(gray[..., None], 3, axis=2), (10, 14)).mean(axis=-1)
    out = upscaler.upscale(Image.fromarray(gray, mode="F"), scale=2)
    assert out.mode == "F" and out.size == (14, 10)
    assert np.abs(np.asarray(out) - rgb).max() < 1e-4  # 16-bit gray inside: 1/65535 steps
    deep = np.rint(gray * 65535).astype(np.int32)
    out = upscaler.upscale(Image.fromarray(deep), scale=2)
    assert out.mode == "I" and np.abs(np.asarray(out) - to16(rgb).astype(np.int64)).max() <= 1


def test_pil_float_outside_unit_range_is_refused(upscaler):
    with pytest.raises(LiifError, match=r"outside \[0, 1\]"):
        upscaler.upscale(Image.fromarray(np.full((H, W), 255.0, np.float32), mode="F"), scale=2)


@pytest.mark.parametrize(("mode", "expected"), [("P", "RGB"), ("CMYK", "RGB"),
                                                ("YCbCr", "RGB"), ("1", "L")])
def test_pil_other_modes_come_back_as_written_to_files(upscaler, mode, expected):
    image = Image.fromarray(rgb8()).convert(mode)
    out = upscaler.upscale(image, scale=2)
    assert out.mode == expected and out.size == (14, 10)
    # The same colours as the image converted first (a palette image is not darkened).
    first = upscaler.upscale(image.convert(expected), scale=2)
    assert np.array_equal(np.asarray(out), np.asarray(first))


# --------------------------------------------------------------------------- numpy arrays


@pytest.mark.parametrize("shape", [(H, W), (H, W, 1), (H, W, 2), (H, W, 3), (H, W, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_numpy_keeps_dtype_and_channels(upscaler, shape, dtype):
    if np.issubdtype(dtype, np.integer):
        array = RNG.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    else:
        array = RNG.random(shape).astype(dtype)
    out = upscaler.upscale(array, scale=2)
    assert out.dtype == dtype
    assert out.shape == (10, 14, *shape[2:])
    if np.issubdtype(dtype, np.floating):
        assert out.min() >= 0 and out.max() <= 1


def test_numpy_values(model, upscaler):
    pixels = rgb8()
    out = upscaler.upscale(pixels, size=(20, 8))  # (width, height)
    assert out.shape == (8, 20, 3)
    assert np.array_equal(out, to8(model_rgb(model, pixels / np.float32(255), (8, 20))))
    as_float = upscaler.upscale(pixels / 255.0, size=(20, 8))
    assert as_float.dtype == np.float64
    np.testing.assert_allclose(as_float, model_rgb(model, pixels / np.float32(255), (8, 20)),
                               atol=1e-6)
    deep = upscaler.upscale(pixels.astype(np.uint16) * 257, size=(20, 8))
    assert deep.dtype == np.uint16
    assert np.abs(deep.astype(np.int64) // 257 - out.astype(np.int64)).max() <= 1


def test_numpy_alpha_is_resampled_not_dropped(upscaler):
    pixels = RNG.random((H, W, 4)).astype(np.float32)
    pixels[..., 3] = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    out = upscaler.upscale(pixels, scale=2)
    expected = pil_resize(pixels[..., 3], (10, 14), Image.Resampling.BICUBIC)
    np.testing.assert_allclose(out[..., 3], expected, atol=1e-6)
    assert out[..., 3].min() < 0.05 and out[..., 3].max() > 0.95


def test_size_and_scale_rounding(upscaler):
    pixels = rgb8(3, 7)
    assert upscaler.upscale(pixels, scale=1.5).shape[:2] == (5, 11)  # 4.5, 10.5: half up
    assert upscaler.upscale(pixels, scale=1.3).shape[:2] == (4, 9)  # 3.9, 9.1
    assert upscaler.upscale(pixels, size=(1, 13)).shape[:2] == (13, 1)
    with pytest.raises(LiifError):
        upscaler.upscale(pixels)  # neither scale nor size
    with pytest.raises(LiifError):
        upscaler.upscale(pixels, scale=2, size=(10, 10))
    with pytest.raises(LiifError):
        upscaler.upscale(pixels, scale=0)


# --------------------------------------------------------------------------- downscaling


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model must not run when downscaling")

    monkeypatch.setattr(api, "render_tiles", refuse)


def test_downscale_uses_lanczos_without_the_model(upscaler, no_model):
    pixels = RNG.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    calls = []
    out = upscaler.upscale(Image.fromarray(pixels), scale=0.5,
                           progress=lambda done, total: calls.append((done, total)))
    assert out.mode == "RGBA" and out.size == (8, 6)
    got = np.asarray(out)
    lanczos = np.stack([to8(pil_resize(pixels[..., c] / np.float32(255), (6, 8),
                                       Image.Resampling.LANCZOS)) for c in range(4)], axis=-1)
    bicubic = np.stack([to8(pil_resize(pixels[..., c] / np.float32(255), (6, 8),
                                       Image.Resampling.BICUBIC)) for c in range(4)], axis=-1)
    assert not np.array_equal(lanczos, bicubic)  # the check below can tell them apart
    assert np.array_equal(got, lanczos)
    assert calls == [(48, 48)]  # output pixels: all of them at once


def test_same_size_and_one_axis_shrinks_skip_the_model(upscaler, no_model):
    pixels = rgb8()
    assert np.array_equal(upscaler.upscale(pixels, scale=1), pixels)
    assert upscaler.upscale(pixels, size=(W, H - 2)).shape == (H - 2, W, 3)


def test_growing_along_one_axis_uses_the_model(model, upscaler):
    pixels = rgb8()
    out = upscaler.upscale(pixels, size=(W + 3, H - 2))
    assert np.array_equal(out, to8(model_rgb(model, pixels / np.float32(255), (H - 2, W + 3))))


# --------------------------------------------------------------- rendering into stored depth


def quantised_reference(model, picture, size, layout, tile, chunk):
    """What the float path wrote for `picture` at (H', W') `size`: the float32 reference
    render (engine.render, tiled as the Upscaler tiles), alpha resized by Pillow as a whole
    float plane, gray as the mean of R, G and B, each rounded to nearest by hand."""
    colours = api.visible_colours(picture)  # hidden colours under alpha 0 replaced
    image = torch.from_numpy(np.ascontiguousarray(colours.transpose(2, 0, 1)))
    rgb = engine.render(model, image, size, tile=tile, chunk=chunk).permute(1, 2, 0).numpy()
    planes = [rgb.mean(axis=2, keepdims=True) if layout.gray else rgb]
    if layout.alpha:
        planes.append(pil_resize(picture.alpha, size, Image.Resampling.BICUBIC)[..., None])
    top = 65535 if layout.depth == 16 else 255
    values = np.rint(np.clip(np.concatenate(planes, axis=2), 0, 1) * np.float32(top))
    return values.astype(np.uint16 if layout.depth == 16 else np.uint8)


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize(("gray", "alpha"), [(False, False), (False, True), (True, False),
                                             (True, True)])
# x2.3 (3 x 2 tiles), and stretches that shrink the width or the height
@pytest.mark.parametrize("size", [(83, 121), (97, 40), (30, 121)])
def test_quantised_tiled_render_equals_quantising_the_float_render(model, depth, gray, alpha,
                                                                   size):
    # 36 x 53 input in tiles of 32: tile boundaries cross the output in both directions;
    # chunks of 50 queries end mid-row.
    pixels = RNG.integers(0, 2**depth, (36, 53, 4), dtype=np.uint16 if depth == 16 else np.uint8)
    pixels[:5, :, 3] = 0  # transparent, opaque and in-between alpha
    pixels[5:12, :, 3] = pixels.max()
    colour = pixels[..., :1] if gray else pixels[..., :3]
    picture = Picture.from_array(np.concatenate([colour, pixels[..., 3:]], axis=2) if alpha
                                 else colour)
    layout = Layout(gray=gray, alpha=alpha, depth=depth)
    upscaler = Upscaler(model, device="cpu", precision="fp32", tile=32, chunk=50)
    expected = quantised_reference(model, picture, size, layout, 32, 50)
    for pillow in (False, True):  # an array, or for 8-bit RGB a PIL image
        out = upscaler.resample_into(picture, StoredPicture(size, layout, pillow=pillow))
        assert out.pixels.dtype == expected.dtype
        np.testing.assert_array_equal(out.pixels, expected)
    # ... and the same as the float Picture the float path returns, stored afterwards
    stored = store(upscaler.resample(picture, size), layout)
    np.testing.assert_array_equal(stored.pixels, expected)


def test_quantised_render_of_a_tiny_padded_input(model):
    """Inputs shorter than MIN_SIDE are edge-padded: the tiles of the padded render land in
    the right place of the stored output."""
    picture = Picture.from_array(RNG.integers(0, 256, (5, 9, 3), dtype=np.uint8))
    upscaler = Upscaler(model, device="cpu", precision="fp32", tile=32, chunk=64)
    layout = Layout(gray=False, alpha=False, depth=8)
    out = upscaler.resample_into(picture, StoredPicture((13, 22), layout))
    np.testing.assert_array_equal(out.pixels, store(upscaler.resample(picture, (13, 22)),
                                                    layout).pixels)


@pytest.mark.parametrize(("in_size", "out_size"), [
    ((7, 9), (30, 41)), ((16, 16), (64, 64)), ((13, 11), (13, 50)), ((13, 11), (50, 11)),
    ((5, 40), (23, 20)), ((40, 9), (20, 23)), ((1, 1), (3, 5)), ((100, 3), (401, 21))])
def test_alpha_in_bands_equals_pillow_resizing_it_whole(monkeypatch, in_size, out_size):
    """Bit for bit: the banded bicubic resize is Pillow's arithmetic, and where the height
    shrinks (Pillow picks its pass order by its own rule) it is Pillow's own resize."""
    plane = RNG.random(in_size, dtype=np.float32)
    plane[RNG.random(in_size) < 0.3] = 1.0
    whole = pil_resize(plane, out_size, Image.Resampling.BICUBIC)
    for band in (1 << 20, 37):  # one band, and bands of a row or two
        monkeypatch.setattr(api, "_ALPHA_BAND", band)
        bands = list(api.resized_bands(plane, out_size))
        assert [rows.start for rows, _ in bands] == sorted({rows.start for rows, _ in bands})
        got = np.concatenate([values for _, values in bands])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, whole)


def test_out_of_memory_names_what_was_being_rendered(model, monkeypatch):
    def exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate "
                           "900000000000 bytes.")

    monkeypatch.setattr(api, "render_tiles", exhausted)
    up = Upscaler(model, device="cpu", tile=64, chunk=512)
    picture = Picture.from_array(rgb8())
    out = StoredPicture((30, 40), Layout(gray=False, alpha=False, depth=8))
    with pytest.raises(OutOfMemory) as excinfo:
        up.resample_into(picture, out, name="out/big.png")
    assert "out of memory rendering out/big.png at 40x30" in str(excinfo.value)
    with pytest.raises(OutOfMemory, match="out of memory rendering 40x30 "):
        up.resample(picture, (30, 40))


# --------------------------------------------------------------------------- tiny inputs


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 4), (3, 10), (5, 7), (15, 16), (2, 3), (7, 9)])
def test_edge_padding_covers_whole_output_pixels(n_in, n_out):
    pad = api.edge_padding(n_in, n_out)
    assert pad >= api.PAD_SMALL and (pad * n_out) % n_in == 0
    assert api.edge_padding(api.MIN_SIDE, n_out) == 0


def test_tiny_input_is_padded_with_exact_geometry(model):
    """The result is exactly the original's region of the edge-padded image rendered at the
    same pixel size."""
    pixels = RNG.random((3, 5, 3), dtype=np.float32)
    size = (10, 7)
    got = Upscaler(model, device="cpu", precision="fp32", tile=0).render_rgb(pixels, size)
    pad_h, pad_w = api.edge_padding(3, 10), api.edge_padding(5, 7)
    padded = np.pad(pixels, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)), mode="edge")
    top, left = pad_h * 10 // 3, pad_w * 7 // 5
    full = model_rgb(model, padded, (10 + 2 * top, 7 + 2 * left))
    assert got.shape == (10, 7, 3)
    np.testing.assert_allclose(got, full[top:top + 10, left:left + 7], atol=1e-5)


def test_ordinary_inputs_are_not_padded(model):
    pixels = RNG.random((api.MIN_SIDE, 20, 3), dtype=np.float32)
    got = Upscaler(model, device="cpu", precision="fp32", tile=0).render_rgb(pixels, (40, 45))
    assert np.array_equal(got, model_rgb(model, pixels, (40, 45)))


@pytest.fixture(scope="module")
def shipped():
    return Upscaler.from_pretrained(device="cpu")


def test_tiny_images_keep_their_colour(shipped):
    """The encoder's zero padding once turned a 1x1 (200, 50, 50) into about (138, 114, 110)."""
    one = np.array([[[200, 50, 50]]], np.uint8)
    out = shipped.upscale(one, scale=4).astype(int)
    assert out.shape == (4, 4, 3)
    assert np.abs(out - one).max() <= 2
    flat = np.full((3, 5, 3), 77, np.uint8)
    assert np.abs(shipped.upscale(flat, size=(7, 10)).astype(int) - 77).max() <= 2


def test_one_pixel_high_gradient_is_like_bicubic(shipped):
    row = np.zeros((1, 64, 3), np.uint8)
    row[0, :, 0], row[0, :, 1], row[0, :, 2] = np.linspace(0, 255, 64), np.linspace(255, 0, 64), 128
    out = shipped.upscale(row, scale=4).astype(np.float32)
    bicubic = np.asarray(Image.fromarray(row).resize((256, 4), Image.Resampling.BICUBIC))
    assert np.abs(out - bicubic).mean() <= 3  # it was about 21 levels off
    # ... and the same as the middle rows of a tall image made of that row
    tall = shipped.upscale(np.repeat(row, 40, axis=0), scale=4).astype(np.float32)[80:84]
    assert np.abs(out - tall).max() <= 2


def test_out_of_memory_is_one_line_naming_what_lowers_memory(model, monkeypatch):
    def exhausted(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                           "not enough memory: you tried to allocate 123456789 bytes.")

    monkeypatch.setattr(api, "render_tiles", exhausted)
    up = Upscaler(model, device="cpu", tile=64, chunk=512)
    with pytest.raises(LiifError) as excinfo:
        up.upscale(rgb8(), size=(300, 200))
    message = str(excinfo.value)
    assert "\n" not in message
    for word in ("out of memory", "300x200", "tile=", "--tile", "64", "chunk=", "512",
                 "--max-pixels"):
        assert word in message
    monkeypatch.setattr(api, "render_tiles", lambda *a, **k: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    with pytest.raises(LiifError, match="out of memory"):
        up.upscale(rgb8(), size=(300, 200))
    monkeypatch.setattr(api, "render_tiles", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # other errors are bugs, not memory problems
        up.upscale(rgb8(), size=(300, 200))


# --------------------------------------------------------------------------- construction


def test_upscaler_options(model):
    up = Upscaler(model, device="auto")
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        assert up.device == torch.device("cpu")
    with pytest.raises(LiifError):
        Upscaler(model, device="cpu", precision="fp16")
    with pytest.raises(LiifError):
        Upscaler(model, device="cpu", precision="int8")
    with pytest.raises(LiifError):
        Upscaler(model, device="warp-drive")
    assert not Upscaler(model.train(), device="cpu").model.training


def test_from_pretrained_path(model, tmp_path):
    path = tmp_path / "w.pth"
    checkpoint.save(checkpoint.to_dict(model, {"note": "tiny"}), path)
    up = Upscaler.from_pretrained(str(path), device="cpu", tile=40)
    assert up.metadata == {"note": "tiny"} and up.tile == 40
    pixels = rgb8()
    assert np.array_equal(up.upscale(pixels, scale=2),
                          Upscaler(model, device="cpu").upscale(pixels, scale=2))
    with pytest.raises(LiifError):
        Upscaler.from_pretrained(str(tmp_path / "missing.pth"))


# --------------------------------------------------------------------------- sizing


@pytest.mark.parametrize("text, expected", [
    ("4000x3000", (3000, 4000)),
    ("1x1", (1, 1)),
    (" 640 X 480 ", (480, 640)),
    ("7×5", (5, 7)),
    ("0010x02", (2, 10)),
    ("0" * 5000 + "7x5", (5, 7)),  # leading zeros do not count towards the length
])
def test_parse_size_good(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "4000", "x3000", "4000x", "0x5", "5x0", "-1x5",
                                  "4.5x3", "4000x3000x2", "4000*3000", "abc", "4000 3000",
                                  "2147483648x1", "1" * 4400 + "x1"])
def test_parse_size_bad(text):
    with pytest.raises(LiifError):
        parse_size(text)


def test_parse_size_none():
    with pytest.raises(LiifError):
        parse_size(None)  # type: ignore[arg-type]


def test_target_size_from_scale():
    assert target_size((100, 200), scale=2) == (200, 400)
    assert target_size((3, 7), scale=1.3) == (4, 9)  # 3.9 -> 4, 9.1 -> 9
    assert target_size((10, 10), scale=0.04) == (1, 1)  # never below one pixel
    assert target_size((1, 1), scale=10.5) == (11, 11)  # half up, not Python's half-even
    assert target_size((7, 5), scale=1.5) == (11, 8)  # 10.5, 7.5
    # 15 x 4.1 and 25 x 2.3 are 61.5 and 57.5, though floating point makes them a hair less
    assert target_size((15, 25), scale=4.1) == (62, 103)  # 61.5, 102.5
    assert target_size((25, 24), scale=2.3) == (58, 55)  # 57.5, 55.2
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(LiifError):
            target_size((10, 10), scale=bad)


def test_target_size_from_width_or_height_keeps_aspect():
    assert target_size((3, 7), width=10) == (4, 10)  # 4.29
    assert target_size((3, 7), height=10) == (10, 23)  # 23.3
    assert target_size((300, 400), width=800) == (600, 800)
    assert target_size((300, 400), height=150) == (150, 200)
    assert target_size((2, 1000), width=10) == (1, 10)  # 0.02 -> at least 1
    assert target_size((3, 5), size=(7, 9)) == (7, 9)
    with pytest.raises(LiifError):
        target_size((3, 5), width=0)
    with pytest.raises(LiifError):
        target_size((3, 5), height=-2)
    with pytest.raises(LiifError):
        target_size((3, 5))
    with pytest.raises(LiifError):
        target_size((3, 5), width=4, height=4)


@pytest.mark.parametrize("in_size, box, fit, expected", [
    ((100, 300), (50, 50), "contain", (17, 50)),  # 16.67
    ((100, 300), (50, 50), "cover", (50, 150)),
    ((100, 300), (50, 50), "stretch", (50, 50)),
    ((3, 7), (10, 10), "contain", (4, 10)),  # 4.29
    ((3, 7), (10, 10), "cover", (10, 23)),  # 23.3
    ((1, 1000), (10, 10), "contain", (1, 10)),  # 0.01 -> at least 1
    ((2, 3), (4, 6), "contain", (4, 6)),  # exact fit
    ((2, 3), (4, 6), "cover", (4, 6)),
    ((3, 3), (10, 10), "contain", (10, 10)),  # square into square: both sides exact
    ((3, 3), (10, 10), "cover", (10, 10)),
    ((7, 3), (10, 10), "contain", (10, 4)),
    ((7, 3), (10, 10), "cover", (23, 10)),
])
def test_fit_size(in_size, box, fit, expected):
    out = fit_size(in_size, box, fit)
    assert out == expected
    if fit == "contain":
        assert out[0] <= box[0] and out[1] <= box[1]
    if fit == "cover":
        assert out[0] >= box[0] and out[1] >= box[1]
    assert out[0] == box[0] or out[1] == box[1]


def test_fit_size_never_leaves_the_box_under_rounding():
    for h in range(1, 40):
        for w in range(1, 40, 3):
            for box in ((10, 17), (33, 5)):
                c = fit_size((h, w), box, "contain")
                v = fit_size((h, w), box, "cover")
                assert 1 <= c[0] <= box[0] and 1 <= c[1] <= box[1]
                assert c[0] == box[0] or c[1] == box[1]
                assert v[0] >= box[0] and v[1] >= box[1]
                assert v[0] == box[0] or v[1] == box[1]
                top, left, bottom, right = centre_crop_box(v, box)
                assert 0 <= top and bottom <= v[0] and 0 <= left and right <= v[1]
                assert (bottom - top, right - left) == box


def test_fit_size_bad_mode():
    with pytest.raises(LiifError, match="fit"):
        fit_size((3, 3), (5, 5), "fill")


def test_check_max_pixels():
    check_max_pixels((100, 100), 10_000)  # exactly at the limit is fine
    check_max_pixels((10**6, 10**6), 0)  # 0 disables the guard
    with pytest.raises(LiifError, match="max-pixels"):
        check_max_pixels((100, 101), 10_000)


def test_check_scale():
    assert check_scale(2.5) == 2.5
    for bad in (0.0, -3.0, float("nan"), float("-inf")):
        with pytest.raises(LiifError):
            check_scale(bad)


def test_auto_upscaler_picks_by_how_the_source_was_stored(tiny_bundle, tmp_path):
    auto = api.AutoUpscaler(device="cpu", precision="fp32")
    named = {name: Upscaler.from_pretrained(name, device="cpu", precision="fp32")
             for name in ("default", "real")}
    pixels = RNG.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg")
    with Image.open(tmp_path / "photo.jpg") as photo:
        out = auto.upscale(photo, scale=2)
        assert np.array_equal(np.asarray(out), np.asarray(named["real"].upscale(photo, scale=2)))
    array_out = auto.upscale(pixels, scale=2)  # arrays count as uncompressed
    assert np.array_equal(array_out, named["default"].upscale(pixels, scale=2))
    assert not np.array_equal(array_out, named["real"].upscale(pixels, scale=2))


def test_auto_upscaler_loads_each_model_when_first_needed(tiny_bundle, tmp_path):
    auto = api.AutoUpscaler(device="cpu", precision="fp32")
    assert auto.upscalers == {}
    pixels = RNG.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    auto.upscale(pixels, scale=2)
    assert set(auto.upscalers) == {"default"}
    Image.fromarray(pixels).save(tmp_path / "photo.jpg")
    with Image.open(tmp_path / "photo.jpg") as photo:
        auto.upscale(photo, scale=2)
    assert set(auto.upscalers) == {"default", "real"}
    assert auto.upscalers["real"].precision == "fp32"


def test_auto_upscaler_rejects_bad_options_before_loading(tiny_bundle):
    with pytest.raises(LiifError, match="fp16 needs a GPU"):
        api.AutoUpscaler(device="cpu", precision="fp16")
    with pytest.raises(LiifError, match="unknown precision"):
        api.AutoUpscaler(device="cpu", precision="fp64")


# --------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(("image", "kwargs", "error", "words"), [
    (RNG.random((20, 24, 3)) * 255, {"scale": 2}, ArgumentError, ["[0, 1]", "divide by 255"]),
    (np.full((4, 4, 3), np.nan), {"scale": 2}, ArgumentError, ["NaN"]),
    (np.zeros((0, 0, 3), np.uint8), {"scale": 2}, ArgumentError, ["empty"]),
    (np.zeros((4, 4, 5), np.uint8), {"scale": 2}, ArgumentError, ["(H, W, 1-4)"]),
    (np.zeros((4, 4, 3), np.int64), {"scale": 2}, ArgumentError, ["uint8, uint16 or float"]),
    (None, {"scale": 2}, TypeError, ["PIL image or a numpy array", "NoneType"]),
    ("photo.png", {"scale": 2}, TypeError, ["Image.open"]),
    (np.zeros((4, 4, 3), np.uint8), {"size": (10,)}, ArgumentError, ["size=(width, height)"]),
    (np.zeros((4, 4, 3), np.uint8), {"size": "40x30"}, TypeError, ["size=(width, height)"]),
    (np.zeros((4, 4, 3), np.uint8), {"size": (40, 0)}, ArgumentError, ["size=", "from 1"]),
    (np.zeros((4, 4, 3), np.uint8), {"size": (40.0, 30)}, TypeError, ["whole numbers"]),
    (np.zeros((4, 4, 3), np.uint8), {"size": {"w": 40, "h": 30}}, TypeError,
     ["size=(width, height)"]),
    (np.zeros((4, 4, 3), np.uint8), {"scale": "2"}, TypeError, ["scale="]),
    (np.zeros((4, 4, 3), np.uint8), {"scale": 0}, ArgumentError, ["scale=", "> 0"]),
    (np.zeros((4, 4, 3), np.uint8), {}, ArgumentError, ["exactly one of scale= ", "size="]),
    (np.zeros((4, 4, 3), np.uint8), {"scale": 2, "size": (8, 8)}, ArgumentError,
     ["exactly one"]),
    (np.zeros((4, 4, 3), np.uint8), {"scale": 1e12}, ArgumentError, ["too large"]),
])
def test_bad_arguments_say_what_was_expected(upscaler, image, kwargs, error, words):
    with pytest.raises(error) as excinfo:
        upscaler.upscale(image, **kwargs)
    message = str(excinfo.value)
    for word in words:
        assert word in message, message
    assert "--" not in message  # API arguments, not CLI flags


def test_argument_errors_are_value_errors_and_liif_errors(upscaler):
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, LiifError)
    with pytest.raises(ValueError):
        upscaler.upscale(RNG.random((4, 4)) * 255, scale=2)


def test_float_images_in_unit_range_are_still_taken(upscaler):
    out = upscaler.upscale(RNG.random((H, W, 3)), scale=2)
    assert out.shape == (2 * H, 2 * W, 3) and out.dtype == np.float64


def test_animated_pil_images_are_refused_as_the_cli_refuses_them(upscaler, tmp_path):
    frames = [Image.fromarray(rgb8()) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "anim.gif") as image:
        with pytest.raises(ArgumentError, match="has 3 frames"):
            upscaler.upscale(image, scale=2)
        image.seek(1)
        assert upscaler.upscale(image.copy(), scale=2).size == (2 * W, 2 * H)  # one frame


def test_pil_exif_orientation_is_applied_as_the_cli_applies_it(upscaler, tmp_path):
    from liif_cli.images import read_image

    image = Image.fromarray(rgb8(6, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    image.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "turned.jpg") as opened:
        out = upscaler.upscale(opened, scale=2)
    assert out.size == (12, 20)  # upright: 6 wide, 10 high, times 2
    upright = read_image(tmp_path / "turned.jpg")
    direct = upscaler.upscale(to8(upright.rgb), scale=2)
    assert np.array_equal(np.asarray(out), direct)


@pytest.mark.parametrize(("options", "error", "words"), [
    ({"tile": 5}, ArgumentError, ["tile=5", "at least 32"]),
    ({"tile": -5}, ArgumentError, ["tile=-5", "negative"]),
    ({"chunk": 0}, ArgumentError, ["chunk=0"]),
    ({"tile": 64.0}, TypeError, ["tile", "whole number"]),
])
def test_tiles_the_cli_refuses_are_refused(model, tiny_bundle, options, error, words):
    for make in (lambda: Upscaler(model, device="cpu", **options),
                 lambda: AutoUpscaler(device="cpu", **options)):
        with pytest.raises(error) as excinfo:
            make()
        for word in words:
            assert word in str(excinfo.value)
    assert Upscaler(model, device="cpu", tile=0).tile == 0  # one piece


@pytest.mark.parametrize(("make", "error", "words"), [
    (lambda m: Upscaler("default"), TypeError, ["liif model", "Upscaler.from_pretrained"]),
    (lambda m: Upscaler(torch.nn.Linear(2, 2)), TypeError, ["liif model", "Linear"]),
    (lambda m: Upscaler(m, device=5), TypeError, ["device=", "torch.device"]),
    (lambda m: Upscaler(m, device="cpu", precision=32), TypeError, ["precision="]),
    (lambda m: Upscaler(m, device="cpu", min_side=None), TypeError, ["min_side="]),
    (lambda m: Upscaler(m, device="cpu", min_side=-1), ArgumentError, ["min_side="]),
    (lambda m: AutoUpscaler(device="cpu", min_side=None), TypeError, ["min_side="]),
    (lambda m: AutoUpscaler(device="cpu", fast="no"), TypeError, ["fast=", "True or False"]),
])
def test_bad_constructor_arguments_fail_at_once_and_say_what_was_expected(model, make, error,
                                                                          words):
    with pytest.raises(error) as excinfo:
        make(model)
    for word in words:
        assert word in str(excinfo.value), str(excinfo.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_torch_device_that_is_not_here_fails_at_once(model):
    for make in (lambda: Upscaler(model, device=torch.device("cuda")),
                 lambda: AutoUpscaler(device=torch.device("cuda"))):
        with pytest.raises(LiifError, match="no CUDA GPU is available here"):
            make()
    assert Upscaler(model, device=torch.device("cpu")).device == torch.device("cpu")
