"""Tests for liif_cli.images: faithful reading/writing of image files and clean errors."""

from __future__ import annotations

import errno
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from liif_cli import images
from liif_cli.errors import LiifError
from liif_cli.images import (
    SUPPORTED_SUFFIXES,
    Picture,
    check_output,
    check_output_size,
    jpeg_quality,
    output_suffix_supported,
    read_image,
    suffix_for_format,
    webp_is_lossy,
    write_image,
)

try:
    from PIL import ImageCms

    SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
except ImportError:  # Pillow built without littlecms
    SRGB = None
needs_icc = pytest.mark.skipif(SRGB is None, reason="PIL.ImageCms is not available")

RNG = np.random.default_rng(1234)


# ------------------------------------------------------------------------------------- helpers


def channels_of(picture: Picture, depth: int) -> np.ndarray:
    """The picture as integer (H, W, C) pixels, C as in Picture.from_array."""
    planes = [picture.rgb[:, :, :1] if picture.grayscale else picture.rgb]
    if picture.alpha is not None:
        planes.append(picture.alpha[:, :, None])
    top = 65535 if depth == 16 else 255
    return np.rint(np.concatenate(planes, axis=2) * top).astype(np.int64)


def random_pixels(height: int, width: int, channels: int, depth: int) -> np.ndarray:
    dtype = np.uint16 if depth == 16 else np.uint8
    return RNG.integers(0, np.iinfo(dtype).max + 1, (height, width, channels)).astype(dtype)


def low_byte_pixels(height: int, width: int, channels: int) -> np.ndarray:
    """16-bit samples sharing one high byte: only a reader keeping low bytes tells them apart."""
    return (0x5A00 + RNG.integers(0, 256, (height, width, channels))).astype(np.uint16)


