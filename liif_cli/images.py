"""Image files in and out: decode into float arrays for the model, write results back faithfully.

Reading keeps what a photographer would miss if it vanished: 16-bit precision, the ICC profile,
transparency, grayscale-ness and the EXIF metadata (camera, date, GPS, ...). EXIF orientation is
applied to the pixels, so the model sees the picture upright: the EXIF carried to the output says
orientation 1 (upright) and gives the output's pixel size.

Writing is atomic: the output file appears complete or not at all, and an existing file is only
replaced when asked to. An upscale is written from a StoredPicture, which holds it at the depth
the file stores (filled tile by tile as it is rendered: no float copy of the output is made);
a float Picture is quantised the same way, band by band, as it is written.

Every problem the user can cause (missing, damaged or unsupported files, unwritable outputs) is
raised as a one-line :class:`LiifError` that names the file.
"""

from __future__ import annotations

import copy
import errno
import io
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from liif_cli.errors import LiifError, one_line
from liif_cli.files import check_regular_file, create_temp, move_into_place
from liif_cli.sizing import DEFAULT_MAX_PIXELS, MAX_SIDE

_FORMAT_BY_SUFFIX = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_FORMAT_BY_SUFFIX)

_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})  # can store transparency
_DEEP_FORMATS = frozenset({"PNG", "TIFF"})  # can store 16 bits per channel
_GRAY_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "BMP"})  # WebP is always colour
_ICC_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "TIFF"})

_ORIENTATION_TAG = 0x0112
_EXIF_IFD_TAG = 0x8769  # the EXIF sub-directory (camera settings, dates, pixel size)
_GPS_IFD_TAG = 0x8825
_IMAGE_WIDTH_TAG, _IMAGE_LENGTH_TAG = 0x0100, 0x0101
_PIXEL_X_TAG, _PIXEL_Y_TAG = 0xA002, 0xA003  # PixelXDimension, PixelYDimension
# TIFF tags that say how a TIFF file stores its pixels (strips, compression, ...; read as EXIF
# from TIFF sources): not metadata to carry over. The ICC profile travels separately.
_LAYOUT_TAGS = frozenset({
    254, 255, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 292, 293,
    317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347,
    *range(512, 522), 529, 530, 531, 532, 34377, 34675, 37724,
})
# A TIFF's own size and resolution tags (they describe the TIFF file, not the scene; liif's
# TIFF writer sets its own): left out of what a TIFF source carries as EXIF.
_TIFF_FRAME_TAGS = frozenset({256, 257, 282, 283, 296})
_JPEG_MAX_EXIF = 65533  # one APP1 segment
_EXIF_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})  # where write_image embeds EXIF
# The longest side each format holds: libjpeg's JPEG_MAX_DIMENSION, WebP's 14-bit sizes, and
# the 31 bits of PNG's and BMP's (signed) sizes; TIFF's 32-bit sizes go beyond its file size.
_MAX_SIDE_OF = {"JPEG": 65_500, "WEBP": 16_383, "PNG": MAX_SIDE, "BMP": MAX_SIDE,
                "TIFF": 2**32 - 1}
_MAX_FILE_BYTES = 2**32 - 1  # BMP's file size field, and the offsets of classic TIFF files
# zlib level of PNG and TIFF outputs: 3 wrote a 2048x1536 photo PNG in 0.37 s against 1.34 s
# at Pillow's default 6, 3.5% larger (1 was 0.23 s and 8% larger; 2-core AMD EPYC).
DEFLATE_LEVEL = 3
_PNG_BAND_BYTES = 1 << 20  # 16-bit PNG rows are filtered and compressed this much at a time
_TIFF_STRIP_BYTES = 256 << 10  # uncompressed size of one TIFF strip

# Pillow decodes 16-bit RGB(A) by keeping only the high byte of each sample. Its unpacker for the
# opposite byte order keeps the *other* byte, so decoding a second time with that rawmode yields
# the low bytes, and high * 256 + low is the exact value. Keys: rawmodes Pillow picks for 16-bit
# colour (B = big-endian, L = little-endian, N = native, used after libtiff decompression).
_NATIVE_LOW = "16B" if sys.byteorder == "little" else "16L"
_LOW_BYTE_RAWMODE = {
    f"{base};{order}": f"{base};{low}"
    for base in ("RGB", "RGBA", "RGBX")
    for order, low in (("16B", "16L"), ("16L", "16B"), ("16N", _NATIVE_LOW))
}

# What Pillow may raise while decoding a damaged file.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
    MemoryError,
)


@dataclass
class Picture:
    """A decoded image ready for the model, plus what must be carried to the output."""

    rgb: np.ndarray  # float32 (H, W, 3) in [0, 1]; grayscale images are replicated to 3 channels
    alpha: np.ndarray | None  # float32 (H, W) in [0, 1], or None
    grayscale: bool  # input had no colour: write it back as grayscale
    bit_depth: int  # 8 or 16 (per channel)
    icc_profile: bytes | None
    format: str  # PIL format name of the source, e.g. 'PNG', 'JPEG', 'WEBP', 'TIFF', 'BMP'
    # The source's EXIF block as Pillow writes it (b'Exif\0\0' + TIFF structure), orientation
    # already set to 1 (the pixels are upright); None: none, or dropped (--strip-metadata).
    exif: bytes | None = None
    # The source was lossily compressed (JPEG, lossy WebP), and at what quality (1-100) if
    # the file says (JPEG: jpeg_quality); `--weights auto` picks the model from these.
    lossy: bool = False
    quality: int | None = None

    def __post_init__(self) -> None:
        self.rgb = np.asarray(self.rgb, dtype=np.float32)
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"rgb must have shape (H, W, 3), got {self.rgb.shape}")
        if self.alpha is not None:
            self.alpha = np.asarray(self.alpha, dtype=np.float32)
            if self.alpha.shape != self.rgb.shape[:2]:
                raise ValueError(
                    f"alpha must have shape {self.rgb.shape[:2]}, got {self.alpha.shape}"
                )
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.rgb.shape[0], self.rgb.shape[1]

    def with_pixels(self, rgb: np.ndarray, alpha: np.ndarray | None) -> Picture:
        """A new Picture with these pixels (e.g. upscaled) and this one's metadata."""
        return replace(self, rgb=rgb, alpha=alpha)

    @classmethod
    def from_array(
        cls,
        pixels: np.ndarray,
        *,
        bit_depth: int | None = None,
        icc_profile: bytes | None = None,
        format: str = "PNG",
    ) -> Picture:
        """Build a Picture from (H, W) or (H, W, C) pixels, C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.

        uint8 and uint16 are scaled to [0, 1] and set the bit depth; floats are taken as already
        in [0, 1] (bit depth 8 unless given).
        """
        array = np.asarray(pixels)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"pixels must be (H, W) or (H, W, 1-4), got {array.shape}")
        if array.dtype == np.uint8:
            values, depth = array.astype(np.float32) / np.float32(255), 8
        elif array.dtype == np.uint16:
            values, depth = array.astype(np.float32) / np.float32(65535), 16
        elif np.issubdtype(array.dtype, np.floating):
            values, depth = array.astype(np.float32), 8
        else:
            raise ValueError(f"pixels must be uint8, uint16 or float, got {array.dtype}")
        channels = array.shape[2]
        has_alpha = channels in (2, 4)
        colour = values[:, :, : channels - has_alpha]
        return cls(
            rgb=np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour,
            alpha=values[:, :, -1] if has_alpha else None,
            grayscale=channels <= 2,
            bit_depth=depth if bit_depth is None else bit_depth,
            icc_profile=icc_profile,
            format=format,
        )


