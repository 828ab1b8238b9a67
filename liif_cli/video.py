"""Video files in and out, frame by frame, with PyAV (FFmpeg's libraries, from `liif[video]`).

PyAV is used directly rather than through imageio: only it gives each decoded frame's pts
and the source's compressed audio packets, so the output keeps every timestamp (variable
frame rates included) and its sound is remuxed byte for byte, not re-encoded. Frames stream
through: one is decoded, upscaled and handed to the encoder before the next is read (the
encoder keeps its own lookahead, libx264's default 40 frames). Nothing here prints: the caller
gets notes back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LiifError, one_line
from .files import create_temp
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
# Codecs that store frames exactly: `--weights auto` treats these sources as clean.
_LOSSLESS = frozenset({"ffv1", "png", "rawvideo", "huffyuv", "ffvhuff", "utvideo", "qtrle",
                       "magicyuv", "apng", "zlib"})
DEFAULT_CRF = 18  # x264's "visually lossless" end; for VP9 the same number is a little better
PIXEL_FORMAT = "yuv420p"
INSTALL_HINT = "video needs PyAV: pip install 'liif[video]'"

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


@dataclass
class VideoSource:
    """What upscale_video learns from a source before writing anything."""

    size: tuple[int, int]  # upright (H, W) of the frames
    frames: int  # as the container says; 0: unknown
    rate: Fraction | None
    codec: str
    lossy: bool
    rotation: int = 0  # degrees, as FFmpeg gives a frame's display matrix


def _open_input(av: Any, src: Path) -> Any:
    if not os.path.exists(src):
        raise LiifError(f"{src}: no such file")
    try:
        return av.open(str(src), "r")
    except PermissionError:
        raise LiifError(f"{src}: permission denied") from None
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise LiifError(f"{src}: damaged or not a video ({one_line(exc)})") from None


def _upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, FFmpeg's sign) to (H, W, C)."""
    turns = (round(rotation / 90) % 4)
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) with each odd side rounded down to even (up for 1): 4:2:0 chroma needs it."""
    return tuple(max(2, side - side % 2) for side in size)  # type: ignore[return-value]


def probe(src: str | Path) -> VideoSource:
    """Open `src` and decode its first frame: the upright frame size, frame count, rate,
    codec and rotation; LiifError for a damaged file, one with no video stream (audio only)
    or one with no frames."""
    av = _av()
    src = Path(src)
    container = _open_input(av, src)
    try:
        if not container.streams.video:
            kind = "audio only" if container.streams.audio else "no streams liif can use"
            raise LiifError(f"{src}: has no video stream ({kind})")
        vin = container.streams.video[0]
        try:
            first = next(iter(container.decode(vin)), None)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise LiifError(f"{src}: damaged video ({one_line(exc)})") from None
        if first is None:
            raise LiifError(f"{src}: has no video frames")
        rotation = int(getattr(first, "rotation", 0) or 0)
        size = (first.height, first.width) if rotation % 180 == 0 else (first.width,
                                                                         first.height)
        rate = vin.average_rate or vin.guessed_rate
        frames = int(vin.frames or 0)
        if frames == 0 and container.duration and rate:  # e.g. Matroska: no count stored
            frames = round(container.duration / 1_000_000 * float(rate))
        codec = vin.codec_context.name
        return VideoSource(size=size, frames=frames, rate=rate, codec=codec,
                           lossy=codec not in _LOSSLESS, rotation=rotation)
    finally:
        container.close()


def upscale_video(resample: Resample, src: str | Path, dst: str | Path, size_rule: SizeRule, *,
                  crf: int = DEFAULT_CRF, overwrite: bool = False, max_pixels: int = 0,
                  crop_to: tuple[int, int] | None = None,
                  progress: FrameProgress | None = None,
                  info: VideoSource | None = None) -> list[str]:
    """Upscale every frame of the video `src` with `resample` and write `dst` atomically.

    `size_rule` maps the upright (H, W) of the frames to the rendered size; `crop_to`
    centre-crops each rendered frame to that (H, W); an odd side is then rounded to even
    (4:2:0 chroma needs it; a note says so). Frames keep their pts, so frame count, rate
    and timing are the source's; audio streams are copied packet for packet when the
    container holds their codec, else re-encoded (a note says so). Rotation metadata is
    applied to the pixels. `info`: the source's `probe`, if done already. Returns notes for
    the user; every problem is a one-line LiifError, and on any failure (or Ctrl-C) no
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
    final = tuple(crop_to or size)
    out_size = even_size(final)
    notes = []
    if out_size != final:
        notes.append(f"{dst}: {final[1]}x{final[0]} rounded to {out_size[1]}x{out_size[0]} "
                     f"(the encoder's {PIXEL_FORMAT} needs even sides)")
    if info.rotation:
        notes.append(f"{src}: its rotation ({info.rotation} degrees) applied to the pixels")
    fd, temp = create_temp(dst)
    os.close(fd)
    try:
        source = _open_input(av, src)
        try:
            _transcode(av, source, temp, dst, src, info, resample, size, crop_to, out_size,
                       crf, notes, progress)
        finally:
            source.close()
        with open(temp, "rb+") as file:
            os.fsync(file.fileno())
        from .images import _move_into_place

        _move_into_place(temp, dst, overwrite)
    finally:
        temp.unlink(missing_ok=True)
    return notes


