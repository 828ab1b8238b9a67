"""Video files in and out, frame by frame, with PyAV (FFmpeg's libraries, from `liif[video]`).

PyAV is used directly rather than through imageio: only it gives each decoded frame's pts
and the source's compressed audio and subtitle packets, so the output keeps every timestamp
(variable frame rates included) and its sound is remuxed byte for byte, not re-encoded.
Frames stream through: one is decoded, upscaled and handed to the encoder before the next is
read (the encoder keeps its own lookahead, libx264's default 40 frames). Nothing here prints:
the caller gets notes back.

What is carried from the source: every frame's pts; audio streams (copied, or re-encoded
where the container cannot hold the codec); subtitle streams (copied, text ones converted to
the container's text codec where it cannot hold theirs, bitmap ones dropped there); chapters;
the container's and the streams' language and title tags; the pixel format where the encoder
takes it, and the colour range, matrix, primaries and transfer tags. A display matrix (a
rotated phone clip) is applied to the pixels, and the output needs none.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LiifError, Warn, one_line
from .files import create_temp, move_into_place
from .images import Picture, check_output_place, quantise

READ_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
# Output suffix -> (container format, video encoders to try in order, audio re-encoder).
_WRITERS = {
    ".mp4": ("mp4", ("libx264", "h264"), "aac"),
    ".m4v": ("mp4", ("libx264", "h264"), "aac"),
    ".mov": ("mov", ("libx264", "h264"), "aac"),
    ".mkv": ("matroska", ("libx264", "h264"), "aac"),
    ".webm": ("webm", ("libvpx-vp9", "libvpx"), "libopus"),
}
WRITE_SUFFIXES = frozenset(_WRITERS)
# Audio codecs each container holds as they are (copied without re-encoding); None: any.
_AUDIO_FITS: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}),
    "mov": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be",
                      "pcm_s24le", "pcm_f32le"}),
    "matroska": None,
    "webm": frozenset({"opus", "vorbis"}),
}
# The text subtitle codec each container is given when it cannot hold a source's own (MP4
# and MOV hold only mov_text, WebM only WebVTT, Matroska every text codec but mov_text).
_SUBTITLE_TEXT = {"mp4": "mov_text", "mov": "mov_text", "matroska": "subrip", "webm": "webvtt"}
_CONTAINER_NAMES = {"mp4": "MP4", "mov": "MOV", "matroska": "MKV", "webm": "WebM"}
# Codecs that store frames exactly: `--weights auto` treats these sources as clean (and
# H.264 whose sequence header says lossless: see _h264_lossless).
_LOSSLESS = frozenset({"ffv1", "png", "rawvideo", "huffyuv", "ffvhuff", "utvideo", "qtrle",
                       "magicyuv", "apng", "zlib"})
DEFAULT_CRF = 18  # x264's "visually lossless" end; for VP9 the same number is a little better
PIXEL_FORMAT = "yuv420p"  # what a source's pixel format becomes when the encoder lacks it
INSTALL_HINT = "video needs PyAV: pip install 'liif[video]'"
# Tags that muxers write themselves: not copied from the source's container metadata.
_OWN_TAGS = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands",
                       "duration"})
# FFmpeg's AVColorSpace (a frame's matrix tag) -> swscale's name for that matrix.
_SWS_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M",
               9: "BT2020", 10: "BT2020"}
_UNSPECIFIED_SPACE = 2  # AVCOL_SPC_UNSPECIFIED
_RGB_SPACE = 0  # AVCOL_SPC_RGB: the frames are G, B, R planes, no matrix

Resample = Callable[[Picture, tuple[int, int]], Picture]
SizeRule = Callable[[tuple[int, int]], tuple[int, int]]
FrameProgress = Callable[[int, int], None]  # (frames done, total frames; 0: unknown)


def is_video(path: str | Path) -> bool:
    """Whether `path` names a video file by its suffix (case-insensitive)."""
    return Path(path).suffix.lower() in READ_SUFFIXES


def _av() -> Any:
    """The `av` module, imported on first use (the core install does without it)."""
    try:
        import av
    except ImportError:
        raise LiifError(INSTALL_HINT) from None
    av.logging.set_level(None)  # FFmpeg's own messages would interleave with liif's
    return av


def check_video_output(path: Path, *, overwrite: bool = False) -> None:
    """LiifError now, before any work, if a video cannot be written to `path`: a suffix no
    encoder here writes, an existing file (without `overwrite`), a folder in its place, a
    missing or read-only folder."""
    check_video_suffix(path)
    check_output_place(path, overwrite)


def check_video_suffix(path: Path) -> None:
    """LiifError if no encoder here writes a video with `path`'s suffix."""
    suffix = path.suffix.lower()
    if suffix not in _WRITERS:
        known = ", ".join(sorted(_WRITERS))
        raise LiifError(f"{path}: cannot write a video as {suffix or 'a file with no suffix'!r}"
                        f"; use one of {known}")
    _encoder(path)