@dataclass(frozen=True)
class Layout:
    """How an image's samples are stored (in a file, or a uint8/uint16 array): one colour
    channel (`gray`: the mean of R, G and B) or three, then alpha or not, at 8 or 16 bits."""

    gray: bool
    alpha: bool
    depth: int  # bits per sample: 8 or 16

    @property
    def channels(self) -> int:
        return (1 if self.gray else 3) + self.alpha

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint16 if self.depth == 16 else np.uint8


_RGB8 = Layout(gray=False, alpha=False, depth=8)


class StoredPicture:
    """A picture at the depth and in the channel layout it is stored with (`layout`): what
    write_image writes, filled tile by tile as the output is rendered (`put_rgb`,
    `put_alpha`) and quantised as `quantise` rounds, so it holds exactly what write_image
    would store for the float picture, without a full-size float copy ever being made.

    8-bit RGB bound for Pillow (`pillow=True`: a PNG, JPEG, WebP or BMP file, or a PIL image
    for the Python API) lives in a PIL image, which Pillow keeps at 4 bytes a pixel and
    encodes as it is; everything else in an (H, W, channels) uint8 or uint16 array, which
    Pillow shares where it can (`pil_image`). `icc_profile` and `exif` as in Picture.
    """

    def __init__(self, size: tuple[int, int], layout: Layout, *, pillow: bool = False,
                 icc_profile: bytes | None = None, exif: bytes | None = None):
        height, width = size
        self.size, self.layout = (height, width), layout
        self.icc_profile, self.exif = icc_profile, exif
        self._image: Image.Image | None = None
        self._array: np.ndarray | None = None
        if pillow and layout == _RGB8:
            self._image = Image.new("RGB", (width, height))
        else:
            self._array = np.empty((height, width, layout.channels), layout.dtype)

    def put_rgb(self, rows: slice, cols: slice, rgb: np.ndarray) -> None:
        """Store (h, w, 3) float RGB in [0, 1] at output rows x cols (slices); gray layouts
        take the mean of R, G and B, as write_image reduces a colour picture to gray."""
        colour = rgb.mean(axis=2, keepdims=True) if self.layout.gray else rgb
        if self._image is not None:
            tile = Image.fromarray(quantise(colour, 8))
            self._image.paste(tile, (cols.start or 0, rows.start or 0))
        else:
            quantise(colour, self.layout.depth, self.pixels[rows, cols, :colour.shape[2]])

    def put_alpha(self, rows: slice, alpha: np.ndarray) -> None:
        """Store (h, W) float alpha in [0, 1] at output rows `rows` (whole rows)."""
        if not self.layout.alpha:
            raise ValueError("this picture's layout has no alpha channel")
        quantise(alpha, self.layout.depth, self.pixels[rows, :, -1])

    def fill(self, picture: Picture) -> StoredPicture:
        """Store all of `picture` (of this size), in bands of rows, so that no full-size
        float copy is made; returns self."""
        if picture.size != self.size:
            raise ValueError(f"picture of size {picture.size} for a StoredPicture of {self.size}")
        if self.layout.alpha and picture.alpha is None:
            raise ValueError("the layout has an alpha channel and the picture has none")
        height, width = self.size
        band = max(1, _QUANTISE_BLOCK // (3 * width))
        for top in range(0, height, band):
            rows = slice(top, min(top + band, height))
            self.put_rgb(rows, slice(0, width), picture.rgb[rows])
            if self.layout.alpha:
                assert picture.alpha is not None
                self.put_alpha(rows, picture.alpha[rows])
        return self

    @property
    def pixels(self) -> np.ndarray:
        """The (H, W, channels) samples (a copy where a PIL image holds them)."""
        if self._array is not None:
            return self._array
        assert self._image is not None
        return np.asarray(self._image)

    def pil_image(self) -> Image.Image:
        """The samples as a PIL image (L, LA, RGB, RGBA or, for 16-bit gray, I;16): the one
        that holds 8-bit RGB for Pillow, else one sharing the array's memory where Pillow
        can (L, RGBA, I;16: read-only, copied on a first write) or a copy (LA, RGB).
        16-bit colour has no PIL mode."""
        if self._image is not None:
            return self._image
        array = self.pixels
        if self.layout.depth == 16 and self.layout.channels > 1:
            raise ValueError("Pillow has no mode for 16-bit colour or gray+alpha")
        if array.shape[2] == 1:
            # No mode argument: Pillow 13 refuses mode="I;16" here; little-endian uint16 is I;16.
            return Image.fromarray(array[:, :, 0].astype("<u2", copy=False)
                                   if self.layout.depth == 16 else array[:, :, 0])
        return Image.fromarray(array)

    def crop(self, top: int, left: int, bottom: int, right: int) -> StoredPicture:
        """Rows [top, bottom) and columns [left, right) of it, as a new StoredPicture."""
        out = copy.copy(self)  # the layout and metadata; the samples follow
        out.size = (bottom - top, right - left)
        out._image = None if self._image is None else self._image.crop((left, top, right, bottom))
        out._array = None if self._array is None else np.ascontiguousarray(
            self._array[top:bottom, left:right])
        return out


def output_layout(picture: Picture, path: str | Path) -> Layout:
    """How write_image stores `picture` (or an upscale of it) in the format `path`'s suffix
    names; LiifError for a suffix it does not write."""
    fmt = _format_of(Path(path))
    return _layout(picture, fmt)


def stored_output(picture: Picture, size: tuple[int, int], path: str | Path) -> StoredPicture:
    """An empty StoredPicture of (H, W) `size` in which to render `picture`'s upscale for
    writing to `path`: the layout, ICC profile and EXIF write_image would store it with."""
    fmt = _format_of(Path(path))
    layout = _layout(picture, fmt)
    return StoredPicture(size, layout, pillow=_through_pillow(fmt, layout),
                         icc_profile=picture.icc_profile, exif=picture.exif)


def store(picture: Picture, layout: Layout, *, pillow: bool = False) -> StoredPicture:
    """`picture` quantised into `layout` (StoredPicture.fill), with its ICC profile and EXIF;
    in a PIL image if `pillow` (see StoredPicture)."""
    return StoredPicture(picture.size, layout, pillow=pillow, icc_profile=picture.icc_profile,
                         exif=picture.exif).fill(picture)


# --------------------------------------------------------------------------------------- reading


SizeCheck = Callable[[tuple[int, int]], None]  # called with the upright (H, W) before decoding


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               check: SizeCheck | None = None) -> Picture:
    """Decode the image at `path` into an upright Picture; any problem raises LiifError.

    Before any pixel is decoded, the size in the file's header is checked: an image over
    `max_pixels` pixels (0: no limit) is refused (this replaces Pillow's own decompression-bomb
    limit), and `check`, if given, may raise LiifError for a size the caller cannot handle
    (e.g. an output that would be too large). Animated and multi-page files are refused rather
    than silently reduced to their first frame (liif_cli.animation upscales every frame).
    Pillow's warnings (e.g. about corrupt EXIF data)
    are not passed on: what matters is raised as LiifError.
    """
    path = Path(path)
    if not os.path.exists(path):  # os.path, unlike Path, never raises (e.g. on EACCES)
        raise LiifError(f"{path}: no such file")
    if os.path.isdir(path):
        raise LiifError(f"{path}: is a folder, not an image file")
    check_regular_file(path)
    try:
        with _quiet_pillow(), Image.open(path) as image:
            _check_header(image, path, max_pixels, check)
            pixels = _decode_pixels(image, path)
            icc_profile = image.info.get("icc_profile") or None
            orientation = _orientation(image)
            exif = _carried_exif(image)
            source_format = image.format or "PNG"
            lossy, quality = compression(image)
    except LiifError:
        raise
    except UnidentifiedImageError as exc:
        problem = _unsupported_tiff(path) or "not an image, or not a format liif can read"
        raise LiifError(f"{path}: {problem}") from exc
    except PermissionError as exc:
        raise LiifError(f"{path}: permission denied") from exc
    except MemoryError as exc:
        raise LiifError(f"{path}: not enough memory to decode it") from exc
    except _DECODE_ERRORS as exc:
        raise LiifError(f"{path}: damaged or unreadable image ({one_line(exc)})") from exc

    if not icc_fits(icc_profile, pixels.shape[2]):
        icc_profile = None  # e.g. a CMYK JPEG's profile: its pixels are now sRGB
    picture = Picture.from_array(
        _orient(pixels, orientation), icc_profile=icc_profile, format=source_format
    )
    picture.exif, picture.lossy, picture.quality = exif, lossy, quality
    return picture