def smooth_rgb(height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth colour image (lossy codecs should reproduce it closely)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([x / (width - 1), y / (height - 1), 0.5 + 0.4 * np.sin(x / 5)], axis=2)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def handmade_png16(pixels: np.ndarray, *, interlaced: bool = False, extra: bytes = b"") -> bytes:
    """A 16-bit PNG built independently of liif (unfiltered rows, optional Adam7 interlacing)."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def scanlines(part: np.ndarray) -> bytes:
        rows = part.astype(">u2").reshape(part.shape[0], -1).view(np.uint8)
        return np.hstack([np.zeros((len(rows), 1), np.uint8), rows]).tobytes()

    if interlaced:  # Adam7 passes: (first row, first column, row step, column step)
        passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2)]
        passes += [(0, 1, 2, 2), (1, 0, 2, 1)]
        parts = [pixels[y::dy, x::dx] for y, x, dy, dx in passes]
        raw = b"".join(scanlines(part) for part in parts if part.size)
    else:
        raw = scanlines(pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, int(interlaced))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def handmade_tiff16_big_endian(pixels: np.ndarray) -> bytes:
    """An uncompressed big-endian ('MM') 16-bit RGB TIFF built independently of liif."""
    height, width, _ = pixels.shape
    data = pixels.astype(">u2").tobytes()
    ifd_offset = 8 + len(data)
    bits_offset = ifd_offset + 2 + 9 * 12 + 4
    tags = [  # tag, type (3 SHORT, 4 LONG), count, value or offset
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, bits_offset),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 8),
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(data)),
    ]
    ifd = struct.pack(">H", len(tags))
    for tag, kind, count, value in tags:
        short = kind == 3 and count == 1  # a lone SHORT sits left-justified in the field
        field = struct.pack(">HH", value, 0) if short else struct.pack(">I", value)
        ifd += struct.pack(">HHI", tag, kind, count) + field
    ifd += struct.pack(">I", 0) + struct.pack(">3H", 16, 16, 16)
    return b"MM\x00*" + struct.pack(">I", ifd_offset) + data + ifd


def handmade_planar_tiff16(pixels: np.ndarray, deflate: bool = False) -> bytes:
    """A big-endian 16-bit RGB TIFF with one plane per channel (PlanarConfig 2): three
    strips, all the red samples, then the green, then the blue; Deflate-compressed or not."""
    height, width, _ = pixels.shape
    planes = [pixels[:, :, c].astype(">u2").tobytes() for c in range(3)]
    if deflate:
        planes = [zlib.compress(plane) for plane in planes]
    data = b"".join(planes)
    starts = [8 + sum(len(p) for p in planes[:c]) for c in range(3)]
    ifd_offset = 8 + len(data) + len(data) % 2
    arrays_offset = ifd_offset + 2 + 10 * 12 + 4  # bits, strip offsets, strip byte counts
    tags = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, arrays_offset),
        (259, 3, 1, 8 if deflate else 1), (262, 3, 1, 2), (273, 4, 3, arrays_offset + 6),
        (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 3, arrays_offset + 18),
        (284, 3, 1, 2),
    ]
    ifd = struct.pack(">H", len(tags))
    for tag, kind, count, value in tags:
        short = kind == 3 and count == 1
        field = struct.pack(">HH", value, 0) if short else struct.pack(">I", value)
        ifd += struct.pack(">HHI", tag, kind, count) + field
    ifd += struct.pack(">I", 0) + struct.pack(">3H", 16, 16, 16)
    ifd += struct.pack(">3I", *starts) + struct.pack(">3I", *(len(p) for p in planes))
    return (b"MM\x00*" + struct.pack(">I", ifd_offset) + data + b"\x00" * (len(data) % 2)
            + ifd)


def test_uncompressed_planar_16_bit_tiff_is_refused_not_scrambled(tmp_path):
    """Pillow unpacks uncompressed planar 16-bit TIFFs as 8-bit samples, scrambling them:
    refused in one line, on every way in (a file, a PIL image given to the API). Compressed
    ones (decoded by libtiff) read right at 8-bit precision; interleaved ones exactly."""
    from liif_cli.api import Upscaler

    pixels = np.random.default_rng(8).integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    planar = tmp_path / "planar.tif"
    planar.write_bytes(handmade_planar_tiff16(pixels))
    with pytest.raises(LiifError, match="planar"):
        read_image(planar)
    with Image.open(planar) as image, pytest.raises(LiifError, match="planar"):
        Upscaler.from_pretrained("fast").upscale(image, scale=2)
    deflated = tmp_path / "deflated.tif"
    deflated.write_bytes(handmade_planar_tiff16(pixels, deflate=True))
    high = np.rint(read_image(deflated).rgb * 65535).astype(np.uint16) >> 8
    assert np.array_equal(high, pixels >> 8)
    chunky = tmp_path / "chunky.tif"
    chunky.write_bytes(handmade_tiff16_big_endian(pixels))
    assert np.array_equal(np.rint(read_image(chunky).rgb * 65535).astype(np.uint16), pixels)


def test_a_tiff_carries_no_layout_as_exif(tmp_path):
    """A TIFF's own size and resolution tags are not EXIF: a plain TIFF carries none (so no
    'EXIF dropped' note, and no made-up EXIF block in a PNG), and a TIFF with camera tags
    carries those alone."""
    pixels = np.random.default_rng(9).integers(0, 256, (6, 5, 3)).astype(np.uint8)
    plain = tmp_path / "plain.tif"
    Image.fromarray(pixels).save(plain, dpi=(300, 300))
    picture = read_image(plain)
    assert picture.exif is None
    assert images.dropped_metadata(picture, tmp_path / "out.tif") == []
    camera = tmp_path / "camera.tif"
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[271] = "Maker"  # Make
    image.save(camera, tiffinfo=exif, dpi=(300, 300))
    carried = Image.Exif()
    carried.load(read_image(camera).exif)
    assert carried.get(271) == "Maker"
    assert not {256, 257, 282, 283, 296, 0x8769, 0x8825} & set(carried)


def test_cmyk_with_its_profile_is_converted_through_it(tmp_path, cmyk_profile):
    """A CMYK image with its CMYK profile is converted to sRGB through the profile, as a
    colour-managed viewer shows it (not by Pillow's plain formula, which ignores it); the
    profile, which no longer describes the pixels, is dropped. Without a profile: the
    formula, as before."""
    from PIL import ImageCms

    cmyk = Image.new("CMYK", (6, 4), (0, 255, 255, 0))
    profile = cmyk_profile
    expected = ImageCms.profileToProfile(cmyk, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                         ImageCms.createProfile("sRGB"), outputMode="RGB")
    for suffix in (".jpg", ".tif"):
        path = tmp_path / f"managed{suffix}"
        cmyk.save(path, icc_profile=profile)
        picture = read_image(path)
        got = np.rint(picture.rgb * 255).astype(np.uint8)
        reference = np.asarray(Image.open(path).convert("CMYK"))  # the stored samples
        plain = np.asarray(Image.fromarray(reference, "CMYK").convert("RGB"))
        assert np.abs(got.astype(int) - np.asarray(expected).astype(int)).max() <= 2, suffix
        assert np.abs(got.astype(int) - plain.astype(int)).max() > 50, suffix
        assert picture.icc_profile is None
    bare = tmp_path / "bare.tif"
    cmyk.save(bare)
    assert np.array_equal(np.rint(read_image(bare).rgb * 255).astype(np.uint8),
                          np.asarray(cmyk.convert("RGB")))


def leftovers(folder: Path) -> list[str]:
    """Temporary files write_image may have left behind."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def assert_one_line_error(excinfo: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message.lower()


# ----------------------------------------------------------------------------- Picture basics


def test_supported_suffixes_and_helpers():
    assert SUPPORTED_SUFFIXES == {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
    assert output_suffix_supported("out.PNG") and output_suffix_supported(Path("a/b.tiff"))
    assert not output_suffix_supported("out.gif") and not output_suffix_supported("out")
    assert suffix_for_format("JPEG") == ".jpg" and suffix_for_format("TIFF") == ".tif"
    assert suffix_for_format("GIF") == ".png"


def test_from_array_layouts():
    gray = Picture.from_array(np.array([[0, 255]], np.uint8))
    assert gray.grayscale and gray.alpha is None and gray.bit_depth == 8 and gray.size == (1, 2)
    assert gray.rgb.dtype == np.float32 and gray.rgb.shape == (1, 2, 3)
    np.testing.assert_array_equal(gray.rgb[0, 1], [1, 1, 1])

    rgba = Picture.from_array(np.full((2, 3, 4), 65535, np.uint16))
    assert not rgba.grayscale and rgba.bit_depth == 16 and rgba.alpha.shape == (2, 3)

    with pytest.raises(ValueError):
        Picture.from_array(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError):
        Picture(np.zeros((2, 2)), None, False, 8, None, "PNG")
    with pytest.raises(ValueError):
        Picture(np.zeros((2, 2, 3)), np.zeros((3, 3)), False, 8, None, "PNG")


def test_with_pixels_keeps_metadata():
    picture = Picture.from_array(random_pixels(4, 4, 2, 16), icc_profile=b"x", format="TIFF")
    bigger = picture.with_pixels(np.zeros((8, 8, 3), np.float64), np.ones((8, 8)))
    assert bigger.size == (8, 8) and bigger.rgb.dtype == np.float32
    assert (bigger.grayscale, bigger.bit_depth, bigger.icc_profile, bigger.format) == (
        True,
        16,
        b"x",
        "TIFF",
    )
    assert picture.size == (4, 4)  # the original is unchanged


# ---------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".bmp"])
def test_lossless_formats_round_trip_exactly(tmp_path, suffix):
    pixels = random_pixels(9, 13, 3, 8)
    path = tmp_path / f"out{suffix}"
    write_image(Picture.from_array(pixels), path)
    picture = read_image(path)
    assert picture.size == (9, 13) and not picture.grayscale and picture.bit_depth == 8
    np.testing.assert_array_equal(channels_of(picture, 8), pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), pixels)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp"])
def test_lossy_formats_round_trip_closely(tmp_path, suffix):
    rgb = smooth_rgb()
    path = tmp_path / f"out{suffix}"
    write_image(Picture.from_array(rgb), path)
    picture = read_image(path)
    assert picture.size == rgb.shape[:2] and picture.format in ("JPEG", "WEBP")
    error = np.abs(picture.rgb - rgb)
    assert error.mean() < 3 / 255 and error.max() < 24 / 255


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_layout_round_trips_exactly(tmp_path, suffix, depth, channels):
    pixels = random_pixels(7, 11, channels, depth)
    path = tmp_path / f"out{suffix}"
    write_image(Picture.from_array(pixels), path)
    picture = read_image(path)
    assert picture.bit_depth == depth
    assert (picture.alpha is not None) == (channels in (2, 4))
    if suffix == ".tif" and depth == 16 and channels == 2:
        # written as RGBA (Pillow cannot read 16-bit gray+alpha TIFF): still exact, but colour
        assert not picture.grayscale
        np.testing.assert_array_equal(channels_of(picture, 16)[:, :, 0], pixels[:, :, 0])
        np.testing.assert_array_equal(channels_of(picture, 16)[:, :, 3], pixels[:, :, 1])
        return
    assert picture.grayscale == (channels <= 2)
    np.testing.assert_array_equal(channels_of(picture, depth), pixels)


def test_float_pixels_are_rounded_not_truncated(tmp_path):
    values = np.array([0.4 / 255, 0.6 / 255, 254.4 / 255, 254.6 / 255, -0.5, 1.5, np.nan])
    rgb = np.repeat(values[None, :, None], 3, axis=2).astype(np.float32)
    path = tmp_path / "q.png"
    write_image(Picture(rgb, None, False, 8, None, "PNG"), path)
    written = np.asarray(Image.open(path))[0, :, 0]
    np.testing.assert_array_equal(written, [0, 1, 254, 255, 0, 255, 0])


@pytest.mark.parametrize("depth", [8, 16])
def test_quantise_in_blocks_equals_quantising_at_once(monkeypatch, depth):
    rng = np.random.default_rng(4)
    values = rng.uniform(-0.2, 1.2, (37, 11, 3)).astype(np.float32)
    values[5, 3, 1], values[30, 0, 0], values[36, 10, 2] = np.nan, np.inf, -np.inf
    top = 65535 if depth == 16 else 255
    expected = np.rint(np.clip(np.nan_to_num(values, nan=0.0), 0, 1) * np.float32(top))
    monkeypatch.setattr(images, "_QUANTISE_BLOCK", 5 * 11 * 3)  # 5 rows a block: 8 blocks
    got = images.quantise(values, depth)
    assert got.dtype == (np.uint16 if depth == 16 else np.uint8)
    np.testing.assert_array_equal(got, expected.astype(got.dtype))
    assert got[5, 3, 1] == 0 and got[30, 0, 0] == top and got[36, 10, 2] == 0
    assert np.isnan(values[5, 3, 1])  # the input is left alone


# ------------------------------------------------------------------------- stored pictures


@pytest.mark.parametrize(("suffix", "channels", "depth"), [
    (".png", 3, 8), (".png", 4, 8), (".png", 1, 8), (".png", 2, 8), (".png", 3, 16),
    (".png", 2, 16), (".tif", 3, 8), (".tif", 2, 16), (".tif", 4, 16), (".jpg", 3, 16),
    (".jpg", 1, 8), (".webp", 4, 8), (".webp", 1, 16), (".bmp", 3, 8)])
def test_a_stored_picture_is_written_as_the_float_picture_was(tmp_path, suffix, channels,
                                                              depth):
    """The same file: rendered into stored_output tile by tile (here: uneven tiles, in any
    order) or quantised from the whole float picture at write time."""
    picture = Picture.from_array(random_pixels(17, 23, channels, depth))
    picture.rgb = np.clip(picture.rgb + RNG.normal(0, 0.01, picture.rgb.shape), 0, 1)  # noise
    if picture.alpha is not None:
        picture.alpha[:4] = 1.0  # some opaque rows
    picture.icc_profile, picture.exif = SRGB, None
    stored = images.stored_output(picture, picture.size, tmp_path / f"x{suffix}")
    assert stored.layout == images.output_layout(picture, tmp_path / f"x{suffix}")
    for rows, cols in [(slice(9, 17), slice(5, 23)), (slice(0, 9), slice(0, 23)),
                       (slice(9, 17), slice(0, 5))]:
        stored.put_rgb(rows, cols, picture.rgb[rows, cols])
    if stored.layout.alpha:
        stored.put_alpha(slice(0, 17), picture.alpha)
    write_image(picture, tmp_path / f"float{suffix}")
    write_image(stored, tmp_path / f"stored{suffix}")
    assert (tmp_path / f"float{suffix}").read_bytes() == (tmp_path / f"stored{suffix}").read_bytes()


def test_stored_pictures_crop_and_hand_pillow_their_memory():
    layout = images.Layout(gray=False, alpha=True, depth=8)
    stored = images.StoredPicture((6, 8), layout)
    stored.pixels[:] = random_pixels(6, 8, 4, 8)
    image = stored.pil_image()
    assert image.mode == "RGBA" and image.readonly  # Pillow reads the array in place
    np.testing.assert_array_equal(np.asarray(image), stored.pixels)
    part = stored.crop(1, 2, 5, 7)
    assert part.size == (4, 5) and part.pixels.flags.c_contiguous
    np.testing.assert_array_equal(part.pixels, stored.pixels[1:5, 2:7])
    rgb = images.StoredPicture((6, 8), images.Layout(False, False, 8), pillow=True)
    rgb.put_rgb(slice(0, 6), slice(0, 8), np.full((6, 8, 3), 0.5, np.float32))
    assert rgb.pil_image().mode == "RGB" and (rgb.pixels == 128).all()
    np.testing.assert_array_equal(rgb.crop(1, 2, 5, 7).pixels, np.full((4, 5, 3), 128))


def test_a_stored_picture_in_a_layout_its_format_cannot_hold_is_a_bug(tmp_path):
    deep = images.StoredPicture((2, 2), images.Layout(gray=False, alpha=False, depth=16))
    with pytest.raises(ValueError, match="JPEG cannot store"):
        write_image(deep, tmp_path / "x.jpg")
    clear = images.StoredPicture((2, 2), images.Layout(gray=False, alpha=True, depth=8))
    with pytest.raises(ValueError, match="BMP cannot store"):
        write_image(clear, tmp_path / "x.bmp")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------- 16-bit depth


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("interlaced", [False, True])
def test_reads_full_precision_from_16_bit_png(tmp_path, channels, interlaced):
    pixels = low_byte_pixels(11, 10, channels)
    path = tmp_path / "in.png"
    path.write_bytes(handmade_png16(pixels, interlaced=interlaced))
    picture = read_image(path)
    assert picture.bit_depth == 16 and picture.grayscale == (channels <= 2)
    np.testing.assert_array_equal(channels_of(picture, 16), pixels)


def test_reads_full_precision_from_big_endian_16_bit_tiff(tmp_path):
    pixels = low_byte_pixels(5, 6, 3)
    path = tmp_path / "in.tif"
    path.write_bytes(handmade_tiff16_big_endian(pixels))
    picture = read_image(path)
    assert picture.bit_depth == 16 and picture.format == "TIFF"
    np.testing.assert_array_equal(channels_of(picture, 16), pixels)


@pytest.mark.parametrize(
    ("suffix", "channels"), [(".png", 1), (".png", 2), (".png", 3), (".png", 4), (".tif", 3)]
)
def test_16_bit_low_bytes_survive_read_write_read(tmp_path, suffix, channels):
    pixels = low_byte_pixels(8, 12, channels)
    source = tmp_path / "in.png"
    source.write_bytes(handmade_png16(pixels))
    output = tmp_path / f"out{suffix}"
    write_image(read_image(source), output)
    again = read_image(output)
    assert again.bit_depth == 16
    np.testing.assert_array_equal(channels_of(again, 16), pixels)

    with Image.open(output) as image:  # an independent reader agrees on size and high bytes
        assert image.size == (12, 8)
        if channels == 3:
            np.testing.assert_array_equal(np.asarray(image), pixels >> 8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("depth", [8, 16])
def test_many_png_bands_and_tiff_strips(tmp_path, monkeypatch, suffix, depth):
    monkeypatch.setattr(images, "_PNG_BAND_BYTES", 100)  # a few rows per band / strip
    monkeypatch.setattr(images, "_TIFF_STRIP_BYTES", 100)
    pixels = random_pixels(23, 9, 3, depth)
    write_image(Picture.from_array(pixels), tmp_path / f"out{suffix}")
    if suffix == ".tif":
        with Image.open(tmp_path / f"out{suffix}") as image:
            assert len(image.tag_v2[273]) > 3  # several strips
    np.testing.assert_array_equal(channels_of(read_image(tmp_path / f"out{suffix}"), depth), pixels)


def test_16_bit_png_header_and_8_bit_formats(tmp_path):
    picture = Picture.from_array(low_byte_pixels(3, 4, 3))
    write_image(picture, tmp_path / "deep.png")
    header = (tmp_path / "deep.png").read_bytes()[16:26]
    assert struct.unpack(">IIBB", header) == (4, 3, 16, 2)  # width, height, depth, RGB
    write_image(picture, tmp_path / "shallow.bmp")
    shallow = read_image(tmp_path / "shallow.bmp")
    assert shallow.bit_depth == 8
    assert np.abs(shallow.rgb - picture.rgb).max() <= 0.5 / 255 + 1e-6


def test_16_bit_gray_png_from_pillow(tmp_path):
    gray = (0x0100 * RNG.integers(0, 256, (5, 7)) + 0x7F).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    picture = read_image(tmp_path / "g.png")
    assert picture.grayscale and picture.bit_depth == 16
    np.testing.assert_array_equal(channels_of(picture, 16)[:, :, 0], gray)


def test_png_colour_key_on_16_bit_rgb_becomes_alpha(tmp_path):
    pixels = low_byte_pixels(4, 5, 3)
    pixels[1, 2] = [0x1234, 0x5678, 0x9ABC]
    key = png_chunk(b"tRNS", struct.pack(">3H", 0x1234, 0x5678, 0x9ABC))
    path = tmp_path / "key.png"
    path.write_bytes(handmade_png16(pixels, extra=key))
    picture = read_image(path)
    assert picture.alpha is not None and picture.alpha[1, 2] == 0
    assert np.count_nonzero(picture.alpha == 1) == 4 * 5 - 1


# ----------------------------------------------------------------------- grayscale and alpha


def test_grayscale_stays_grayscale(tmp_path):
    gray = RNG.integers(0, 256, (6, 9), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    picture = read_image(tmp_path / "g.png")
    assert picture.grayscale and picture.alpha is None
    np.testing.assert_array_equal(picture.rgb[:, :, 0], picture.rgb[:, :, 2])
    for suffix, mode in [(".jpg", "L"), (".png", "L"), (".tif", "L"), (".bmp", "L")]:
        write_image(picture, tmp_path / f"out{suffix}")
        with Image.open(tmp_path / f"out{suffix}") as image:
            assert image.mode == mode
        assert read_image(tmp_path / f"out{suffix}").grayscale


def test_webp_has_no_grayscale_so_gray_is_written_as_colour(tmp_path):
    picture = Picture.from_array(np.full((4, 4), 128, np.uint8))
    write_image(picture, tmp_path / "g.webp")
    again = read_image(tmp_path / "g.webp")
    assert not again.grayscale and np.abs(again.rgb - 128 / 255).max() < 3 / 255


def test_palette_transparency_becomes_alpha(tmp_path):
    image = Image.new("P", (4, 3), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    image.putpixel((0, 0), 0)
    image.save(tmp_path / "p.png", transparency=0)
    picture = read_image(tmp_path / "p.png")
    assert not picture.grayscale and picture.bit_depth == 8
    assert picture.alpha[0, 0] == 0 and picture.alpha[2, 3] == 1
    np.testing.assert_array_equal(picture.rgb[2, 3], [0, 0, 1])


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_alpha_is_kept_where_the_format_can(tmp_path, suffix):
    pixels = random_pixels(6, 5, 4, 8)
    pixels[:, :, :3] = 200  # flat colour: WebP's lossy colour is then near exact
    write_image(Picture.from_array(pixels), tmp_path / f"a{suffix}")
    picture = read_image(tmp_path / f"a{suffix}")
    np.testing.assert_array_equal(channels_of(picture, 8)[:, :, 3], pixels[:, :, 3])


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_transparency_is_refused_by_jpeg_and_bmp(tmp_path, suffix):
    pixels = random_pixels(4, 4, 4, 8)
    pixels[0, 0, 3] = 10
    path = tmp_path / f"out{suffix}"
    with pytest.raises(LiifError) as excinfo:
        write_image(Picture.from_array(pixels), path)
    assert_one_line_error(excinfo, path, "transparency", ".png")
    assert not path.exists() and leftovers(tmp_path) == []
    with pytest.raises(LiifError):
        check_output(path, Picture.from_array(pixels))


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_fully_opaque_alpha_is_dropped_silently(tmp_path, suffix):
    pixels = random_pixels(4, 4, 4, 8)
    pixels[:, :, 3] = 255
    write_image(Picture.from_array(pixels), tmp_path / f"out{suffix}")
    with Image.open(tmp_path / f"out{suffix}") as image:
        assert image.mode == "RGB"


def test_cmyk_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    picture = read_image(tmp_path / "c.jpg")
    assert not picture.grayscale and picture.icc_profile is None
    assert np.abs(picture.rgb[2, 2] - [1, 0, 0]).max() < 0.05


# ---------------------------------------------------------------------- orientation and ICC


def test_exif_orientation_6_reads_upright(tmp_path):
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:, :10] = [255, 0, 0]  # red band on the left of the stored image
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    image.save(tmp_path / "o.jpg", exif=exif, quality=95)

    picture = read_image(tmp_path / "o.jpg")
    assert picture.size == (30, 20)  # dimensions swapped
    assert picture.rgb[5, 10, 0] > 0.9 and picture.rgb[25, 10, 0] < 0.1  # left band is now on top

    write_image(picture, tmp_path / "out.jpg")  # already upright: no orientation tag carried
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.size == (20, 30) and out.getexif().get(0x0112) in (None, 1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow(tmp_path, orientation):
    image = Image.fromarray(random_pixels(3, 5, 3, 8))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored))
    np.testing.assert_array_equal(channels_of(read_image(tmp_path / "o.png"), 8), expected)


def test_orientation_applies_to_16_bit_png(tmp_path):
    pixels = low_byte_pixels(3, 5, 3)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to display
    path = tmp_path / "o16.png"
    path.write_bytes(handmade_png16(pixels, extra=png_chunk(b"eXIf", exif.tobytes()[6:])))
    picture = read_image(path)
    assert picture.bit_depth == 16
    np.testing.assert_array_equal(channels_of(picture, 16), np.rot90(pixels))


def camera_exif(width: int, height: int, orientation: int = 6) -> Image.Exif:
    """EXIF as a phone writes it: camera, dates, GPS position, pixel size, orientation."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS R"  # Make, Model
    exif[0x0132] = "2024:01:02 03:04:05"  # DateTime
    exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2024:01:02 03:04:05"  # DateTimeOriginal
    sub[0xA002], sub[0xA003] = width, height  # PixelXDimension, PixelYDimension
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 31.0, 12.5)  # GPSLatitudeRef, GPSLatitude
    return exif


@pytest.mark.parametrize("suffix,depth", [(".jpg", 8), (".png", 8), (".png", 16), (".webp", 8)])
def test_exif_is_carried_upright_with_the_output_size(tmp_path, suffix, depth):
    Image.fromarray(random_pixels(20, 30, 3, 8)).save(tmp_path / "in.jpg",
                                                     exif=camera_exif(30, 20))
    picture = read_image(tmp_path / "in.jpg")
    assert picture.size == (30, 20) and picture.exif is not None
    bigger = picture.with_pixels(np.zeros((45, 30, 3), np.float32), None)  # e.g. upscaled
    bigger.bit_depth = depth
    write_image(bigger, tmp_path / f"out{suffix}")
    with Image.open(tmp_path / f"out{suffix}") as image:
        image.load()
        exif = image.getexif()
        assert image.size == (30, 45)
        assert (exif[0x010F], exif[0x0110], exif[0x0132]) == ("Canon", "EOS R",
                                                              "2024:01:02 03:04:05")
        assert exif[0x0112] == 1  # the pixels are upright: viewers must not rotate again
        sub = exif.get_ifd(0x8769)
        assert (sub[0xA002], sub[0xA003]) == (30, 45) and sub[0x9003] == "2024:01:02 03:04:05"
        assert exif.get_ifd(0x8825)[1] == "N"
    if suffix == ".png" and depth == 16:
        assert read_image(tmp_path / f"out{suffix}").bit_depth == 16


def test_exif_is_not_written_where_it_cannot_go_or_was_stripped(tmp_path):
    Image.fromarray(random_pixels(4, 6, 3, 8)).save(tmp_path / "in.jpg", exif=camera_exif(6, 4))
    picture = read_image(tmp_path / "in.jpg")
    write_image(picture, tmp_path / "out.bmp")
    write_image(picture, tmp_path / "out.tif")
    picture.exif = None  # what --strip-metadata does
    write_image(picture, tmp_path / "stripped.jpg")
    for name in ("out.bmp", "out.tif", "stripped.jpg"):
        with Image.open(tmp_path / name) as image:
            assert 0x010F not in image.getexif()


def test_exif_of_a_tiff_source_leaves_its_layout_tags_behind(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Scanner Co"
    Image.fromarray(random_pixels(4, 6, 3, 8)).save(tmp_path / "in.tif", exif=exif)
    picture = read_image(tmp_path / "in.tif")
    block = Image.Exif()
    block.load(picture.exif)
    assert block[0x010F] == "Scanner Co"
    assert not {273, 279, 258, 259, 262} & set(block)  # strips, depth, compression, colour
    assert not {256, 257, 282, 283, 296} & set(block)  # the TIFF's own size and resolution


def test_flatten_composites_over_an_opaque_colour():
    gray = Picture.from_array(np.array([[[0, 0], [65535, 32768]]], np.uint16))  # gray+alpha
    flat = images.flatten(gray, images.parse_colour("white"))
    assert flat.alpha is None and flat.grayscale and flat.bit_depth == 16
    np.testing.assert_allclose(flat.rgb[0, :, 0], [1.0, 1.0], atol=1e-4)  # clear, half white
    red = images.flatten(gray, images.parse_colour("#ff0000"))
    assert not red.grayscale and red.rgb[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert images.parse_colour("black") == (0.0, 0.0, 0.0)
    for bad in ("not-a-colour", "#12345", "#ff000080"):
        with pytest.raises(LiifError, match="colour"):
            images.parse_colour(bad)
    assert not images.stores_alpha("a.jpg") and images.stores_alpha("a.PNG")


def test_exif_pixel_size_beyond_16_bits_and_damaged_exif():
    block = images._output_exif(camera_exif(3, 2).tobytes(), "PNG", (2, 70_000))
    exif = Image.Exif()
    exif.load(block)
    assert exif.get_ifd(0x8769)[0xA002] == 70_000
    assert images._output_exif(b"Exif\x00\x00garbage", "PNG", (2, 3)) is None
    assert images._output_exif(camera_exif(3, 2).tobytes(), "BMP", (2, 3)) is None


@needs_icc
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
@pytest.mark.parametrize("depth", [8, 16])
def test_icc_profile_is_carried_through(tmp_path, suffix, depth):
    picture = Picture.from_array(random_pixels(4, 6, 3, depth), icc_profile=SRGB)
    write_image(picture, tmp_path / f"out{suffix}")
    with Image.open(tmp_path / f"out{suffix}") as image:
        assert image.info.get("icc_profile") == SRGB
    assert read_image(tmp_path / f"out{suffix}").icc_profile == SRGB


@needs_icc
def test_icc_profile_read_from_source_and_dropped_where_it_cannot_apply(tmp_path):
    Image.fromarray(random_pixels(4, 4, 3, 8)).save(tmp_path / "in.png", icc_profile=SRGB)
    picture = read_image(tmp_path / "in.png")
    assert picture.icc_profile == SRGB
    write_image(picture, tmp_path / "out.bmp")  # BMP: no profile support
    assert read_image(tmp_path / "out.bmp").icc_profile is None
    gray = Picture.from_array(np.zeros((2, 2), np.uint8), icc_profile=SRGB)
    write_image(gray, tmp_path / "gray.png")  # an RGB profile must not label gray pixels
    assert read_image(tmp_path / "gray.png").icc_profile is None


def test_jpeg_uses_quality_and_no_chroma_subsampling(tmp_path):
    from PIL import JpegImagePlugin

    picture = Picture.from_array(random_pixels(32, 32, 3, 8))
    write_image(picture, tmp_path / "high.jpg", quality=95)
    write_image(picture, tmp_path / "low.jpg", quality=40)
    with Image.open(tmp_path / "high.jpg") as image:
        assert JpegImagePlugin.get_sampling(image) == 0  # 4:4:4
    assert (tmp_path / "low.jpg").stat().st_size < (tmp_path / "high.jpg").stat().st_size
    with pytest.raises(LiifError, match="quality"):
        write_image(picture, tmp_path / "bad.jpg", quality=0)
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ read errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    assert_one_line_error(excinfo, path, "no such file")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(LiifError) as excinfo:
        read_image(tmp_path)
    assert_one_line_error(excinfo, tmp_path, "folder")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    assert_one_line_error(excinfo, path, "not an image")


@pytest.mark.parametrize("depth", [8, 16])
def test_truncated_png(tmp_path, depth):
    path = tmp_path / "cut.png"
    write_image(Picture.from_array(random_pixels(64, 64, 3, depth)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    assert_one_line_error(excinfo, path, "damaged")


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(random_pixels(64, 64, 3, 8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    assert_one_line_error(excinfo, path)


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(images.Image, "open", refuse)  # root would read a chmod 000 file
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    assert_one_line_error(excinfo, path, "permission denied")


def test_max_pixels_refuses_large_inputs_from_the_header(tmp_path, monkeypatch):
    """The limit applies before decoding (a 9500x9500 PNG would take 1.9 GB) and replaces
    Pillow's own decompression-bomb limit and warning."""
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n"  # a header claiming 9500x9500, and no pixels
                     + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 9500, 9500, 8, 2, 0, 0, 0))
                     + png_chunk(b"IEND", b""))
    monkeypatch.setattr(images, "_decode_pixels", lambda *a: pytest.fail("decoded"))
    with pytest.raises(LiifError) as excinfo:
        read_image(path, max_pixels=50_000_000)
    assert_one_line_error(excinfo, path, "9500x9500", "--max-pixels")
    seen = []

    def too_big(size):  # what `liif upscale` does: refuse the output size
        seen.append(size)
        raise LiifError("output too large")

    with pytest.raises(LiifError, match="output too large"):  # also before decoding
        read_image(path, max_pixels=0, check=too_big)
    assert seen == [(9500, 9500)]