def _encoder(path: Path) -> str:
    """The first video encoder for `path`'s suffix that this FFmpeg build has."""
    av = _av()
    _, names, _ = _WRITERS[path.suffix.lower()]
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # UnknownCodecError, or a decoder-only build
            continue
    raise LiifError(f"{path}: no encoder for {path.suffix} in this FFmpeg build "
                    f"(tried {', '.join(names)})")


@dataclass(frozen=True)
class Colour:
    """A source's colour tags, FFmpeg's numbers (AVColorRange, AVColorSpace,
    AVColorPrimaries, AVColorTransferCharacteristic): range 1 limited (16-235), 2 full;
    space, primaries and trc 1 BT.709, 2 unspecified, 5/6 BT.601, 9 BT.2020, ..."""

    range: int = 0
    space: int = _UNSPECIFIED_SPACE
    primaries: int = 2
    trc: int = 2


@dataclass
class VideoSource:
    """What upscale_video learns from a source before writing anything."""

    size: tuple[int, int]  # upright (H, W) of the frames
    frames: int  # as the container says; 0: unknown
    rate: Fraction | None
    codec: str
    lossy: bool
    rotation: int = 0  # degrees counter-clockwise, as FFmpeg gives a frame's display matrix
    # The display matrix as (a, b, c, d), shown x' = a x + c y, y' = b x + d y (y down),
    # each -1, 0 or 1: a quarter turn or mirror; None: one that is neither (not applied).
    orientation: tuple[int, int, int, int] | None = (1, 0, 0, 1)
    pix_fmt: str = PIXEL_FORMAT  # of the decoded frames
    colour: Colour = field(default_factory=Colour)
    length: float | None = None  # seconds of video, as the container says; None: unknown
    pixel_aspect: Fraction | None = None  # width / height of a stored pixel, upright; None: 1
    hidden_alpha: bool = False  # VP9 with an alpha plane FFmpeg's decoder leaves unread
    index: int = 0  # the stream upscaled: the first video stream that is not a cover picture


@dataclass(frozen=True)
class Estimate:
    """How long the frames will take, from the first frame's render time."""

    frames: int  # as the container says; 0: unknown
    size: tuple[int, int]  # (H, W) of each output frame
    first_frame_s: float  # seconds the first frame took to upscale

    @property
    def megapixels(self) -> float:
        """Output megapixels of the whole video."""
        return self.frames * self.size[0] * self.size[1] / 1e6

    @property
    def rate(self) -> float:
        """Output megapixels a second, measured on the first frame."""
        return self.size[0] * self.size[1] / 1e6 / max(self.first_frame_s, 1e-9)

    @property
    def seconds(self) -> float:
        """The whole video at the measured rate."""
        return self.megapixels / self.rate


def _open_input(av: Any, src: Path) -> Any:
    if not os.path.exists(src):
        raise LiifError(f"{src}: no such file")
    try:
        return av.open(str(src), "r")
    except PermissionError:
        raise LiifError(f"{src}: permission denied") from None
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise LiifError(f"{src}: damaged or not a video ({one_line(exc)})") from None


def _orientation(frame: Any) -> tuple[int, int, int, int] | None:
    """A decoded frame's display matrix as (a, b, c, d) in -1, 0, 1 (see VideoSource);
    identity without one, None for one that is no quarter turn or mirror (45 degrees, a
    scaling)."""
    side = frame.side_data.get("DISPLAYMATRIX", None)
    if side is None:
        return 1, 0, 0, 1
    raw = bytes(side)
    if len(raw) < 36:
        return 1, 0, 0, 1
    matrix = struct.unpack("=9i", raw[:36])
    # 16.16 fixed point; the rows FFmpeg documents as [a b u; c d v; x y w].
    values = [matrix[0] / 65536, matrix[1] / 65536, matrix[3] / 65536, matrix[4] / 65536]
    rounded = tuple(round(v) for v in values)
    if any(abs(v - r) > 0.01 for v, r in zip(values, rounded, strict=True)):
        return None
    a, b, c, d = rounded
    if sorted(map(abs, rounded)) != [0, 0, 1, 1] or (a == 0) != (d == 0):
        return None
    return a, b, c, d