def _transcode(av: Any, source: Any, temp: Path, dst: Path, src: Path, info: VideoSource,
               resample: Resample, size: tuple[int, int], crop_to: tuple[int, int] | None,
               out_size: tuple[int, int], crf: int, notes: list[str],
               progress: FrameProgress | None) -> None:
    """Write the upscaled video into `temp` (see upscale_video)."""
    from .sizing import centre_crop_box

    fmt, _, audio_encoder = _WRITERS[dst.suffix.lower()]
    encoder = _encoder(dst)
    vin = source.streams.video[0]
    try:
        out = av.open(str(temp), "w", format=fmt)
    except Exception as exc:
        raise LiifError(f"{dst}: cannot write ({one_line(exc)})") from None
    done = 0
    try:
        vout = out.add_stream(encoder, rate=info.rate or Fraction(25))
        vout.width, vout.height = out_size[1], out_size[0]
        vout.pix_fmt = PIXEL_FORMAT
        vout.codec_context.time_base = vin.time_base
        vout.time_base = vin.time_base
        options = {"crf": str(crf)}
        if encoder.startswith("libvpx"):
            options["b"] = "0"  # constant quality, as x264's crf
        vout.codec_context.options = options
        audio = _audio_streams(av, source, out, fmt, audio_encoder, notes, src)

        def write(frame: Any) -> None:
            nonlocal done
            pixels = _upright(frame.to_ndarray(format="rgb24"), info.rotation)
            picture = Picture.from_array(pixels)
            picture.lossy = info.lossy
            rgb = resample(picture, size).rgb
            if crop_to is not None and tuple(crop_to) != tuple(size):
                top, left, bottom, right = centre_crop_box(size, crop_to)
                rgb = rgb[top:bottom, left:right]
            rgb = rgb[: out_size[0], : out_size[1]]
            if rgb.shape[:2] != tuple(out_size):  # a side of 1, rounded up to 2
                rgb = np.pad(rgb, ((0, out_size[0] - rgb.shape[0]),
                                   (0, out_size[1] - rgb.shape[1]), (0, 0)), mode="edge")
            image = av.VideoFrame.from_ndarray(quantise(rgb, 8), format="rgb24")
            image = image.reformat(format=PIXEL_FORMAT)
            image.pts, image.time_base = frame.pts, frame.time_base or vin.time_base
            for packet in vout.encode(image):
                out.mux(packet)
            done += 1
            if progress:
                progress(done, max(info.frames, done))

        try:
            for packet in source.demux(vin, *[s for s in source.streams.audio
                                              if s.index in audio]):
                if packet.stream.index == vin.index:
                    for frame in packet.decode():
                        write(frame)
                elif packet.dts is not None:  # None: the flush packet ending a stream
                    audio[packet.stream.index](packet)
        except av.error.FFmpegError as exc:
            raise LiifError(f"{src}: damaged video ({one_line(exc)})") from None
        for handler in audio.values():
            handler(None)
        for packet in vout.encode(None):
            out.mux(packet)
        if done == 0:
            raise LiifError(f"{src}: has no video frames")
    except LiifError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:  # e.g. the disk filled up
        raise LiifError(f"{dst}: could not write the video ({one_line(exc)})") from None
    finally:
        try:
            out.close()
        except Exception:  # a failed write: the temporary file is removed anyway
            pass


def _audio_streams(av: Any, source: Any, out: Any, fmt: str, audio_encoder: str,
                   notes: list[str], src: Path) -> dict[int, Callable[[Any], None]]:
    """An output stream for each audio stream of `source`, and for each (by input index) a
    function that takes its packets (None at the end): copied when `fmt` holds the codec,
    else decoded and re-encoded with `audio_encoder` (a note says so)."""
    handlers: dict[int, Callable[[Any], None]] = {}
    fits = _AUDIO_FITS.get(fmt)
    for stream in source.streams.audio:
        codec = stream.codec_context.name
        if fits is None or codec in fits:
            target = out.add_stream_from_template(stream)
            target.time_base = stream.time_base

            def copy(packet: Any, target: Any = target) -> None:
                if packet is not None:
                    packet.stream = target
                    out.mux(packet)

            handlers[stream.index] = copy
            continue
        rate = stream.codec_context.sample_rate or 48000
        if audio_encoder == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
            rate = 48000
        target = out.add_stream(audio_encoder, rate=rate)
        target.layout = stream.codec_context.layout
        resampler = av.AudioResampler(format=target.codec_context.codec.audio_formats[0].name,
                                      layout=stream.codec_context.layout, rate=rate)
        notes.append(f"{src}: audio stream {stream.index} ({codec}) re-encoded as "
                     f"{audio_encoder} (the output's container cannot hold {codec})")

        def recode(packet: Any, target: Any = target, resampler: Any = resampler) -> None:
            frames = packet.decode() if packet is not None else []
            for frame in frames:
                frame.pts = None
                for piece in resampler.resample(frame):
                    for encoded in target.encode(piece):
                        out.mux(encoded)
            if packet is None:
                for piece in resampler.resample(None):
                    for encoded in target.encode(piece):
                        out.mux(encoded)
                for encoded in target.encode(None):
                    out.mux(encoded)

        handlers[stream.index] = recode
    return handlers