def test_max_pixels_governs_pillows_bomb_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (16, 16)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone: 256 pixels > 2x limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path, max_pixels=0).size == (16, 16)
        assert read_image(path, max_pixels=256).size == (16, 16)
        with pytest.raises(LiifError) as excinfo:
            read_image(path, max_pixels=255)
    assert_one_line_error(excinfo, path, "max-pixels")
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's setting is left as it was


def test_header_check_sees_the_upright_size(tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 12 wide and 5 high, upright 5 wide
    Image.new("RGB", (12, 5)).save(path, exif=exif)
    seen = []
    assert read_image(path, check=seen.append).size == (12, 5)
    assert seen == [(12, 5)]


def test_corrupt_exif_gives_no_python_warning(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    bad = (b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1)
           + struct.pack("<HHII", 0x010F, 2, 1000, 5000) + b"\x00" * 4)  # data past the end
    Image.new("RGB", (8, 8), "red").save(path, exif=bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).size == (8, 8)


def _frames(path: Path) -> Path:
    frames = [Image.new("RGB", (8, 6), colour) for colour in ("red", "blue", "green")]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "pages.tif"])
def test_animated_and_multi_page_files_are_refused(tmp_path, name):
    path = _frames(tmp_path / name)
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    kind = "pages" if name.endswith(".tif") else "frames"
    assert_one_line_error(excinfo, path, f"3 {kind}", "single images")