def _upright(pixels: np.ndarray, orientation: tuple[int, int, int, int] | None) -> np.ndarray:
    """(H, W, C) decoded pixels as the display matrix shows them (see VideoSource)."""
    if orientation is None or orientation == (1, 0, 0, 1):
        return pixels
    a, b, c, d = orientation
    if a == 0:  # a quarter turn: shown rows follow source columns (y' = b x), and back
        out = pixels.swapaxes(0, 1)
        flip_rows, flip_columns = b < 0, c < 0
    else:
        out = pixels
        flip_rows, flip_columns = d < 0, a < 0
    if flip_rows:
        out = out[::-1]
    if flip_columns:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _describe_turn(rotation: int, orientation: tuple[int, int, int, int]) -> str:
    a, b, c, d = orientation
    clockwise = (-rotation) % 360
    mirrored = a * d - b * c < 0
    if clockwise and mirrored:
        return f"turned {clockwise} degrees clockwise and mirrored"
    return f"turned {clockwise} degrees clockwise" if clockwise else "mirrored"


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) with each odd side rounded down to even (up for 1): 4:2:0 chroma needs it."""
    return tuple(max(2, side - side % 2) for side in size)  # type: ignore[return-value]


def _chroma_even(av: Any, pix_fmt: str) -> tuple[bool, bool]:
    """Whether `pix_fmt` needs an even (height, width): its chroma is halved that way."""
    fmt = av.VideoFormat(pix_fmt)
    return fmt.chroma_height(64) < 64, fmt.chroma_width(64) < 64


def _round_for(size: tuple[int, int], even: tuple[bool, bool]) -> tuple[int, int]:
    """(H, W) with each side that must be even rounded down to even (up for 1)."""
    return tuple(max(2, side - side % 2) if need else side  # type: ignore[return-value]
                 for side, need in zip(size, even, strict=True))


def _h264_lossless(extradata: bytes | None) -> bool:
    """Whether an H.264 stream's sequence parameter set (from the container's codec header:
    avcC in MP4/MKV, or Annex B start codes) sets qpprime_y_zero_transform_bypass_flag, which
    x264 sets for lossless encodes (--qp 0, --crf 0) only."""
    if not extradata:
        return False
    sps = None
    if extradata[0] == 1 and len(extradata) > 8:  # avcC: version 1, ..., then the SPSs
        if extradata[5] & 0x1F:
            length = int.from_bytes(extradata[6:8], "big")
            sps = extradata[8:8 + length]
    else:  # Annex B
        for nal in extradata.split(b"\x00\x00\x01"):
            if nal and nal[0] & 0x1F == 7:
                sps = nal
                break
    if not sps or len(sps) < 5 or sps[0] & 0x1F != 7:
        return False
    payload = sps[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention bytes
    if payload[0] not in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        return False  # profiles without the flag (Baseline, Main, Extended): never lossless
    bits = "".join(f"{byte:08b}" for byte in payload[3:24])
    position = 0

    def unsigned_exp_golomb() -> int:
        nonlocal position
        zeros = 0
        while position < len(bits) and bits[position] == "0":
            zeros, position = zeros + 1, position + 1
        value = int(bits[position:position + zeros + 1] or "1", 2) - 1
        position += zeros + 1
        return value

    try:
        unsigned_exp_golomb()  # seq_parameter_set_id
        if unsigned_exp_golomb() == 3:  # chroma_format_idc 4:4:4
            position += 1  # separate_colour_plane_flag
        unsigned_exp_golomb()  # bit_depth_luma_minus8
        unsigned_exp_golomb()  # bit_depth_chroma_minus8
        return bits[position] == "1"
    except (IndexError, ValueError):
        return False


def probe(src: str | Path) -> VideoSource:
    """Open `src` and decode its first frame: the upright frame size, frame count, rate,
    codec, display matrix, pixel format and colour tags; LiifError for a damaged file, one
    with no video stream (audio only) or one with no frames."""
    av = _av()
    src = Path(src)
    container = _open_input(av, src)
    try:
        vin = _main_video(container)
        if vin is None:
            kind = "audio only" if container.streams.audio else "no streams liif can use"
            if container.streams.video:
                kind = "a cover picture only"
            raise LiifError(f"{src}: has no video stream ({kind})")
        try:
            first = next(iter(container.decode(vin)), None)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise LiifError(f"{src}: damaged video ({one_line(exc)})") from None
        if first is None:
            raise LiifError(f"{src}: has no video frames")
        rotation = int(getattr(first, "rotation", 0) or 0)
        orientation = _orientation(first)
        turned = orientation is not None and orientation[0] == 0
        size = (first.width, first.height) if turned else (first.height, first.width)
        rate = vin.average_rate or vin.guessed_rate
        length = _stated_length(vin)
        frames = int(vin.frames or 0)
        if frames == 0 and rate:  # e.g. Matroska: no count stored
            whole = length if length is not None else (container.duration or 0) / 1_000_000
            frames = round(whole * float(rate))
        codec = _codec_name(vin)
        lossy = codec not in _LOSSLESS
        if codec == "h264" and _h264_lossless(vin.codec_context.extradata):
            lossy = False
        colour = Colour(range=int(first.color_range), space=int(first.colorspace),
                        primaries=int(first.color_primaries), trc=int(first.color_trc))
        aspect = vin.sample_aspect_ratio
        aspect = None if not aspect or aspect == 1 else Fraction(aspect)
        if aspect is not None and turned:
            aspect = 1 / aspect
        hidden_alpha = codec == "vp9" and any(
            k.lower() == "alpha_mode" and str(v) == "1" for k, v in vin.metadata.items())
        return VideoSource(size=size, frames=frames, rate=rate, codec=codec, lossy=lossy,
                           rotation=rotation, orientation=orientation,
                           pix_fmt=first.format.name, colour=colour, length=length,
                           pixel_aspect=aspect, hidden_alpha=hidden_alpha, index=vin.index)
    finally:
        container.close()


def _main_video(container: Any) -> Any:
    """The video stream liif upscales: the first that is not a cover picture (an MP4's or
    MKV's album art, stored as a one-frame video stream); None if there is none."""
    attached = _av().stream.Disposition.attached_pic
    return next((s for s in container.streams.video if not s.disposition & attached), None)


def _codec_name(stream: Any) -> str:
    """The codec of `stream` by its standard name ('mp3', not the decoder's 'mp3float')."""
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or stream.codec_context.name


def _stated_length(stream: Any) -> float | None:
    """Seconds of video in `stream` as its container states them: the stream's duration
    (MP4, MOV, AVI), else the DURATION tag FFmpeg's Matroska and WebM muxers write for each
    track; None where neither is stored. Not the container's duration: audio or subtitles
    may outlast the video."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    try:
        hours, minutes, seconds = str(tag).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:  # no tag (None), or one in a form FFmpeg does not write
        return None


@dataclass(frozen=True)
class _Pixels:
    """How frames are written: the encoder's pixel format, the RGB format frames are read
    and written through (rgb48le above 8 bits), and its bit depth."""

    pix_fmt: str
    rgb_format: str
    depth: int


def _pixel_format(av: Any, encoder: str, info: VideoSource, src: Path,
                  notes: list[str]) -> _Pixels:
    """The source's pixel format if `encoder` takes it (full-range yuvj formats as their
    yuv twin with the range tag), else PIXEL_FORMAT (a note says so)."""
    wanted = info.pix_fmt
    if wanted.startswith("yuvj"):  # deprecated names for full range: the tag says it
        wanted = "yuv" + wanted[4:]
    formats = {fmt.name for fmt in av.codec.Codec(encoder, "w").video_formats or ()}
    try:
        source = av.VideoFormat(info.pix_fmt)
        alpha = any(component.is_alpha for component in source.components)
        deep = max(component.bits for component in source.components) > 8
    except Exception:  # a pixel format PyAV does not describe
        alpha, deep = True, False
    chosen = wanted if wanted in formats and not alpha else PIXEL_FORMAT
    if chosen != wanted:
        why = f"{encoder} cannot encode it"
        if alpha:
            why = "its alpha is not kept" + ("" if wanted in formats else f"; {why}")
        notes.append(f"{src}: pixel format {info.pix_fmt} written as {chosen} ({why})")
    out_deep = max(component.bits for component in av.VideoFormat(chosen).components) > 8
    if deep or out_deep:  # more than 8 bits a channel: through 16-bit RGB
        return _Pixels(chosen, "rgb48le", 16)
    return _Pixels(chosen, "rgb24", 8)


def upscale_video(resample: Resample, src: str | Path, dst: str | Path, size_rule: SizeRule, *,
                  crf: int = DEFAULT_CRF, overwrite: bool = False, max_pixels: int = 0,
                  crop_to: tuple[int, int] | None = None,
                  progress: FrameProgress | None = None,
                  info: VideoSource | None = None,
                  estimate: Callable[[Estimate], None] | None = None,
                  strip_metadata: bool = False) -> list[str]:
    """Upscale every frame of the video `src` with `resample` and write `dst` atomically.

    `size_rule` maps the upright (H, W) of the frames to the rendered size; `crop_to`
    centre-crops each rendered frame to that (H, W); an odd side is then rounded to even
    where the pixel format's chroma is halved (a note says so). Frames keep their pts, so
    frame count, rate and timing are the source's (a variable rate gets a note with its
    range and average); audio streams are copied packet for packet when the container holds
    their codec, else re-encoded; subtitle streams copied, converted (text) or dropped
    (bitmap), chapters and language/title tags copied; the pixel format (where the encoder
    takes it) and the colour tags carried over; a display matrix is applied to the pixels;
    every change is a note; non-square pixels keep their aspect tag; `strip_metadata` drops
    the container's tags (date, place, device). `info`: the source's `probe`, if done
    already. `estimate` hears the first frame's render time, before the second frame
    starts. Returns notes for the user (`Warn` for a file that looks wrong); every problem
    is a one-line LiifError (a full disk included), and on any failure (or Ctrl-C) no
    output is left behind.
    """
    from .sizing import check_max_pixels

    av = _av()
    src, dst = Path(src), Path(dst)
    if not 0 <= crf <= 63:
        raise LiifError(f"--crf must be between 0 and 63, got {crf}")
    check_video_output(dst, overwrite=overwrite)
    info = info or probe(src)
    size = size_rule(info.size)
    check_max_pixels(size, max_pixels)
    notes: list[str] = []
    pixels = _pixel_format(av, _encoder(dst), info, src, notes)
    final = tuple(crop_to or size)
    even = _chroma_even(av, pixels.pix_fmt)
    out_size = _round_for(final, even)  # type: ignore[arg-type]
    if out_size != final:
        needs = "even sides" if all(even) else "an even width" if even[1] else "an even height"
        notes.append(f"{dst}: {final[1]}x{final[0]} rounded to {out_size[1]}x{out_size[0]} "
                     f"(the encoder's {pixels.pix_fmt} needs {needs})")
    if info.orientation is None:
        notes.append(f"{src}: its display matrix ({info.rotation} degrees, not a quarter "
                     "turn) is not applied, and the output has none")
    elif info.orientation != (1, 0, 0, 1):
        notes.append(f"{src}: {_describe_turn(info.rotation, info.orientation)} for display "
                     "as its display matrix says; the output's pixels are upright")
    if info.pixel_aspect is not None:
        shown = round(out_size[1] * info.pixel_aspect)
        notes.append(f"{src}: its pixels are not square (aspect {info.pixel_aspect}); the "
                     f"output's are the same shape, so it displays at {shown}x{out_size[0]}")
    if info.hidden_alpha:
        notes.append(f"{src}: its alpha channel (VP9 alpha) is not kept")
    fd, temp = create_temp(dst)
    os.close(fd)
    try:
        source = _open_input(av, src)
        try:
            _transcode(av, source, temp, dst, src, info, resample, size, crop_to, out_size,
                       pixels, crf, notes, progress, estimate, strip_metadata)
        finally:
            source.close()
        try:
            with open(temp, "rb+") as file:
                os.fsync(file.fileno())
        except OSError as exc:  # e.g. a full disk that the file system reports only now
            raise _write_failure(dst, exc) from None
        move_into_place(temp, dst, overwrite)
    finally:
        temp.unlink(missing_ok=True)
    return notes


def _write_failure(dst: Path, exc: BaseException) -> LiifError:
    """The one-line error for a failed write of `dst` (the caller removes the temp file)."""
    reasons = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EFBIG: "the file grew larger than this file system or limit allows"}
    code = getattr(exc, "errno", None)
    if code in reasons:
        return LiifError(f"{dst}: could not write the video: {reasons[code]} (nothing was "
                         "written)")
    return LiifError(f"{dst}: could not write the video ({one_line(exc)})")


def _packets(av: Any, source: Any, streams: list[Any], src: Path) -> Iterator[Any]:
    """The source's packets of `streams`; LiifError for a damaged file (reading only: a
    failure while writing is no damage of the source)."""
    packets = source.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            raise LiifError(f"{src}: damaged video ({one_line(exc)})") from None
        yield packet


def _decode(av: Any, packet: Any, src: Path) -> list[Any]:
    try:
        return packet.decode()
    except av.error.FFmpegError as exc:
        raise LiifError(f"{src}: damaged video ({one_line(exc)})") from None


def _integers(rgb: np.ndarray, depth: int) -> np.ndarray:
    """Rendered RGB as uint8 (depth 8) or uint16 (depth 16): floats in [0, 1] quantised,
    integers of the other depth rescaled."""
    if rgb.dtype == np.uint8:
        return rgb if depth == 8 else rgb.astype(np.uint16) * np.uint16(257)
    if rgb.dtype == np.uint16:
        return rgb if depth == 16 else ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return quantise(rgb, depth)


class _Timing:
    """Whether the frames' pts steps are even (a constant rate) or not, and what rates."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.last: int | None = None
        self.steps: list[int] = []  # the smallest and largest step seen
        self.count = 0
        self.end = 0  # the latest pts + duration seen

    def add(self, pts: int | None, duration: int | None = None) -> None:
        if pts is None:
            return
        self.end = max(self.end, pts + (duration or 0))
        if self.last is not None and pts > self.last:
            step = pts - self.last
            self.steps = [min(self.steps[0], step), max(self.steps[1], step)] if self.steps \
                else [step, step]
        if self.first is None:
            self.first = pts
        self.last = pts
        self.count += 1

    def note(self, src: Path, time_base: Fraction | None) -> str | None:
        """A note for a variable frame rate (steps differing by more than a tick and 1%)."""
        if not self.steps or time_base is None or self.count < 3:
            return None
        low, high = self.steps
        mean = (self.last - self.first) / (self.count - 1)
        if high - low <= max(1, 0.01 * mean):
            return None

        def fps(ticks: float) -> str:
            return f"{1 / (ticks * float(time_base)):.3g}"

        return (f"{src}: variable frame rate ({fps(high)} to {fps(low)} fps, {fps(mean)} on "
                f"average): every frame's timestamp kept")

    def cut_short_note(self, src: Path, time_base: Fraction | None,
                       stated: float | None) -> str | None:
        """A note when the frames end well before the container says the video does (a
        Matroska or WebM file cut short decodes cleanly up to its cut): more than half a
        second, 2% of the stated length and two frame steps missing, a margin no whole file
        comes near."""
        if stated is None or time_base is None or self.first is None:
            return None
        decoded = float((self.end - min(self.first, 0)) * time_base)
        longest_step = float(self.steps[1] * time_base) if self.steps else 0.0
        if stated - decoded <= max(0.5, 0.02 * stated, 2 * longest_step):
            return None
        return Warn(f"{src}: its video ends at {decoded:.2f} s of the {stated:.2f} s its "
                    "container states; the file looks cut short, and the output has only the "
                    "frames it holds")