def describe_source(picture: Picture) -> str:
    """How the picture's source was stored, in a few words: 'JPEG, quality 75', 'lossy
    WEBP', 'PNG'."""
    if picture.quality is not None:  # a JPEG, or an MPO: a camera JPEG with extra pictures
        return f"JPEG, quality {picture.quality}"
    if picture.format == "WEBP":
        return f"{'lossy' if picture.lossy else 'lossless'} WebP"
    return picture.format


_JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a camera JPEG with extra pictures after the main one


def compression(image: Image.Image) -> tuple[bool, int | None]:
    """How a PIL image opened from a file was stored, as Picture.lossy and Picture.quality:
    whether lossily (a JPEG or a lossy WebP), and the JPEG's quality (jpeg_quality)."""
    filename = getattr(image, "filename", "")
    lossy = image.format in _JPEG_FORMATS or (
        image.format == "WEBP" and bool(filename) and webp_is_lossy(filename))
    return lossy, jpeg_quality(image)


# The luminance quantisation table of the JPEG standard (ITU-T T.81, Annex K), which the
# IJG/libjpeg encoder (Pillow's) scales by its quality setting.
_JPEG_LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


def _ijg_luma_table(quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_JPEG_LUMA_TABLE * scale + 50) // 100, 1, 255)