def test_an_animation_under_a_still_images_suffix_is_told_to_take_its_own(tmp_path):
    """liif upscales animations by their suffix: a GIF named .jpg is read as a still, and
    the error says what it is and which name would work."""
    path = tmp_path / "anim.jpg"
    frames = [Image.new("RGB", (8, 6), colour) for colour in ("red", "blue", "green")]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    assert_one_line_error(excinfo, path, "is a gif of 3 frames under a .jpg name",
                          "name it .gif")


def test_camera_jpeg_with_a_preview_picture_is_read(tmp_path):
    """MPO: many cameras store previews or depth maps after the main picture of a JPEG."""
    path = tmp_path / "camera.jpg"
    Image.new("RGB", (16, 12), "red").save(path, format="MPO", save_all=True,
                                           append_images=[Image.new("RGB", (8, 6), "blue")])
    picture = read_image(path)
    assert picture.size == (12, 16) and picture.rgb[..., 0].mean() > 0.9


def handmade_tiff(pixels: np.ndarray, sample_format: int) -> bytes:
    """An uncompressed little-endian TIFF of any sample type (3: IEEE float)."""
    height, width, channels = pixels.shape
    data = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    tags = [(256, 4, [width]), (257, 4, [height]), (258, 3, [pixels.itemsize * 8] * channels),
            (259, 3, [1]), (262, 3, [2 if channels >= 3 else 1]), (273, 4, [8]),
            (277, 3, [channels]), (278, 4, [height]), (279, 4, [len(data)]), (284, 3, [1]),
            (339, 3, [sample_format] * channels)]
    if channels in (2, 4):
        tags.append((338, 3, [2]))
    ifd = 8 + len(data)
    extra_at, entries, extra = ifd + 2 + 12 * len(tags) + 4, b"", b""
    for tag, kind, values in tags:
        raw = struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
        if len(raw) > 4:
            raw, extra = struct.pack("<I", extra_at + len(extra)), extra + raw
        entries += struct.pack("<HHI", tag, kind, len(values)) + raw.ljust(4, b"\x00")
    return (b"II*\x00" + struct.pack("<I", ifd) + data + struct.pack("<H", len(tags))
            + entries + b"\x00" * 4 + extra)