def _transcode(av: Any, source: Any, temp: Path, dst: Path, src: Path, info: VideoSource,
               resample: Resample, size: tuple[int, int], crop_to: tuple[int, int] | None,
               out_size: tuple[int, int], pixels: _Pixels, crf: int, notes: list[str],
               progress: FrameProgress | None,
               estimate: Callable[[Estimate], None] | None, strip_metadata: bool) -> None:
    """Write the upscaled video into `temp` (see upscale_video)."""
    from .sizing import centre_crop_box

    fmt, _, audio_encoder = _WRITERS[dst.suffix.lower()]
    encoder = _encoder(dst)
    vin = source.streams[info.index]
    _other_videos(source, vin, notes, src)
    try:
        out = av.open(str(temp), "w", format=fmt)
    except Exception as exc:
        raise LiifError(f"{dst}: cannot write ({one_line(exc)})") from None
    done, closed = 0, False
    timing = _Timing()
    resized: tuple[int, tuple[int, int]] | None = None  # the first frame of another size
    repeated = 0  # frames with the timestamp of the one before, left out
    colour, yuv = _output_colour(av, info, pixels)
    space = colour.space
    try:
        vout = out.add_stream(encoder, rate=info.rate or Fraction(25))
        vout.width, vout.height = out_size[1], out_size[0]
        vout.pix_fmt = pixels.pix_fmt
        vout.codec_context.time_base = vin.time_base
        vout.time_base = vin.time_base
        context = vout.codec_context
        context.color_range, context.colorspace = colour.range, space
        context.color_primaries, context.color_trc = colour.primaries, colour.trc
        if info.pixel_aspect is not None:
            context.sample_aspect_ratio = info.pixel_aspect
        options = {"crf": str(crf)}
        if encoder.startswith("libvpx"):
            options["b"] = "0"  # constant quality, as x264's crf
        context.options = options
        _copy_tags(source, out, vin, vout, container=not strip_metadata)
        handlers = _audio_streams(av, source, out, fmt, audio_encoder, notes, src)
        handlers.update(_subtitle_streams(av, source, out, fmt, notes, src))
        _copy_chapters(source, out, fmt, notes, src)
        matrix = _SWS_MATRIX.get(space) if yuv else None

        def write(frame: Any) -> None:
            nonlocal done, repeated, resized
            if frame.pts is not None and timing.last is not None and frame.pts <= timing.last:
                if frame.pts == timing.last:
                    repeated += 1  # no encoder takes two frames at one time: shown for no time
                    return
                base = frame.time_base or vin.time_base
                raise LiifError(f"{src}: its timestamps go back at frame {done + repeated + 1} "
                                f"(from {float(timing.last * base):.3f} s to "
                                f"{float(frame.pts * base):.3f} s: a joined or damaged file); "
                                "liif keeps every frame's time and cannot write that")
            upright = _upright(frame.to_ndarray(format=pixels.rgb_format), info.orientation)
            if upright.shape[:2] != tuple(info.size) and resized is None:
                resized = (done, upright.shape[:2])
            picture = Picture.from_array(upright)
            picture.lossy = info.lossy
            started = time.perf_counter()
            rgb = resample(picture, size).rgb
            if done == 0 and estimate is not None:
                estimate(Estimate(info.frames, tuple(out_size), time.perf_counter() - started))
            if crop_to is not None and tuple(crop_to) != tuple(size):
                top, left, bottom, right = centre_crop_box(size, crop_to)
                rgb = rgb[top:bottom, left:right]
            rgb = rgb[: out_size[0], : out_size[1]]
            if rgb.shape[:2] != tuple(out_size):  # a side of 1, rounded up to 2
                rgb = np.pad(rgb, ((0, out_size[0] - rgb.shape[0]),
                                   (0, out_size[1] - rgb.shape[1]), (0, 0)), mode="edge")
            image = av.VideoFrame.from_ndarray(_integers(rgb, pixels.depth),
                                               format=pixels.rgb_format)
            image = image.reformat(format=pixels.pix_fmt, dst_colorspace=matrix,
                                   dst_color_range=colour.range or None)
            image.color_range, image.colorspace = colour.range, space
            image.color_primaries, image.color_trc = colour.primaries, colour.trc
            image.pts, image.time_base = frame.pts, frame.time_base or vin.time_base
            if getattr(frame, "duration", None):  # the last frame's, for the container
                image.duration = frame.duration
            timing.add(frame.pts, getattr(frame, "duration", None))
            for packet in vout.encode(image):
                out.mux(packet)
            done += 1
            if progress:
                progress(done, max(info.frames, done))

        streams = [vin, *[s for s in source.streams if s.index in handlers]]
        for packet in _packets(av, source, streams, src):
            if packet.stream.index == vin.index:
                for frame in _decode(av, packet, src):
                    write(frame)
            elif packet.dts is not None:  # None: the flush packet ending a stream
                handlers[packet.stream.index](packet)
        for handler in handlers.values():
            handler(None)
        for packet in vout.encode(None):
            out.mux(packet)
        if done == 0:
            raise LiifError(f"{src}: has no video frames")
        closed = True
        out.close()  # writes the trailer (MP4's index): a full disk often shows only here
    except LiifError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:  # e.g. the disk filled up
        raise _write_failure(dst, exc) from None
    finally:
        if not closed:
            try:
                out.close()
            except Exception:  # a failed write: the temporary file is removed anyway
                pass
    for note in (timing.note(src, vin.time_base),
                 timing.cut_short_note(src, vin.time_base, info.length)):
        if note:
            notes.append(note)
    if resized is not None:
        index, (height, width) = resized
        notes.append(Warn(f"{src}: its frames change size (from {info.size[1]}x{info.size[0]} "
                          f"to {width}x{height} at frame {index + 1}); every frame is scaled "
                          f"to {out_size[1]}x{out_size[0]}, so those of another shape are "
                          "stretched"))
    if repeated:
        notes.append(Warn(f"{src}: {repeated} frame(s) with the same timestamp as the frame "
                          "before left out (a player shows such a frame for no time)"))