def jpeg_quality(image: Image.Image) -> int | None:
    """The IJG quality (1-100) whose luminance table is nearest the JPEG's own: exact for
    files written by libjpeg-based encoders, the nearest equivalent for others (cameras).
    None for anything but a JPEG."""
    tables = getattr(image, "quantization", None) if image.format in _JPEG_FORMATS else None
    if not tables or len(tables.get(0, ())) != 64:
        return None
    # Order does not matter for the comparison's sum, only which table entries are compared:
    # sort both, since encoders store them in zigzag or natural order.
    luma = np.sort(np.asarray(tables[0], dtype=np.int64))
    errors = [np.abs(np.sort(_ijg_luma_table(q)) - luma).sum() for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


def webp_is_lossy(path: str | Path) -> bool:
    """Whether the WebP file at `path` stores its (first) picture lossily: a 'VP8 ' bitstream
    chunk rather than a lossless 'VP8L' one. Pillow does not say, so read the RIFF chunk
    headers (a few bytes each; payloads are skipped), stepping into an animation's first
    frame. False when no bitstream chunk is found."""
    with open(path, "rb") as f:
        if f.read(12)[8:] != b"WEBP":
            return False
        for _ in range(64):  # a picture's chunks come in the first few
            header = f.read(8)
            if len(header) < 8:
                return False
            fourcc, size = header[:4], int.from_bytes(header[4:], "little")
            if fourcc in (b"VP8 ", b"VP8L"):
                return fourcc == b"VP8 "
            # An ANMF frame's sub-chunks follow its 16-byte frame header.
            f.seek(16 if fourcc == b"ANMF" else size + (size & 1), os.SEEK_CUR)
    return False


@contextmanager
def _quiet_pillow() -> Iterator[None]:
    """No Pillow warnings, and no Pillow decompression-bomb limit: read_image applies its own
    (--max-pixels) from the header."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _check_header(image: Image.Image, path: Path, max_pixels: int,
                  check: SizeCheck | None) -> None:
    """Refuse, before decoding, what read_image must not decode (see there)."""
    _check_single_frame(image, str(path))
    width, height = image.size
    if max_pixels > 0 and width * height > max_pixels:
        raise LiifError(f"{path}: input {width}x{height} has {width * height:,} pixels, above "
                        f"--max-pixels {max_pixels:,}; raise --max-pixels to allow it")
    if check is not None:
        # A PNG's EXIF block may follow the pixels: its orientation is then only known after
        # decoding (the caller checks again), so take the stored orientation here.
        known = image.format != "PNG" or "exif" in image.info
        upright = (width, height) if known and _orientation(image) in (5, 6, 7, 8) \
            else (height, width)
        check(upright)


def _check_single_frame(image: Image.Image, name: str) -> None:
    """Refuse animated and multi-page images rather than reduce them to their first frame."""
    # MPO: a camera JPEG whose extra pictures (previews, depth maps) follow the main one.
    if image.format != "MPO" and getattr(image, "n_frames", 1) > 1:
        kind = "pages" if image.format == "TIFF" else "frames"
        suffix = Path(name).suffix.lower()
        if suffix and Image.registered_extensions().get(suffix) != image.format:
            raise LiifError(f"{name}: is a {image.format} of {image.n_frames} {kind} under a "
                            f"{suffix} name; name it .{image.format.lower()} to upscale every "
                            "frame")  # e.g. a GIF as .jpg
        raise LiifError(f"{name}: has {image.n_frames} {kind}; this reads single images "
                        "only (`liif upscale` and `liif resize` upscale every frame of a file)")


def upright_pixels(image: Image.Image, name: str = "image") -> np.ndarray:
    """A loaded PIL image's pixels (pil_pixels) as read_image gives a file's: upright as its
    EXIF orientation says; LiifError for an animated or multi-page image."""
    _check_single_frame(image, name)
    return _orient(pil_pixels(image, name), _orientation(image))


def _decode_pixels(image: Image.Image, path: Path) -> np.ndarray:
    """Fully decode (so truncation is caught) to uint8/uint16 (H, W, C), C as in from_array."""
    rawmode = _tile_rawmode(image)
    if rawmode == "LA;16B":
        # 16-bit gray+alpha PNG. Pillow would keep the high bytes only; the 'RGBA' unpacker has the
        # same 4 bytes per pixel and copies them unchanged, so both bytes of each sample survive.
        _set_rawmode(image, "RGBA")
        image.load()
        b = np.asarray(image).astype(np.uint16)
        return np.stack([b[:, :, 0] << 8 | b[:, :, 1], b[:, :, 2] << 8 | b[:, :, 3]], axis=2)
    if rawmode in _LOW_BYTE_RAWMODE:
        image.load()
        high = np.asarray(image)
        with Image.open(path) as again:
            _set_rawmode(again, _LOW_BYTE_RAWMODE[rawmode])
            again.load()
            low = np.asarray(again)
        return _add_key_alpha(high.astype(np.uint16) << 8 | low, image.info.get("transparency"))

    image.load()
    return pil_pixels(image, str(path))


def _check_planar_tiff(image: Image.Image, name: str) -> None:
    """LiifError for an uncompressed TIFF of more than 8 bits a sample stored one plane per
    channel: Pillow unpacks those planes as 8-bit samples, scrambling the picture. (Through
    libtiff, compressed ones come out right at 8-bit precision.)"""
    tags = getattr(image, "tag_v2", None)
    if image.format == "TIFF" and tags is not None and tags.get(284) == 2 \
            and tags.get(277, 1) > 1 and tags.get(259, 1) == 1 \
            and max(tags.get(258, (8,))) > 8:
        raise LiifError(f"{name}: an uncompressed TIFF of more than 8 bits a sample stored "
                        "one plane per channel (planar) is not supported; save it with "
                        "interleaved (contiguous) samples or compressed")


def pil_pixels(image: Image.Image, name: str = "image") -> np.ndarray:
    """A loaded PIL image's pixels as uint8/uint16 (H, W, C), C as in Picture.from_array:
    16-bit and 32-bit gray ('I;16', 'I') and float gray in [0, 1] ('F') as uint16 gray;
    palette, bilevel, CMYK and YCbCr as RGB, or RGBA/LA when they carry transparency."""
    _check_planar_tiff(image, name)
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit gray ("I" in older Pillow)
        values = np.asarray(image)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise LiifError(f"{name}: 32-bit integer pixel values outside 0-65535 are not "
                            "supported; convert to 8- or 16-bit first")
        gray = values.astype(np.uint16)[:, :, None]
        return _add_key_alpha(gray, image.info.get("transparency"))
    if mode == "F":  # 32-bit float gray (TIFF): fine when in [0, 1], kept as 16-bit gray
        values = np.asarray(image, dtype=np.float32)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0
                                and values.max() <= 1):
            raise LiifError(f"{name}: floating-point pixel values outside [0, 1] (e.g. HDR) "
                            "are not supported; convert to 8- or 16-bit first")
        return np.rint(values * 65535).astype(np.uint16)[:, :, None]
    if mode in ("1", "L", "LA", "La") or (mode in ("P", "PA") and _gray_palette(image)):
        target = "LA" if image.has_transparency_data else "L"
    elif mode in ("P", "PA", "RGB", "RGBX", "RGBA", "RGBa", "YCbCr", "CMYK"):
        target = "RGBA" if image.has_transparency_data else "RGB"
    else:
        raise LiifError(f"{name}: unsupported pixel format {mode!r}")
    if mode == "CMYK" and target == "RGB":
        managed = _cmyk_to_srgb(image)
        if managed is not None:
            return np.asarray(managed)
    pixels = np.asarray(image.convert(target))
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _gray_palette(image: Image.Image) -> bool:
    """Whether a palette image's colours are all grays (a gray image saved with a palette,
    as some tools write 8-bit grayscale), so that it stays grayscale."""
    palette = image.getpalette("RGB")
    if not palette:
        return False
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)
    return bool((colours == colours[:, :1]).all())


def _cmyk_to_srgb(image: Image.Image) -> Image.Image | None:
    """A CMYK image with its own CMYK colour profile, converted to sRGB through that profile
    (the colours a colour-managed viewer shows; Pillow's plain conversion ignores the
    profile); None without such a profile or where the conversion fails."""
    profile = image.info.get("icc_profile") or b""
    if profile[16:20] != b"CMYK":
        return None
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                         outputMode="RGB")
    except Exception:  # no littlecms, or a broken profile: the plain conversion, as before
        return None


_TIFF_SAMPLE_KINDS = {1: "integer", 2: "signed integer", 3: "floating-point"}


def _unsupported_tiff(path: Path) -> str | None:
    """For a TIFF that Pillow cannot open, what kind it is ('16-bit integer gray+alpha TIFF
    is not supported; ...'), read from its first directory; None if not a readable TIFF."""
    try:
        with open(path, "rb") as file:
            head = file.read(8)
            order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(head[:4])
            if order is None:
                return None
            file.seek(struct.unpack(order + "I", head[4:])[0])
            (count,) = struct.unpack(order + "H", file.read(2))
            entries = [struct.unpack(order + "HHI4s", file.read(12)) for _ in range(count)]
            tags = {}
            for tag, kind, n, field in entries:
                if tag not in (258, 277, 339) or kind not in (3, 4):
                    continue
                size = 2 if kind == 3 else 4
                if n * size > 4:
                    file.seek(struct.unpack(order + "I", field)[0])
                    field = file.read(n * size)
                tags[tag] = struct.unpack(f"{order}{n}{'H' if kind == 3 else 'I'}",
                                          field[:n * size])
    except (OSError, struct.error):
        return None
    bits = tags.get(258, (1,))[0]
    channels = tags.get(277, (1,))[0]
    kind = _TIFF_SAMPLE_KINDS.get(tags.get(339, (1,))[0], "unknown-format")
    layout = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA or CMYK"}.get(
        channels, f"{channels}-channel")
    return (f"{bits}-bit {kind} {layout} TIFF is not supported; convert it to 8- or 16-bit "
            "integer RGB, RGBA or gray first")