@pytest.mark.parametrize(("pixels", "sample_format", "words"), [
    (np.full((3, 4, 3), 0.5, np.float32), 3, ["32-bit floating-point rgb tiff", "not supported"]),
    (np.full((3, 4, 2), 300, np.uint16), 1, ["16-bit integer gray+alpha tiff", "not supported"]),
])
def test_unsupported_tiff_kinds_are_named(tmp_path, pixels, sample_format, words):
    path = tmp_path / "odd.tif"
    path.write_bytes(handmade_tiff(pixels, sample_format))
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    assert_one_line_error(excinfo, path, *words)


def test_float_gray_tiff_in_range_is_read_as_16_bit_gray(tmp_path):
    path = tmp_path / "float.tif"
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4, 1)
    path.write_bytes(handmade_tiff(values, 3))
    picture = read_image(path)
    assert picture.grayscale and picture.bit_depth == 16
    np.testing.assert_allclose(picture.rgb[:, :, 0], values[:, :, 0], atol=1 / 65535)


def test_float_tiff_outside_0_1_is_refused(tmp_path):
    path = tmp_path / "hdr.tif"
    Image.new("F", (3, 3), 2.5).save(path)
    with pytest.raises(LiifError) as excinfo:
        read_image(path)
    assert_one_line_error(excinfo, path, "outside [0, 1]", "not supported")