def _output_colour(av: Any, info: VideoSource, pixels: _Pixels) -> tuple[Colour, bool]:
    """The colour tags for the output, and whether its pixel format is YUV: the source's,
    except that a YUV output of an RGB source (PNG, FFV1 or raw frames into H.264) gets
    the encoders' defaults for range and matrix, and an RGB output no matrix."""
    colour = info.colour
    yuv = not av.VideoFormat(pixels.pix_fmt).is_rgb
    try:
        from_rgb = av.VideoFormat(info.pix_fmt).is_rgb
    except Exception:  # a pixel format PyAV does not describe
        from_rgb = False
    if yuv and (from_rgb or colour.space == _RGB_SPACE):
        colour = Colour(range=0 if from_rgb else colour.range, space=_UNSPECIFIED_SPACE,
                        primaries=colour.primaries, trc=colour.trc)
    elif not yuv:
        colour = Colour(range=colour.range, space=_RGB_SPACE, primaries=colour.primaries,
                        trc=colour.trc)
    return colour, yuv


def _copy_tags(source: Any, out: Any, vin: Any, vout: Any, container: bool = True) -> None:
    """The container's metadata (title, date, place, ...; not without `container`) and the
    video stream's language and title, less the tags muxers write themselves."""
    for key, value in source.metadata.items() if container else ():
        if key.lower() not in _OWN_TAGS:
            out.metadata[key] = value
    _copy_stream_tags(vin, vout)