def _tile_rawmode(image: Image.Image) -> str | None:
    """The rawmode all of the image's tiles decode with, or None if they differ or have none."""
    rawmodes = set()
    for tile in image.tile:
        args = tile[3]
        if not isinstance(args, str):
            args = args[0] if args and isinstance(args[0], str) else None
        rawmodes.add(args)
    return rawmodes.pop() if len(rawmodes) == 1 else None


def _set_rawmode(image: Image.Image, rawmode: str) -> None:
    """Make the pending decode of `image` unpack its data with `rawmode`."""
    tiles = []
    for tile in image.tile:
        args = tile[3]
        args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
        tiles.append(tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args))
    image.tile = tiles


def _add_key_alpha(pixels: np.ndarray, key: object) -> np.ndarray:
    """Turn a PNG colour key (tRNS: 'this exact value is transparent') into an alpha channel."""
    if key is None or isinstance(key, bytes):
        return pixels
    key = np.atleast_1d(np.asarray(key, dtype=np.int64))
    if key.size != pixels.shape[2]:
        return pixels
    opaque = np.any(pixels != key, axis=2)
    alpha = np.where(opaque, np.iinfo(pixels.dtype).max, 0).astype(pixels.dtype)
    return np.concatenate([pixels, alpha[:, :, None]], axis=2)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8), or 1 when absent or unreadable."""
    try:
        value = int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # EXIF is optional metadata: a broken block must not stop the upscale
        return 1
    return value if 1 <= value <= 8 else 1


def _carried_exif(image: Image.Image) -> bytes | None:
    """The image's EXIF to carry to the output: TIFF layout tags and the thumbnail dropped,
    orientation set to 1 (read_image makes the pixels upright); None if there is none or it
    cannot be read (EXIF is optional: a broken block must not stop the upscale)."""
    try:
        exif = image.getexif()
        dropped = _LAYOUT_TAGS | (_TIFF_FRAME_TAGS if image.format == "TIFF" else frozenset())
        for tag in dropped.intersection(exif):
            del exif[tag]
        if _ORIENTATION_TAG in exif:
            exif[_ORIENTATION_TAG] = 1
        for tag in (_EXIF_IFD_TAG, _GPS_IFD_TAG):
            if tag in exif:
                exif.get_ifd(tag)  # load the sub-directory, so that tobytes writes it
        return exif.tobytes() if len(exif) else None
    except Exception:
        return None


def _output_exif(exif: bytes | None, fmt: str, size: tuple[int, int]) -> bytes | None:
    """`exif` for an output of `fmt` and (H, W) `size`: the pixel-size tags that are present
    (ImageWidth/ImageLength, PixelXDimension/PixelYDimension) set to the output's size. None
    where `fmt` takes no EXIF, or where it would not fit (a JPEG holds at most 64 KB)."""
    if not exif or fmt not in _EXIF_FORMATS:
        return None
    height, width = size
    try:
        block = Image.Exif()
        block.load(exif)
        for tag, value in ((_IMAGE_WIDTH_TAG, width), (_IMAGE_LENGTH_TAG, height)):
            if tag in block:
                block[tag] = value
        sub = block.get_ifd(_EXIF_IFD_TAG)
        for tag, value in ((_PIXEL_X_TAG, width), (_PIXEL_Y_TAG, height)):
            if tag in sub:
                sub[tag] = value
        block.get_ifd(_GPS_IFD_TAG)
        data = block.tobytes()
    except Exception:
        return None
    return None if fmt == "JPEG" and len(data) > _JPEG_MAX_EXIF else data


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Make (H, W, C) pixels upright; same result as PIL.ImageOps.exif_transpose."""
    if orientation in (5, 6, 7, 8):
        pixels = pixels.transpose(1, 0, 2)  # 90-degree cases: transpose, then flip
    flips = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    return np.ascontiguousarray(np.flip(pixels, flips) if flips else pixels)


def dropped_metadata(picture: Picture, path: Path) -> list[str]:
    """What of `picture`'s metadata write_image cannot carry into a file at `path`: its
    colour profile (BMP holds none; a gray profile cannot describe an RGB output) and its
    EXIF (only PNG, JPEG and WebP get it), as words for a note."""
    fmt = _format_of(path)
    lost = []
    if picture.icc_profile and not _carries_icc(fmt, picture.icc_profile,
                                                _layout(picture, fmt).channels):
        lost.append("colour profile")
    if picture.exif and fmt not in _EXIF_FORMATS:
        lost.append("EXIF (camera, date, place)")
    return lost