def test_32_bit_integer_tiff_is_kept_in_16_bit_range_and_refused_beyond(tmp_path):
    """Mode I holds 32-bit integers: values within 16 bits are read at their value, larger
    or negative ones refused rather than clipped."""
    fits, beyond = tmp_path / "fits.tif", tmp_path / "beyond.tif"
    Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32), "I").save(fits)
    Image.fromarray(np.array([[0, 1000, 70000]], dtype=np.int32), "I").save(beyond)
    picture = read_image(fits)
    assert picture.grayscale and picture.bit_depth == 16
    np.testing.assert_allclose(picture.rgb[0, :, 0], [0, 1000 / 65535, 1], atol=1e-7)
    with pytest.raises(LiifError) as excinfo:
        read_image(beyond)
    assert_one_line_error(excinfo, beyond, "outside 0-65535", "not supported")


# ----------------------------------------------------------------------------- write errors


@pytest.mark.parametrize("name", ["out.gif", "out", "out.png.txt"])
def test_unknown_output_suffix(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(LiifError) as excinfo:
        write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), path)
    assert_one_line_error(excinfo, path, ".png")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"precious")
    picture = Picture.from_array(random_pixels(3, 3, 3, 8))
    with pytest.raises(LiifError) as excinfo:
        write_image(picture, path)
    assert_one_line_error(excinfo, path, "exists", "--overwrite")
    assert path.read_bytes() == b"precious" and leftovers(tmp_path) == []

    write_image(picture, path, overwrite=True)
    np.testing.assert_array_equal(channels_of(read_image(path), 8), channels_of(picture, 8))
    assert leftovers(tmp_path) == []