def _other_videos(source: Any, main: Any, notes: list[str], src: Path) -> None:
    """A note for each video stream besides `main` (another angle, a cover picture): only
    one is upscaled, and the others are not kept."""
    attached = _av().stream.Disposition.attached_pic
    for stream in source.streams.video:
        if stream.index != main.index:
            what = "cover picture" if stream.disposition & attached else "video stream"
            notes.append(f"{src}: {what} {stream.index} ({_codec_name(stream)}) not kept "
                         f"(liif upscales one video stream, {main.index})")


def _copy_stream_tags(stream: Any, target: Any, disposition: bool = False) -> None:
    """A stream's language and title tags (and with `disposition`, its default, forced,
    ... flags) onto `target`."""
    for key in ("language", "title"):
        value = stream.metadata.get(key)
        if value and not (key == "language" and value == "und"):
            target.metadata[key] = value
    if disposition:
        try:
            target.disposition = stream.disposition
        except (AttributeError, TypeError, ValueError):  # a PyAV that cannot set them
            pass


def _copy_chapters(source: Any, out: Any, fmt: str, notes: list[str], src: Path) -> None:
    chapters = source.chapters()
    if not chapters:
        return
    try:
        out.set_chapters(chapters)
    except Exception as exc:  # a PyAV without chapter writing, or a muxer refusing them
        notes.append(f"{src}: its {len(chapters)} chapters dropped (cannot write them to "
                     f"{_CONTAINER_NAMES[fmt]}: {one_line(exc)})")