def _carries_icc(fmt: str, profile: bytes | None, channels: int) -> bool:
    """Whether write_image embeds `profile` in a `fmt` file of `channels` channels."""
    return fmt in _ICC_FORMATS and icc_fits(profile, channels)


def icc_fits(profile: bytes | None, channels: int) -> bool:
    """Whether an ICC profile describes pixels with this many channels (gray or RGB, +alpha)."""
    if not profile or len(profile) < 20:
        return False
    return profile[16:20] == (b"GRAY" if channels <= 2 else b"RGB ")


# --------------------------------------------------------------------------------------- writing


def output_suffix_supported(path: str | Path) -> bool:
    """Whether write_image can write a file with this name's suffix (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


def suffix_for_format(format: str) -> str:
    """A suffix to write a picture from a `format` source with: the same format, or '.png'."""
    return {"JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}.get(
        format.upper(), ".png"
    )


def default_suffix(source: str | Path) -> str:
    """The suffix of an output made from `source` when the user names no format: the
    source's own if liif writes it, else the one for the format the file's header names
    (a .jfif or extension-less JPEG gives .jpg; a GIF, or an unreadable file, .png)."""
    source = Path(source)
    if output_suffix_supported(source):
        return source.suffix
    try:
        with _quiet_pillow(), Image.open(source) as image:
            return suffix_for_format(image.format or "")
    except Exception:  # the job reports why it cannot read the file
        return ".png"


def _format_of(path: Path) -> str:
    """The format write_image writes at `path` (PIL's name), from its suffix; LiifError for a
    suffix it does not write."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        known = ", ".join(sorted(SUPPORTED_SUFFIXES))
        problem = f"unsupported output format {suffix!r}" if suffix else "no file extension"
        raise LiifError(f"{path}: {problem}; use one of {known}")
    return _FORMAT_BY_SUFFIX[suffix]


def check_output(
    path: str | Path, picture: Picture | StoredPicture | None = None, *,
    overwrite: bool = False, size: tuple[int, int] | None = None,
) -> Path:
    """Raise LiifError now if writing `picture` to `path` would fail; return the path.

    `size`: the (H, W) the output will have, if not the picture's own (it is not rendered
    yet); checked against the format's limits (check_output_size). Cheap, so the CLI can call
    it before a slow upscale. write_image calls it again.
    """
    path = Path(path)
    fmt = _format_of(path)
    _check_name_fits(path)
    check_output_size(path, size, picture)
    check_output_place(path, overwrite)
    if isinstance(picture, Picture) and fmt not in _ALPHA_FORMATS and is_transparent(picture):
        raise LiifError(
            f"{path}: {fmt} cannot store transparency; write a .png, .webp or .tif file instead"
        )
    return path


def check_output_place(path: Path, overwrite: bool = False) -> None:
    """LiifError unless a file can be written at `path`: not a folder there, an existing
    writable folder around it, and no file there already unless `overwrite`. Shared by
    still and video outputs."""
    if os.path.isdir(path):  # os.path, unlike Path, never raises (e.g. on EACCES)
        raise LiifError(f"{path}: is a folder; give an output file name")
    folder = path.parent
    if not os.path.exists(folder):
        raise LiifError(f"{path}: output folder {folder} does not exist")
    if not os.path.isdir(folder):
        raise LiifError(f"{path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LiifError(f"{path}: no permission to write in folder {folder}")
    if os.path.lexists(path) and not overwrite:
        raise LiifError(f"{path}: already exists; use --overwrite to replace it")


def check_output_size(path: str | Path, size: tuple[int, int] | None,
                      picture: Picture | StoredPicture | None = None) -> None:
    """LiifError if an output of (H, W) `size` (default: the picture's) is too large for the
    format `path`'s suffix names: over 65,500 px a side for JPEG, 16,383 for WebP, 2^31 - 1
    for PNG and BMP; a BMP file or a classic TIFF file (whose offsets are 32-bit) over 4 GiB,
    TIFF counting its pixels uncompressed. Without a picture the smallest layout (8-bit gray)
    is assumed, so nothing that could be written is refused."""
    fmt = _FORMAT_BY_SUFFIX.get(Path(path).suffix.lower())
    size = size if size is not None else (picture.size if picture is not None else None)
    if fmt is None or size is None:
        return
    (height, width), limit = size, _MAX_SIDE_OF[fmt]
    if max(height, width) > limit:
        raise LiifError(f"{path}: {width}x{height} is too large for {fmt}, which holds at "
                        f"most {limit:,} pixels a side; write a .png or .tif instead, or ask "
                        "for a smaller size")
    if picture is None:
        channels, depth = 1, 8
    else:
        layout = picture.layout if isinstance(picture, StoredPicture) else _layout(picture, fmt)
        channels, depth = layout.channels, layout.depth
    if fmt == "BMP":
        stride = -(-width * channels // 4) * 4  # rows padded to 4 bytes
        data = stride * height + 14 + 40 + (1024 if channels == 1 else 0)
    elif fmt == "TIFF":
        data = height * width * channels * depth // 8
    else:
        return
    if data > _MAX_FILE_BYTES:
        what = "a BMP file" if fmt == "BMP" else "a TIFF file (liif writes classic TIFF)"
        raise LiifError(f"{path}: {width}x{height} would need {data / 2**30:,.1f} GiB, more than "
                        f"the 4 GiB {what} can hold; write a .png instead, or ask for a smaller "
                        "size")


def _check_name_fits(path: Path) -> None:
    """LiifError if the file system cannot hold a file of this name (too long: ENAMETOOLONG),
    found now, before a slow render, by asking it about the name."""
    try:
        os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise LiifError(f"{path}: the name is too long for the file system "
                            f"({len(os.fsencode(path.name))} bytes; most hold at most 255 a "
                            "name); choose a shorter output name") from None


def write_image(
    picture: Picture | StoredPicture, path: str | Path, *, overwrite: bool = False,
    quality: int = 95, lossless: bool = False,
) -> None:
    """Write `picture` to `path`, in the format its suffix names, atomically.

    A StoredPicture (from `stored_output` for this path, or `store`) is written as it is; a
    Picture is quantised for the format first, as below.

    - 16-bit pictures stay 16-bit in PNG and TIFF; JPEG, WebP and BMP are 8-bit.
    - Grayscale stays grayscale (except WebP, which has no grayscale; and 16-bit gray+alpha TIFF,
      written as RGBA because Pillow-based readers cannot open 16-bit gray+alpha TIFF).
    - Transparency is kept in PNG, WebP and TIFF. JPEG and BMP cannot store it: an alpha channel
      that is fully opaque is dropped (nothing is lost), any real transparency raises LiifError
      rather than silently flattening it onto some background colour (`flatten` does that on
      request, as `--background` does).
    - The ICC profile is embedded in PNG, JPEG, WebP and TIFF.
    - EXIF (`picture.exif`) is embedded in PNG, JPEG and WebP with its pixel-size tags set to
      the output's size.
    - `quality` (1-100) applies to JPEG and WebP; JPEG uses 4:4:4 chroma (no subsampling).
      `lossless` makes WebP lossless (`quality` is then its compression effort).
    - The file is written to a hidden temporary file in the same folder and moved into place,
      so a crash or error never leaves a half-written output or clobbers an existing file.
    """
    path = check_output(path, picture, overwrite=overwrite)
    if not 1 <= quality <= 100:
        raise LiifError(f"{path}: quality must be between 1 and 100, got {quality}")
    fmt = _format_of(path)
    if isinstance(picture, StoredPicture):
        stored = picture
        _check_storable(stored.layout, fmt)
    else:
        layout = _layout(picture, fmt)
        stored = store(picture, layout, pillow=_through_pillow(fmt, layout))
    icc_profile = stored.icc_profile
    if not _carries_icc(fmt, icc_profile, stored.layout.channels):
        icc_profile = None
    exif = _output_exif(stored.exif, fmt, stored.size)

    fd, temp = create_temp(path)
    try:
        with os.fdopen(fd, "wb") as file:
            if fmt == "TIFF":
                _write_tiff(file, stored.pixels, icc_profile)
            elif fmt == "PNG" and stored.layout.depth == 16:
                _write_png16(file, stored.pixels, icc_profile, exif)
            else:
                _save_with_pillow(file, stored.pil_image(), fmt, icc_profile, quality, exif,
                                  lossless)
            file.flush()
            os.fsync(file.fileno())
        move_into_place(temp, path, overwrite)
    except LiifError:
        raise
    except (OSError, ValueError, struct.error, zlib.error, MemoryError) as exc:
        raise LiifError(f"{path}: could not write image ({one_line(exc)})") from exc
    finally:
        temp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def stores_alpha(path: str | Path) -> bool:
    """Whether the format that `path`'s suffix names can store transparency."""
    return _FORMAT_BY_SUFFIX.get(Path(path).suffix.lower()) in _ALPHA_FORMATS


def parse_colour(text: str) -> tuple[float, float, float]:
    """An opaque colour ('white', 'black', '#RRGGBB', '#RGB', any CSS colour name or
    'rgb(R, G, B)') as RGB in [0, 1]; LiifError for anything else."""
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text.strip())
    except (ValueError, AttributeError):
        raise LiifError(f"unknown colour {text!r}: use a name such as white or black, or "
                        "#RRGGBB") from None
    if len(rgb) == 4 and rgb[3] != 255:
        raise LiifError(f"colour {text!r} must be opaque (it replaces transparency)")
    return rgb[0] / 255, rgb[1] / 255, rgb[2] / 255


def flatten(picture: Picture, background: tuple[float, float, float]) -> Picture:
    """`picture` composited over an opaque `background` (RGB in [0, 1]), without alpha: what
    a viewer shows, for formats that cannot store transparency. Stays grayscale on a gray
    background."""
    if picture.alpha is None:
        return picture
    alpha = picture.alpha[:, :, None]
    colour = np.asarray(background, np.float32)
    rgb = picture.rgb * alpha + colour * (np.float32(1) - alpha)
    gray = picture.grayscale and bool(colour[0] == colour[1] == colour[2])
    return replace(picture, rgb=rgb, alpha=None, grayscale=gray)


def is_transparent(picture: Picture) -> bool:
    """Whether any pixel would be less than fully opaque once written with 8 bits."""
    return picture.alpha is not None and bool(np.any(picture.alpha < 254.5 / 255))


def _layout(picture: Picture, fmt: str) -> Layout:
    """How `fmt` stores the picture: grayscale or not, with alpha or not, bits per sample."""
    depth = 16 if picture.bit_depth == 16 and fmt in _DEEP_FORMATS else 8
    keep_alpha = picture.alpha is not None and fmt in _ALPHA_FORMATS
    gray = picture.grayscale and fmt in _GRAY_FORMATS
    if fmt == "TIFF" and depth == 16 and keep_alpha:
        gray = False  # see write_image: 16-bit gray+alpha TIFF goes out as RGBA
    return Layout(gray, keep_alpha, depth)


def _check_storable(layout: Layout, fmt: str) -> None:
    """ValueError unless `fmt` stores samples in `layout` (one that _layout can give it)."""
    if ((layout.depth == 16 and fmt not in _DEEP_FORMATS)
            or (layout.alpha and fmt not in _ALPHA_FORMATS)
            or (layout.gray and fmt not in _GRAY_FORMATS)
            or (fmt == "TIFF" and layout.depth == 16 and layout.gray and layout.alpha)):
        raise ValueError(f"{fmt} cannot store {layout}: make the picture for this output")


def _through_pillow(fmt: str, layout: Layout) -> bool:
    """Whether write_image writes `layout` in `fmt` with a Pillow encoder (all 8-bit formats
    but TIFF), rather than with its own PNG or TIFF writer."""
    return fmt != "TIFF" and layout.depth == 8


def quantise(values: np.ndarray, depth: int, out: np.ndarray | None = None) -> np.ndarray:
    """Floats in [0, 1] to uint8 (depth 8) or uint16 (depth 16), rounding to nearest; NaN
    becomes 0. Works in blocks of rows, so a huge image never needs a full float copy."""
    dtype = np.uint16 if depth == 16 else np.uint8
    top = np.float32(65535 if depth == 16 else 255)
    if out is None:
        out = np.empty(values.shape, dtype)
    rows = max(1, _QUANTISE_BLOCK // max(1, int(np.prod(values.shape[1:]))))
    for start in range(0, values.shape[0], rows):
        block = np.nan_to_num(values[start:start + rows], nan=0.0)  # a copy: ours to change
        np.clip(block, 0.0, 1.0, out=block)
        block *= top
        np.rint(block, out=block)
        out[start:start + rows] = block
    return out


_QUANTISE_BLOCK = 1 << 22  # values per block (16 MB of float32)


def _fsync_folder(folder: Path) -> None:
    """Persist the rename itself (POSIX); silently skipped where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_with_pillow(
    file: BinaryIO, image: Image.Image, fmt: str, icc_profile: bytes | None, quality: int,
    exif: bytes | None = None, lossless: bool = False,
) -> None:
    """8-bit PNG, JPEG, WebP and BMP through Pillow's encoders."""
    options: dict[str, object] = {}
    if fmt == "JPEG":
        options.update(quality=quality, subsampling=0)
    elif fmt == "WEBP":
        options.update(quality=quality, lossless=lossless)
    elif fmt == "PNG":
        options.update(compress_level=DEFLATE_LEVEL)
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif:
        options["exif"] = exif
    image.save(file, format=fmt, **options)


def _write_png16(file: BinaryIO, pixels: np.ndarray, icc_profile: bytes | None,
                 exif: bytes | None = None) -> None:
    """Write 16-bit (H, W, 1-4) pixels as PNG, which Pillow cannot encode for colour or alpha.

    Every row uses the 'Up' filter (difference to the row above), which numpy computes in bulk;
    rows are compressed in bands so memory stays bounded for large images.
    """
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # gray, gray+alpha, RGB, RGBA
    row_bytes = width * channels * 2

    file.write(b"\x89PNG\r\n\x1a\n")
    _png_chunk(file, b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    if icc_profile:
        _png_chunk(file, b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        _png_chunk(file, b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    compressor = zlib.compressobj(DEFLATE_LEVEL)
    band = max(1, _PNG_BAND_BYTES // row_bytes)
    previous = np.zeros((1, row_bytes), dtype=np.uint8)  # 'above' the first row is zeros
    for top in range(0, height, band):
        # PNG samples are big-endian; converted band by band, so no full-size copy is made.
        current = pixels[top : top + band].astype(">u2").reshape(-1, row_bytes // 2)
        current = current.view(np.uint8)
        filtered = current - np.vstack([previous, current[:-1]])  # uint8: wraps modulo 256
        previous = current[-1:]
        filter_bytes = np.full((len(current), 1), 2, dtype=np.uint8)  # 2 = Up
        data = compressor.compress(np.hstack([filter_bytes, filtered]).tobytes())
        if data:
            _png_chunk(file, b"IDAT", data)
    _png_chunk(file, b"IDAT", compressor.flush())
    _png_chunk(file, b"IEND", b"")


def _png_chunk(file: BinaryIO, kind: bytes, data: bytes) -> None:
    crc = zlib.crc32(data, zlib.crc32(kind))
    file.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc))


_TIFF_SHORT, _TIFF_LONG, _TIFF_RATIONAL, _TIFF_UNDEFINED = 3, 4, 5, 7


def _write_tiff(file: BinaryIO, pixels: np.ndarray, icc_profile: bytes | None) -> None:
    """Write 8- or 16-bit (H, W, 1-4) pixels as a little-endian baseline TIFF.

    Deflate compression with horizontal differencing (predictor 2) in strips; alpha is marked as
    unassociated (not premultiplied); the ICC profile goes in tag 34675. Written by hand because
    Pillow cannot encode 16-bit colour TIFF.
    """
    height, width, channels = pixels.shape
    sample_bytes = pixels.dtype.itemsize
    rows_per_strip = max(1, _TIFF_STRIP_BYTES // (width * channels * sample_bytes))
    start = file.tell()
    file.write(b"II*\x00\x00\x00\x00\x00")  # the IFD's offset follows, once it is known
    offsets, counts, position = [], [], 8
    for top in range(0, height, rows_per_strip):  # strip by strip: no full-size copy
        strip = pixels[top : top + rows_per_strip]
        differences = strip.copy()
        differences[:, 1:] -= strip[:, :-1]  # predictor 2: wraps modulo 2**bits, as TIFF wants
        data = zlib.compress(differences.astype(f"<u{sample_bytes}", copy=False).tobytes(),
                             DEFLATE_LEVEL)
        file.write(data)
        offsets.append(position)
        counts.append(len(data))
        position += len(data)
    ifd_offset = position + position % 2  # the IFD must start on a word boundary

    tags = [
        (256, _TIFF_LONG, [width]),
        (257, _TIFF_LONG, [height]),
        (258, _TIFF_SHORT, [8 * sample_bytes] * channels),
        (259, _TIFF_SHORT, [8]),  # Adobe Deflate
        (262, _TIFF_SHORT, [2 if channels >= 3 else 1]),  # RGB or min-is-black
        (273, _TIFF_LONG, offsets),
        (277, _TIFF_SHORT, [channels]),
        (278, _TIFF_LONG, [rows_per_strip]),
        (279, _TIFF_LONG, counts),
        (282, _TIFF_RATIONAL, [72, 1]),
        (283, _TIFF_RATIONAL, [72, 1]),
        (284, _TIFF_SHORT, [1]),  # chunky (interleaved) samples
        (296, _TIFF_SHORT, [2]),  # resolution in inches
        (317, _TIFF_SHORT, [2]),  # horizontal differencing
    ]
    if channels in (2, 4):
        tags.append((338, _TIFF_SHORT, [2]))  # extra sample is unassociated alpha
    if icc_profile:
        tags.append((34675, _TIFF_UNDEFINED, icc_profile))

    file.write(b"\x00" * (ifd_offset - position))
    file.write(_tiff_ifd(tags, ifd_offset))
    end = file.tell()
    file.seek(start + 4)
    file.write(struct.pack("<I", ifd_offset))
    file.seek(end)


def _tiff_ifd(tags: list[tuple[int, int, object]], offset: int) -> bytes:
    """Encode one image file directory at `offset`; values over 4 bytes follow the directory."""
    tags = sorted(tags, key=lambda tag: tag[0])
    extra_offset = offset + 2 + 12 * len(tags) + 4
    entries, extra = [], b""
    for tag, kind, values in tags:
        if kind == _TIFF_UNDEFINED:
            data, count = bytes(values), len(values)
        else:
            code = "H" if kind == _TIFF_SHORT else "I"  # a RATIONAL is two LONGs
            data = struct.pack(f"<{len(values)}{code}", *values)
            count = len(values) // 2 if kind == _TIFF_RATIONAL else len(values)
        if len(data) <= 4:
            field = data.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", extra_offset + len(extra))
            extra += data + b"\x00" * (len(data) % 2)
        entries.append(struct.pack("<HHI", tag, kind, count) + field)
    return struct.pack("<H", len(tags)) + b"".join(entries) + struct.pack("<I", 0) + extra