def test_check_output_fails_fast(tmp_path, monkeypatch):
    path = tmp_path / "out.tif"
    assert check_output(str(path)) == path
    path.write_bytes(b"x")
    with pytest.raises(LiifError, match="--overwrite"):
        check_output(path)
    assert check_output(path, overwrite=True) == path
    monkeypatch.setattr(images.os, "access", lambda *args: False)
    with pytest.raises(LiifError) as excinfo:
        check_output(path, overwrite=True)
    assert_one_line_error(excinfo, path, "no permission")


def test_missing_output_folder(tmp_path):
    path = tmp_path / "missing" / "out.png"
    with pytest.raises(LiifError) as excinfo:
        write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), path)
    assert_one_line_error(excinfo, path, "does not exist")


def test_output_folder_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "out.png"
    with pytest.raises(LiifError) as excinfo:
        write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), path)
    assert_one_line_error(excinfo, path, "not a folder")


def test_output_path_is_a_folder(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(LiifError) as excinfo:
        write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), tmp_path / "dir.png")
    assert_one_line_error(excinfo, tmp_path / "dir.png", "folder")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions"
)
def test_unwritable_output_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(LiifError) as excinfo:
            write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), folder / "out.png")
        assert_one_line_error(excinfo, folder / "out.png", "permission")
    finally:
        folder.chmod(0o700)