# The standard layout for a channel count, for audio whose layout names no channel order
# (PCM in Matroska reads as '2 channels'), which the AAC encoder refuses.
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                    8: "7.1"}


def _named_layout(layout: Any) -> Any:
    """`layout`, or the standard one of its channel count where it has no channel order."""
    if layout.name.endswith(" channels"):
        return _DEFAULT_LAYOUTS.get(len(layout.channels), layout)
    return layout


def _audio_streams(av: Any, source: Any, out: Any, fmt: str, audio_encoder: str,
                   notes: list[str], src: Path) -> dict[int, Callable[[Any], None]]:
    """An output stream for each audio stream of `source`, and for each (by input index) a
    function that takes its packets (None at the end): copied when `fmt` holds the codec,
    else decoded and re-encoded with `audio_encoder` (a note says so)."""
    handlers: dict[int, Callable[[Any], None]] = {}
    fits = _AUDIO_FITS.get(fmt)
    for stream in source.streams.audio:
        codec = _codec_name(stream)
        if fits is None or codec in fits:
            target = out.add_stream_from_template(stream)
            target.time_base = stream.time_base
            _copy_stream_tags(stream, target, disposition=True)
            handlers[stream.index] = _copier(out, target)
            continue
        rate = stream.codec_context.sample_rate or 48000
        if audio_encoder == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
            rate = 48000
        target = out.add_stream(audio_encoder, rate=rate)
        layout = _named_layout(stream.codec_context.layout)
        target.layout = layout
        _copy_stream_tags(stream, target, disposition=True)
        resampler = av.AudioResampler(format=target.codec_context.codec.audio_formats[0].name,
                                      layout=layout, rate=rate)
        notes.append(f"{src}: audio stream {stream.index} ({codec}) re-encoded as "
                     f"{audio_encoder} (the output's container cannot hold {codec})")

        handlers[stream.index] = _recoder(av, out, target, resampler, rate, src)
    return handlers


def _recoder(av: Any, out: Any, target: Any, resampler: Any, rate: int,
             src: Path) -> Callable[[Any], None]:
    """A packet handler that decodes packets, resamples them for `target`'s encoder and
    muxes what it encodes. Samples are counted from the first frame's time (a track may
    start late), so the sound stays where it was against the picture."""
    clock: int | None = None  # the next sample's time, in 1/rate

    def recode(packet: Any) -> None:
        nonlocal clock
        pieces = []
        for frame in _decode(av, packet, src) if packet is not None else []:
            if clock is None:
                start = frame.pts * frame.time_base if frame.pts is not None else 0
                clock = max(0, round(start * rate))
            frame.pts = None  # the resampler's own count restarts at 0
            pieces += resampler.resample(frame)
        if packet is None:
            pieces += resampler.resample(None)
        for piece in pieces:
            piece.pts, piece.time_base = clock or 0, Fraction(1, rate)
            clock = (clock or 0) + piece.samples
            for encoded in target.encode(piece):
                out.mux(encoded)
        if packet is None:
            for encoded in target.encode(None):
                out.mux(encoded)

    return recode


def _copier(out: Any, target: Any) -> Callable[[Any], None]:
    """A packet handler that muxes packets unchanged into `target`."""
    def copy(packet: Any) -> None:
        if packet is not None:
            packet.stream = target
            out.mux(packet)

    return copy


# A minimal ASS header, for converting a text subtitle stream whose decoder gives none.
_ASS_HEADER = (
    b"[Script Info]\r\nScriptType: v4.00+\r\nPlayResX: 384\r\nPlayResY: 288\r\n\r\n"
    b"[V4+ Styles]\r\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, "
    b"OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, "
    b"Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\r\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0"
    b"\r\n\r\n[Events]\r\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, "
    b"Effect, Text\r\n")


def _subtitle_streams(av: Any, source: Any, out: Any, fmt: str, notes: list[str],
                      src: Path) -> dict[int, Callable[[Any], None]]:
    """An output stream for each subtitle stream of `source` that `fmt` can carry, and for
    each (by input index) a function that takes its packets (None at the end): copied when
    the container holds the codec; text subtitles it cannot hold are converted to its text
    codec (mov_text, SubRip, WebVTT); bitmap ones are dropped. A note for each change."""
    handlers: dict[int, Callable[[Any], None]] = {}
    name = _CONTAINER_NAMES[fmt]
    for stream in source.streams.subtitles:
        context = stream.codec_context
        codec = context.name if context is not None else "unknown"
        try:
            target = out.add_stream_from_template(stream)
        except ValueError:  # the container cannot hold this codec
            target = None
        if target is not None:
            target.time_base = stream.time_base
            _copy_stream_tags(stream, target, disposition=True)
            handlers[stream.index] = _copier(out, target)
            continue
        if context is None or not context.codec.text_sub:
            notes.append(f"{src}: subtitle stream {stream.index} ({codec}) dropped ({name} "
                         "cannot hold it, and only text subtitles can be converted)")
            continue
        if not (hasattr(context, "decode2") and hasattr(context, "encode_subtitle")):
            notes.append(f"{src}: subtitle stream {stream.index} ({codec}) dropped ({name} "
                         "cannot hold it, and this PyAV cannot convert subtitles)")
            continue
        wanted = _SUBTITLE_TEXT[fmt]
        context.open(strict=False)  # the decoder, for its ASS header
        target = out.add_stream(wanted)
        target.codec_context.subtitle_header = context.subtitle_header or _ASS_HEADER
        target.time_base = stream.time_base
        _copy_stream_tags(stream, target, disposition=True)
        notes.append(f"{src}: subtitle stream {stream.index} ({codec}) converted to {wanted} "
                     f"({name} cannot hold {codec})")
        handlers[stream.index] = _subtitle_converter(av, out, stream, target, src)
    return handlers


def _subtitle_converter(av: Any, out: Any, stream: Any, target: Any,
                        src: Path) -> Callable[[Any], None]:
    """A packet handler that decodes text subtitles and encodes them for `target`, each at
    its source packet's time."""
    def convert(packet: Any) -> None:
        if packet is None:
            return
        try:
            subtitles = stream.codec_context.decode2(packet)
        except av.error.FFmpegError as exc:
            raise LiifError(f"{src}: damaged subtitles ({one_line(exc)})") from None
        if subtitles is None or len(subtitles) == 0:
            return  # e.g. mov_text's empty packet that ends a cue
        encoded = target.codec_context.encode_subtitle(subtitles)
        encoded.stream = target
        encoded.time_base = packet.time_base or stream.time_base
        encoded.pts, encoded.dts = packet.pts, packet.pts
        encoded.duration = packet.duration
        out.mux(encoded)

    return convert