def test_unwritable_output_folder_reported_even_when_access_check_passes(tmp_path, monkeypatch):
    """Simulates EACCES from the file system (e.g. for root on a read-only mount)."""

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(images.os, "open", refuse)
    path = tmp_path / "out.png"
    with pytest.raises(LiifError) as excinfo:
        write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), path)
    assert_one_line_error(excinfo, path, "permission denied")


@pytest.mark.parametrize("overwrite", [False, True])
def test_failure_mid_write_leaves_nothing_behind(tmp_path, monkeypatch, overwrite):
    def disk_full(file, *args):
        file.write(b"\x89PNG half an image")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "_save_with_pillow", disk_full)
    path = tmp_path / "out.png"
    if overwrite:
        path.write_bytes(b"old")
    with pytest.raises(LiifError) as excinfo:
        write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), path, overwrite=overwrite)
    assert_one_line_error(excinfo, path, "no space left")
    assert leftovers(tmp_path) == []
    assert (path.read_bytes() == b"old") if overwrite else not path.exists()


def test_file_appearing_during_write_is_not_clobbered(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    real_save = images._save_with_pillow

    def racing_save(file, *args):
        path.write_bytes(b"someone else's")  # another process creates the output meanwhile
        real_save(file, *args)

    monkeypatch.setattr(images, "_save_with_pillow", racing_save)
    with pytest.raises(LiifError, match="exists"):
        write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), path)
    assert path.read_bytes() == b"someone else's" and leftovers(tmp_path) == []


def test_works_without_hard_links(tmp_path, monkeypatch):
    def no_links(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(images.os, "link", no_links)
    picture = Picture.from_array(random_pixels(3, 4, 3, 8))
    path = tmp_path / "out.png"
    write_image(picture, path)
    np.testing.assert_array_equal(channels_of(read_image(path), 8), channels_of(picture, 8))
    with pytest.raises(LiifError, match="exists"):
        write_image(picture, path)
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "umask"), reason="POSIX permissions only")
def test_new_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_image(Picture.from_array(random_pixels(2, 2, 3, 8)), tmp_path / "out.png")
    finally:
        os.umask(old)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o644


def test_lossy_sources_are_recognised(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    rgba, rgb = Image.fromarray(pixels), Image.fromarray(pixels[..., :3])
    saved = {"a.jpg": (rgb, {}), "b.webp": (rgb, {"quality": 80}),
             "c.webp": (rgba, {"quality": 80}),  # lossy colour after an alpha chunk
             "d.webp": (rgb, {"lossless": True}), "e.webp": (rgba, {"lossless": True}),
             "f.png": (rgb, {}), "g.tif": (rgb, {})}
    for name, (image, options) in saved.items():
        image.save(tmp_path / name, **options)
    lossy = {name for name in saved if read_image(tmp_path / name).lossy}
    assert lossy == {"a.jpg", "b.webp", "c.webp"}
    assert {name for name in saved if name.endswith(".webp")
            and webp_is_lossy(tmp_path / name)} == {"b.webp", "c.webp"}
    (tmp_path / "short.webp").write_bytes((tmp_path / "b.webp").read_bytes()[:14])
    assert not webp_is_lossy(tmp_path / "short.webp")  # cut before its first chunk
    assert [read_image(tmp_path / name).quality for name in ("a.jpg", "b.webp", "f.png")] == \
        [75, None, None]  # Pillow's default JPEG quality


@pytest.mark.parametrize("quality", [5, 30, 50, 51, 75, 90, 92, 93, 95, 100])
def test_jpeg_quality_is_read_back_from_the_tables(tmp_path, quality):
    pixels = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "q.jpg", quality=quality)
    with Image.open(tmp_path / "q.jpg") as image:
        assert jpeg_quality(image) == quality
    assert read_image(tmp_path / "q.jpg").quality == quality
    Image.fromarray(pixels).save(tmp_path / "q.png")
    with Image.open(tmp_path / "q.png") as image:
        assert jpeg_quality(image) is None


# ----------------------------------------------------------------- format limits, up front


@pytest.mark.parametrize(("name", "size", "fits"), [
    ("a.jpg", (2, 65_500), True), ("a.jpg", (65_501, 2), False),
    ("a.webp", (16_383, 2), True), ("a.webp", (2, 16_384), False),
    ("a.png", (2, 2**31 - 1), True), ("a.png", (2, 2**31), False),
    ("a.bmp", (65_000, 65_000), True),  # 8-bit gray: 4.2e9 bytes, under 4 GiB
    ("a.tif", (65_536, 65_535), True), ("a.tif", (65_536, 65_537), False),  # 4 GiB of gray
])
def test_output_size_limits_of_each_format(name, size, fits):
    if fits:
        check_output_size(name, size)
    else:
        with pytest.raises(LiifError, match="too large|4 GiB"):
            check_output_size(name, size)


def test_output_size_limits_count_the_channels_written(tmp_path):
    colour = Picture.from_array(np.zeros((2, 2, 3), np.uint8))
    gray16 = Picture.from_array(np.zeros((2, 2), np.uint16))
    check_output_size("a.bmp", (40_000, 35_000), gray16)  # 1.4 GB of 8-bit gray
    with pytest.raises(LiifError, match="BMP file"):
        check_output_size("a.bmp", (40_000, 36_000), colour)  # 4.3 GB of RGB
    with pytest.raises(LiifError, match="classic TIFF"):
        check_output_size("a.tif", (50_000, 50_000), gray16)  # 2.5 G samples of 2 bytes
    check_output_size("a.tif", (50_000, 50_000), Picture.from_array(np.zeros((2, 2), np.uint8)))
    with pytest.raises(LiifError, match="16,383"):  # write_image checks too, before encoding
        write_image(Picture.from_array(np.zeros((1, 16_384, 3), np.uint8)), tmp_path / "w.webp")
    assert list(tmp_path.iterdir()) == []


def test_a_name_too_long_for_the_file_system_is_refused_before_writing(tmp_path):
    with pytest.raises(LiifError, match="name is too long"):
        check_output(tmp_path / ("x" * 256 + ".png"))
    check_output(tmp_path / ("x" * 251 + ".png"))  # 255 bytes: fits
