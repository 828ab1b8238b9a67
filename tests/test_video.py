"""Videos and animations: every frame through the still-image path, timing and sound kept."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from liif_cli.errors import LiifError

av = pytest.importorskip("av")

pytestmark = pytest.mark.usefixtures("one_thread")
W, H, N, RATE = 64, 48, 12, 12


def _pattern(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A frame that differs from its neighbours: a bar that grows, and two colour halves."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : (i + 1) * w // N] = (200, 80, 40)
    img[h // 2:, :, 1] = 160
    return img


def make_clip(path: Path, frames: int = N, audio: bool = True, video: bool = True, *,
              sound_codec: str = "aac", sound_start_s: float = 0.0) -> Path:
    """A 12-frame 64x48 H.264 clip at 12 fps with a one-second 440 Hz mono track: AAC, or
    `sound_codec`, from `sound_start_s` seconds."""
    out = av.open(str(path), "w")
    v = None
    if video:
        v = out.add_stream("libx264", rate=RATE)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    a = None
    if audio:
        a = out.add_stream(sound_codec, rate=44100)
        a.layout = "mono"
    for i in range(frames if v is not None else 0):
        frame = av.VideoFrame.from_ndarray(_pattern(i), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, RATE)
        for packet in v.encode(frame):
            out.mux(packet)
    if a is not None:
        n = 44100 * N // RATE
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)
        # To the encoder's sample format (AAC's is this fltp; MP3's is s16p).
        resampler = av.AudioResampler(format=a.codec_context.codec.audio_formats[0].name,
                                      layout="mono", rate=44100)
        size = a.codec_context.frame_size or 1024
        for start in range(0, n, size):
            chunk = av.AudioFrame.from_ndarray(samples[None, start:start + size], format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.time_base = 44100, Fraction(1, 44100)
            chunk.pts = start + round(sound_start_s * 44100)
            for piece in resampler.resample(chunk):
                for packet in a.encode(piece):
                    out.mux(packet)
        for packet in a.encode(None):
            out.mux(packet)
    if frames == 0:
        out.start_encoding()  # write the header of a stream with no frames
    if v is not None:
        for packet in v.encode(None):
            out.mux(packet)
    out.close()
    return path


def video_frames(path: Path) -> list:
    with av.open(str(path)) as container:
        return [(frame.pts * frame.time_base, frame.to_ndarray(format="rgb24"))
                for frame in container.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.dts is not None]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4")


@pytest.fixture(scope="module")
def upscaler(tiny_weights):
    from liif_cli.api import Upscaler

    return Upscaler.from_pretrained(tiny_weights, device="cpu", precision="fp32")


def test_video_keeps_frames_timing_and_audio_bytes(upscaler, clip, tmp_path):
    dst = tmp_path / "out.mp4"
    seen = []
    notes = upscaler.upscale_video(clip, dst, scale=2, progress=lambda d, t: seen.append((d, t)))
    assert notes == []
    assert seen[-1] == (N, N)
    with av.open(str(dst)) as out, av.open(str(clip)) as src:
        v = out.streams.video[0]
        assert (v.width, v.height) == (2 * W, 2 * H)
        assert v.codec_context.name == "h264" and v.format.name == "yuv420p"
        assert v.average_rate == src.streams.video[0].average_rate == RATE
    ours, theirs = video_frames(dst), video_frames(clip)
    assert len(ours) == len(theirs) == N
    assert [t for t, _ in ours] == [t for t, _ in theirs]
    assert audio_packets(dst) == audio_packets(clip)  # remuxed byte for byte


def test_each_frame_matches_the_still_image_path(upscaler, clip, tmp_path):
    """Frame k of the video is the still render of decoded frame k, within H.264 at crf 0."""
    from liif_cli.images import Picture, quantise

    dst = tmp_path / "out.mkv"
    upscaler.upscale_video(clip, dst, size=(96, 72), crf=0)
    for (_, got), (_, source) in zip(video_frames(dst), video_frames(clip), strict=True):
        still = quantise(upscaler.resample(Picture.from_array(source), (72, 96)).rgb, 8)
        # crf 0 is lossless in YUV; the RGB <-> 4:2:0 round trip costs a few levels
        # (chroma is halved), the average far less.
        diff = np.abs(got.astype(int) - still.astype(int))
        assert diff.mean() < 4 and diff.shape == (72, 96, 3)


def test_webm_reencodes_aac_audio_with_a_note(upscaler, clip, tmp_path):
    dst = tmp_path / "out.webm"
    notes = upscaler.upscale_video(clip, dst, scale=1.5)
    assert any("re-encoded as libopus" in note for note in notes)
    with av.open(str(dst)) as out:
        assert out.streams.video[0].codec_context.name == "vp9"
        assert out.streams.audio[0].codec_context.name == "opus"
    assert len(video_frames(dst)) == N


def test_pcm_audio_without_a_channel_order_is_reencoded_for_mp4(upscaler, tmp_path):
    """PCM in Matroska reads with a layout that names no channel order ('2 channels'), which
    the AAC encoder refuses: it is given the standard one (stereo)."""
    src = tmp_path / "pcm.mkv"
    with av.open(str(src), "w") as out:
        v = out.add_stream("libx264", rate=RATE)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        a = out.add_stream("pcm_s16le", rate=48000)
        a.layout = "stereo"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(_pattern(i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            for packet in v.encode(frame):
                out.mux(packet)
        tone = (8000 * np.sin(np.arange(16000) / 10)).astype(np.int16)
        chunk = av.AudioFrame.from_ndarray(np.stack([tone, tone]).T.reshape(1, -1), format="s16",
                                           layout="stereo")
        chunk.sample_rate, chunk.pts, chunk.time_base = 48000, 0, Fraction(1, 48000)
        for packet in [*a.encode(chunk), *a.encode(None), *v.encode(None)]:
            out.mux(packet)
    with av.open(str(src)) as check:
        assert check.streams.audio[0].codec_context.layout.name == "2 channels"
    dst = tmp_path / "out.mp4"
    notes = upscaler.upscale_video(src, dst, scale=1.5)
    assert any("re-encoded as aac" in note for note in notes)
    with av.open(str(dst)) as out:
        assert out.streams.audio[0].codec_context.name == "aac"
        assert out.streams.audio[0].codec_context.layout.name == "stereo"
    assert len(audio_packets(dst)) > 5 and len(video_frames(dst)) == 4


def test_odd_sizes_are_rounded_to_even_with_a_note(upscaler, clip, tmp_path):
    dst = tmp_path / "odd.mp4"
    notes = upscaler.upscale_video(clip, dst, size=(101, 75))
    assert notes == [f"{dst}: 101x75 rounded to 100x74 (the encoder's yuv420p needs even sides)"]
    with av.open(str(dst)) as out:
        assert (out.streams.video[0].width, out.streams.video[0].height) == (100, 74)


def test_cli_upscales_a_video_by_height(tiny_weights, clip, tmp_path):
    from liif_cli.cli import app

    src = tmp_path / "clip.mp4"
    src.write_bytes(clip.read_bytes())
    result = CliRunner().invoke(app, ["upscale", str(src), "--height", "96", "--weights",
                                      str(tiny_weights), "--device", "cpu", "--crf", "23"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "clip_h96.mp4"
    with av.open(str(out)) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (128, 96)
    assert audio_packets(out) == audio_packets(src)


def test_auto_weights_treat_a_lossy_video_as_a_lossy_photo(tiny_bundle, clip, tmp_path):
    from liif_cli.batch import Job, run_job
    from liif_cli.cli import Precision, load_upscaler

    upscaler = load_upscaler(None, "cpu", Precision.fp32, None, None)
    result = run_job(upscaler, Job(clip, tmp_path / "out.mp4"), lambda hw: (96, 128))
    assert result.model == "real" and "lossy h264" in result.source


def test_resize_takes_videos_and_resumes(tiny_weights, clip, tmp_path):
    from liif_cli.cli import app

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip.read_bytes())
    args = ["resize", str(folder), "--size", "128x96", "-o", str(tmp_path / "out"),
            "--weights", str(tiny_weights), "--device", "cpu", "--format", "png"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "resized 1" in first.output
    assert len(video_frames(tmp_path / "out" / "a.mp4")) == N  # --format is for images
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "resized 0, skipped 1 existing" in again.output


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("damage", ["truncated", "garbage", "audio only", "no frames"])
def test_bad_videos_are_one_line_errors_and_nothing_is_written(upscaler, clip, tmp_path, damage):
    src = tmp_path / "bad.mp4"
    if damage == "truncated":
        src.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
    elif damage == "garbage":
        src.write_bytes(os.urandom(4000))
    elif damage == "audio only":
        make_clip(src, video=False)
    else:
        make_clip(src, frames=0, audio=False)
    dst = tmp_path / "out.mp4"
    with pytest.raises(LiifError) as excinfo:
        upscaler.upscale_video(src, dst, scale=2)
    message = str(excinfo.value)
    assert "\n" not in message and str(src) in message
    expected = {"audio only": "no video stream", "no frames": "no video"}.get(damage, "video")
    assert expected in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_cli_refuses_an_unwritable_suffix_and_an_oversized_target(tiny_weights, clip, tmp_path):
    from liif_cli.cli import app

    base = ["upscale", str(clip), "--weights", str(tiny_weights), "--device", "cpu"]
    bad = CliRunner().invoke(app, [*base, "--scale", "2", "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "cannot write a video as '.png'" in bad.output
    big = CliRunner().invoke(app, [*base, "--scale", "4", "--max-pixels", "10000",
                                   "-o", str(tmp_path / "big.mp4")])
    assert big.exit_code == 1 and "--max-pixels" in big.output
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_encode_leaves_no_partial_output(tiny_weights, tmp_path):
    """SIGTERM mid-encode: exit 130, no output and no temporary file."""
    src = make_clip(tmp_path / "clip.mp4")
    code = ("import sys, time\nfrom liif_cli.cli import main\n"
            "from liif_cli import api\nslow = api.Upscaler.resample\n"
            "def resample(self, *a, **k):\n    time.sleep(0.5)\n    return slow(self, *a, **k)\n"
            "api.Upscaler.resample = resample\n"
            f"sys.argv = ['liif', 'upscale', {str(src)!r}, '--scale', '2', '--weights', "
            f"{str(tiny_weights)!r}, '--device', 'cpu', '-q']\nmain()\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            p.name.startswith(".liif-") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    assert any(p.name.startswith(".liif-") for p in tmp_path.iterdir()), "never started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


# ----------------------------------------------------------------------------- animations


def _animation(path: Path, **options) -> list[Image.Image]:
    frames = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 160, 0)]):
        pixels = np.zeros((12, 16, 4), np.uint8)
        pixels[..., :3], pixels[..., 3] = colour, 255
        pixels[:, : 4 + 2 * i, 3] = 0  # a transparent strip, wider in each frame
        frames.append(Image.fromarray(pixels, mode="RGBA"))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[100, 250, 400],
                   loop=3, **options)
    return frames


@pytest.mark.parametrize("name, options", [("anim.gif", {"disposal": 2}),
                                           ("anim.webp", {"lossless": True}),
                                           ("anim.png", {}),
                                           ("anim.apng", {"format": "PNG"})])
def test_animations_keep_frames_durations_loop_and_transparency(upscaler, tmp_path, name,
                                                                options):
    from liif_cli.batch import Job, output_suffix, run_job

    src = tmp_path / name
    _animation(src, **options)
    assert output_suffix(src) == src.suffix
    dst = tmp_path / f"out{src.suffix}"
    result = run_job(upscaler, Job(src, dst), lambda hw: (hw[0] * 2, hw[1] * 2))
    assert any("3 frames upscaled" in note.text for note in result.notes)
    with Image.open(dst) as out, Image.open(src) as original:
        assert out.n_frames == 3 and out.size == (32, 24)
        assert out.info.get("loop") == 3
        for index in range(3):
            out.seek(index)
            original.seek(index)
            out.load()
            original.load()
            assert out.info["duration"] == original.info["duration"] == [100, 250, 400][index]
            if name.endswith(".gif"):
                assert out.disposal_method == 2
            alpha = np.asarray(out.convert("RGBA"))[..., 3]
            # Left strip transparent, right part opaque, as in the source frame.
            assert alpha[:, : 2 * (4 + 2 * index) - 2].max() == 0
            assert alpha[:, 2 * (4 + 2 * index) + 2:].min() == 255
            still = upscaler.resample(_picture(original), (24, 32))
            expected = np.rint(still.rgb * 255)[:, -8:]
            got = np.asarray(out.convert("RGB"))[:, -8:].astype(float)
            assert np.abs(got - expected).mean() < (12 if name.endswith(".gif") else 1.01)


def _picture(image: Image.Image):
    from liif_cli.images import Picture, pil_pixels

    return Picture.from_array(pil_pixels(image))


def _upscaled_pages(upscaler, tmp_path, pages: list[Image.Image]):
    """Save `pages` as a multi-page TIFF, upscale it to 32x24 with `liif`'s batch job, and
    yield each (output page, source page) pair, both seeked to it."""
    from liif_cli.batch import Job, run_job

    src, dst = tmp_path / "pages.tif", tmp_path / "out.tif"
    pages[0].save(src, save_all=True, append_images=pages[1:])
    run_job(upscaler, Job(src, dst), lambda hw: (24, 32))
    with Image.open(dst) as out, Image.open(src) as original:
        assert out.n_frames == len(pages)
        for index in range(len(pages)):
            out.seek(index)
            original.seek(index)
            assert out.size == (32, 24)
            yield out, original


def test_multi_page_tiff_upscales_every_page(upscaler, tmp_path):
    pages = [Image.new("RGB", (16, 12), c) for c in ("red", "blue")]
    for out, original in _upscaled_pages(upscaler, tmp_path, pages):
        expected = np.rint(upscaler.resample(_picture(original), (24, 32)).rgb * 255)
        assert np.abs(np.asarray(out.convert("RGB")) - expected).max() <= 1  # deflate


def test_an_animation_cannot_be_written_as_a_still_format(upscaler, tmp_path):
    from liif_cli.batch import Job, run_job

    src = tmp_path / "anim.gif"
    _animation(src)
    with pytest.raises(LiifError, match="holds one picture only"):
        run_job(upscaler, Job(src, tmp_path / "out.jpg"), lambda hw: (24, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif"]


def _no_render(picture, size):
    raise AssertionError("rendered a frame that cannot be written")


@pytest.mark.parametrize("suffix, size", [(".gif", (2, 65_536)), (".webp", (20, 16_384)),
                                          (".tif", (40_000, 40_000))])
def test_frames_too_large_for_the_format_are_refused_before_any_is_rendered(tmp_path, suffix,
                                                                             size):
    from liif_cli.animation import upscale_animation

    src = tmp_path / "anim.gif"
    _animation(src)
    with pytest.raises(LiifError, match="too large for"):
        upscale_animation(_no_render, src, tmp_path / f"out{suffix}", lambda hw: size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif"]


def test_a_damaged_animation_is_a_liif_error_and_writes_nothing(upscaler, tmp_path):
    from liif_cli.animation import upscale_animation

    src = tmp_path / "anim.gif"
    _animation(src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])  # the last frame cut off
    with pytest.raises(LiifError, match="damaged or unreadable"):
        upscale_animation(upscaler.resample, src, tmp_path / "out.gif", lambda hw: (24, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif"]


def test_16_bit_gray_tiff_pages_stay_16_bit(upscaler, tmp_path):
    ramp = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300
    pages = [Image.fromarray(ramp + np.uint16(7 * i)) for i in range(2)]  # mode I;16
    for out, original in _upscaled_pages(upscaler, tmp_path, pages):
        assert out.mode == "I;16"
        expected = upscaler.resample(_picture(original), (24, 32)).rgb[:, :, 0]
        got = np.asarray(out).astype(np.float64) / 65535
        assert np.abs(got - expected).max() <= 0.5 / 65535 + 1e-6


def test_core_install_error_names_the_video_extra(monkeypatch, clip, tmp_path):
    from liif_cli import video

    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails
    with pytest.raises(LiifError, match=r"pip install 'liif\[video\]'"):
        video.probe(clip)


# ------------------------------------------------- rotation, timing, colour, subtitles, chapters


def write_clip(path: Path, frames: list[tuple[int, np.ndarray]], *,
               time_base: Fraction = Fraction(1, RATE), codec: str = "libx264",
               pix_fmt: str = "yuv420p", options: dict | None = None,
               rotation: float | None = None, hflip: bool = False,
               colour: tuple[int, int, int, int] | None = None, subtitles: str | None = None,
               chapters: bool = False, pixel_aspect: Fraction | None = None) -> Path:
    """A clip of (pts, RGB) frames in `time_base`; `rotation`: a display matrix (degrees
    counter-clockwise, PyAV's sign, then a mirror with `hflip`); `colour`: (range, matrix,
    primaries, transfer) tags, the pixels converted accordingly; `subtitles`: a stream of
    two cues in that codec ('fake-dvd': bitmap packets that are never decoded); `chapters`:
    two, 'One' and 'Two'; `pixel_aspect`: the sample aspect ratio (width / height of a
    pixel)."""
    out = av.open(str(path), "w")
    v = out.add_stream(codec, rate=RATE)
    v.width, v.height, v.pix_fmt = frames[0][1].shape[1], frames[0][1].shape[0], pix_fmt
    v.codec_context.time_base = time_base
    if options:
        v.codec_context.options = options
    if rotation is not None:
        v.set_display_rotation(rotation, hflip=hflip)
    if pixel_aspect is not None:
        v.codec_context.sample_aspect_ratio = pixel_aspect
    if colour:
        context = v.codec_context
        context.color_range, context.colorspace = colour[0], colour[1]
        context.color_primaries, context.color_trc = colour[2], colour[3]
    s = None
    if subtitles == "fake-dvd":
        s = out.add_mux_stream("dvd_subtitle")
    elif subtitles:
        s = out.add_stream(subtitles)
        s.codec_context.subtitle_header = (
            b"[Script Info]\r\nScriptType: v4.00+\r\n\r\n[Events]\r\nFormat: Layer, Start, End, "
            b"Style, Name, MarginL, MarginR, MarginV, Effect, Text\r\n")
    if s is not None:
        s.time_base = Fraction(1, 1000)
        s.metadata["language"] = "fra"
    if chapters:
        out.set_chapters([
            {"id": 1, "start": 0, "end": 500, "time_base": Fraction(1, 1000),
             "metadata": {"title": "One"}},
            {"id": 2, "start": 500, "end": 1000, "time_base": Fraction(1, 1000),
             "metadata": {"title": "Two"}}])
    out.metadata["title"] = "A test clip"
    for index, (pts, rgb) in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16
                                           else "rgb24")
        matrix = {1: "ITU709", 9: "BT2020"}.get(colour[1]) if colour else None
        frame = frame.reformat(format=pix_fmt, dst_colorspace=matrix,
                               dst_color_range=colour[0] if colour else None)
        frame.pts, frame.time_base = pts, time_base
        for packet in v.encode(frame):
            out.mux(packet)
        if s is not None and index in (0, 6):
            start = round(pts * time_base * 1000)
            if subtitles == "fake-dvd":
                packet = av.Packet(b"\x00\x10spu" + bytes([index]) * 12)
            else:
                cue = av.subtitles.subtitle.SubtitleSet.create(
                    f"0,0,Default,,0,0,0,,Cue {index}".encode(), 0, 300)
                packet = s.codec_context.encode_subtitle(cue)
            packet.stream, packet.time_base = s, Fraction(1, 1000)
            packet.pts = packet.dts = start
            packet.duration = 300
            out.mux(packet)
    for packet in v.encode(None):
        out.mux(packet)
    out.close()
    return path


def nearest(picture, size):
    """A stand-in upscaler: nearest-neighbour resampling (exact colours, no torch)."""
    h, w = picture.size
    rows, cols = np.arange(size[0]) * h // size[0], np.arange(size[1]) * w // size[1]
    return picture.with_pixels(picture.rgb[rows][:, cols], None)


def double(hw: tuple[int, int]) -> tuple[int, int]:
    return 2 * hw[0], 2 * hw[1]


def upscaled(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What `nearest` makes of decoded 8-bit pixels."""
    h, w = pixels.shape[:2]
    return pixels[np.arange(size[0]) * h // size[0]][:, np.arange(size[1]) * w // size[1]]


def _frames(count: int = 6, pts: list[int] | None = None, w: int = W, h: int = H) -> list:
    return [(p, _pattern(i, w, h)) for i, p in enumerate(pts or range(count))]


@pytest.mark.parametrize("degrees, hflip", [(-90, False), (90, False), (180, False),
                                            (-90, True)])
def test_a_rotated_clip_is_turned_upright_and_loses_the_tag(tmp_path, degrees, hflip):
    """The display matrix is applied to the pixels (sizes such as --height are of the
    picture as shown, and every player shows plain pixels alike); the output has none."""
    from liif_cli import video

    src = write_clip(tmp_path / "rot.mp4", _frames(3), rotation=degrees, hflip=hflip)
    dst = tmp_path / "out.mkv"
    notes = video.upscale_video(nearest, src, dst, double, crf=0)
    turn = f"turned {-degrees % 360} degrees clockwise"
    assert notes == [f"{src}: {turn}{' and mirrored' if hflip else ''} for display as its "
                     "display matrix says; the output's pixels are upright"]
    with av.open(str(dst)) as out:
        first = next(out.decode(video=0))
        assert first.rotation == 0 and first.side_data.get("DISPLAYMATRIX", None) is None
    for (_, got), (_, coded) in zip(video_frames(dst), video_frames(src), strict=True):
        shown = np.rot90(coded, degrees // 90)  # PyAV's angle: counter-clockwise
        if hflip:
            shown = shown[:, ::-1]
        expected = upscaled(shown, (2 * shown.shape[0], 2 * shown.shape[1]))
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected).mean() < 2


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_variable_frame_rate_keeps_every_timestamp_and_says_so(tmp_path, suffix):
    from liif_cli import video

    pts = [0, 1, 3, 4, 8, 9, 10, 16]  # 1/24 s ticks in MP4; milliseconds x 40 in MKV
    tb = Fraction(1, 24) if suffix == ".mp4" else Fraction(1, 1000)
    src = write_clip(tmp_path / f"vfr{suffix}", _frames(pts=[p * (40 if tb.denominator == 1000
                                                                    else 1) for p in pts]),
                     time_base=tb)
    dst = tmp_path / f"out{suffix}"
    notes = video.upscale_video(nearest, src, dst, double)
    ours, theirs = video_frames(dst), video_frames(src)
    assert len(ours) == len(theirs) == len(pts)
    assert [t for t, _ in ours] == [t for t, _ in theirs]
    step = float(tb) * (40 if suffix == ".mkv" else 1)
    low, high, mean = 1 / (6 * step), 1 / step, (len(pts) - 1) / (16 * step)
    assert notes == [f"{src}: variable frame rate ({low:.3g} to {high:.3g} fps, {mean:.3g} on "
                     "average): every frame's timestamp kept"]


def test_a_constant_frame_rate_gets_no_timing_note(tmp_path):
    from liif_cli import video

    src = write_clip(tmp_path / "cfr.mkv", _frames(pts=[0, 83, 167, 250, 333]),
                     time_base=Fraction(1, 1000))  # 12 fps in whole milliseconds
    assert video.upscale_video(nearest, src, tmp_path / "out.mkv", double) == []


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_a_matroska_file_cut_short_gets_a_note(tmp_path, suffix):
    """Matroska and WebM decode cleanly up to a cut, so only the length their tracks state
    shows that frames are missing; the whole file gets no note."""
    from liif_cli import video

    codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
    whole = write_clip(tmp_path / f"whole{suffix}", _frames(48), codec=codec)  # 4 s at 12 fps
    assert video.probe(whole).length == pytest.approx(4.0, abs=0.01)
    assert video.upscale_video(nearest, whole, tmp_path / f"a{suffix}", double) == []
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 4])  # past frame 1
    notes = video.upscale_video(nearest, cut, tmp_path / f"b{suffix}", double)
    written = video_frames(tmp_path / f"b{suffix}")
    assert 0 < len(written) < 48
    end = float(written[-1][0]) + 1 / RATE  # the last frame's time and its one frame step
    assert [note for note in notes if "cut short" in note] == [
        f"{cut}: its video ends at {end:.2f} s of the 4.00 s its container states; the file "
        "looks cut short, and the output has only the frames it holds"]


def test_the_cli_warns_of_a_cut_even_when_quiet(tiny_weights, tmp_path):
    from liif_cli.cli import app

    whole = write_clip(tmp_path / "whole.mkv", _frames(48))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 4])
    result = CliRunner().invoke(app, ["upscale", str(cut), "--scale", "2", "--quiet",
                                      "--weights", str(tiny_weights), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "looks cut short" in result.output
    assert (tmp_path / "cut_x2.mkv").exists()


def test_audio_that_outlasts_the_video_is_no_cut_and_not_counted_as_frames(tmp_path):
    """The frame estimate and the cut check read the video track's own length, not the
    container's (here a one-second sound under half a second of video)."""
    from liif_cli import video

    src = make_clip(tmp_path / "short.mkv", frames=N // 2)
    with av.open(str(src)) as check:
        assert check.duration / 1e6 == pytest.approx(1.0, abs=0.05)
    assert video.probe(src).frames == N // 2
    assert video.upscale_video(nearest, src, tmp_path / "out.mkv", double) == []


@pytest.mark.parametrize("pix_fmt, colour, suffix, written", [
    ("yuv420p", (1, 1, 1, 1), ".mp4", "yuv420p"),  # BT.709, limited range
    ("yuv420p", (2, 1, 1, 1), ".mkv", "yuvj420p"),  # full range: H.264 decodes it as yuvj
    ("yuv420p10le", (1, 9, 9, 14), ".mp4", "yuv420p10le"),  # BT.2020, 10 bits
    ("yuv444p", (1, 5, 5, 6), ".mkv", "yuv444p"),  # BT.601 (BT470BG matrix), no subsampling
    ("yuv420p10le", (1, 1, 1, 1), ".webm", "yuv420p"),  # VP9 here has 8 bits only: a note
])
def test_pixel_format_and_colour_tags_are_carried_over(tmp_path, pix_fmt, colour, suffix,
                                                       written):
    from liif_cli import video

    deep = pix_fmt.endswith("10le")
    frames = [(p, rgb.astype(np.uint16) * 257 if deep else rgb) for p, rgb in _frames(3)]
    src = write_clip(tmp_path / "tagged.mkv", frames, pix_fmt=pix_fmt, colour=colour,
                     options={"crf": "0"})
    dst = tmp_path / f"out{suffix}"
    size = (75, 101) if pix_fmt == "yuv444p" else (96, 128)  # 4:4:4 takes odd sides
    notes = video.upscale_video(nearest, src, dst, lambda hw: size, crf=0)
    if suffix == ".webm":
        assert notes == [f"{src}: pixel format {pix_fmt} written as yuv420p (libvpx-vp9 "
                         "cannot encode it)"]
    else:
        assert notes == []
    with av.open(str(dst)) as out:
        stream = out.streams.video[0]
        context = stream.codec_context
        frame = next(out.decode(video=0))
        assert (stream.width, stream.height) == (size[1], size[0])
        assert frame.format.name == written
        for tagged in (context, frame):
            assert (tagged.color_range, tagged.colorspace, tagged.color_primaries,
                    tagged.color_trc) == colour
    for (_, got), (_, source) in zip(video_frames(dst), video_frames(src), strict=True):
        # Decoded with the tags, so a range or matrix dropped anywhere shifts every colour.
        difference = np.abs(got.astype(int) - upscaled(source, size))
        assert difference.mean() < (3 if written == "yuv420p" and deep else 1.5)


def _chapters(path: Path) -> list:
    with av.open(str(path)) as container:
        return [(float(c["start"] * c["time_base"]), float(c["end"] * c["time_base"]),
                 c["metadata"].get("title")) for c in container.chapters()]


def _cues(path: Path) -> list:
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        cues = []
        for packet in container.demux(stream):
            if packet.dts is None:
                continue
            for subtitle in stream.decode(packet):
                cues.append((float(packet.pts * packet.time_base),
                             float(packet.duration * packet.time_base), subtitle.dialogue))
        return cues


@pytest.mark.parametrize("suffix, codec", [(".mkv", "srt"), (".mp4", "mov_text"),
                                           (".webm", "webvtt")])
def test_subtitles_and_chapters_are_carried_or_converted(tmp_path, suffix, codec):
    from liif_cli import video

    src = write_clip(tmp_path / "subs.mkv", _frames(8), subtitles="subrip", chapters=True)
    dst = tmp_path / f"out{suffix}"
    notes = video.upscale_video(nearest, src, dst, double)
    if codec == "srt":
        assert notes == []
    else:
        wanted = {"mov_text": "mov_text", "webvtt": "webvtt"}[codec]
        name = {".mp4": "MP4", ".webm": "WebM"}[suffix]
        assert notes == [f"{src}: subtitle stream 1 (srt) converted to {wanted} ({name} "
                         "cannot hold srt)"]
    with av.open(str(dst)) as out:
        stream = out.streams.subtitles[0]
        assert stream.codec_context.name == codec
        assert stream.metadata.get("language") == "fra"
        assert out.metadata.get("title") == "A test clip"
    assert _cues(dst) == _cues(src) == [(0.0, 0.3, b"Cue 0"), (0.5, 0.3, b"Cue 6")]
    assert _chapters(dst) == _chapters(src) == [(0.0, 0.5, "One"), (0.5, 1.0, "Two")]
    if suffix == ".mkv":  # copied packet for packet
        with av.open(str(dst)) as out, av.open(str(src)) as original:
            assert [bytes(p) for p in out.demux(subtitles=0) if p.dts is not None] == \
                [bytes(p) for p in original.demux(subtitles=0) if p.dts is not None]


def test_bitmap_subtitles_are_copied_where_they_fit_else_dropped_with_a_note(tmp_path):
    from liif_cli import video

    src = write_clip(tmp_path / "dvd.mkv", _frames(8), subtitles="fake-dvd")
    assert video.upscale_video(nearest, src, tmp_path / "out.mkv", double) == []
    with av.open(str(tmp_path / "out.mkv")) as out, av.open(str(src)) as original:
        assert [bytes(p) for p in out.demux(subtitles=0) if p.dts is not None] == \
            [bytes(p) for p in original.demux(subtitles=0) if p.dts is not None]
    notes = video.upscale_video(nearest, src, tmp_path / "out.webm", double)
    assert notes == [f"{src}: subtitle stream 1 (dvdsub) dropped (WebM cannot hold it, and "
                     "only text subtitles can be converted)"]
    with av.open(str(tmp_path / "out.webm")) as out:
        assert not out.streams.subtitles


class _Writer:
    """A stand-in for an output container: the real one, with `mux` or `set_chapters`
    failing as told."""

    def __init__(self, real, full_after: int | None = None, chapters: bool = True):
        self._real, self._left, self._chapters = real, full_after, chapters

    def __getattr__(self, name):
        return getattr(self._real, name)

    def mux(self, packet):
        if self._left is not None:
            if self._left == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._left -= 1
        self._real.mux(packet)

    def set_chapters(self, chapters):
        if not self._chapters:
            raise AttributeError("this PyAV cannot write chapters")
        self._real.set_chapters(chapters)


def _failing_writer(monkeypatch, **how):
    real_open = av.open

    def fake_open(file, mode="r", **options):
        container = real_open(file, mode, **options)
        return _Writer(container, **how) if mode == "w" else container

    monkeypatch.setattr(av, "open", fake_open)


def test_chapters_that_cannot_be_written_are_dropped_with_a_note(tmp_path, monkeypatch):
    from liif_cli import video

    src = write_clip(tmp_path / "chapters.mkv", _frames(3), chapters=True)
    _failing_writer(monkeypatch, chapters=False)
    notes = video.upscale_video(nearest, src, tmp_path / "out.mp4", double)
    assert notes == [f"{src}: its 2 chapters dropped (cannot write them to MP4: this PyAV "
                     "cannot write chapters)"]
    assert _chapters(tmp_path / "out.mp4") == []


def test_the_cli_prints_an_estimate_before_a_long_video(tiny_weights, clip, tmp_path,
                                                        monkeypatch):
    from liif_cli import cli

    src = tmp_path / "clip.mp4"
    src.write_bytes(clip.read_bytes())
    args = ["upscale", str(src), "--scale", "2", "--weights", str(tiny_weights), "--device",
            "cpu", "-o", str(tmp_path / "out.mp4")]
    short = CliRunner().invoke(cli.app, args)
    assert short.exit_code == 0 and "estimate:" not in short.output  # not a long job
    monkeypatch.setattr(cli, "ESTIMATE_MIN_S", 0.0)
    long = CliRunner().invoke(cli.app, [*args, "--overwrite"])
    assert long.exit_code == 0, long.output
    lines = [line for line in long.output.splitlines() if line.startswith("estimate:")]
    assert len(lines) == 1, long.output
    assert lines[0].startswith(f"estimate: clip.mp4: {N} frames of 128x96 (0.1 MP) at ")
    assert "MP/s (the first frame's rate): about 0:00:" in lines[0]
    assert long.output.index("estimate:") < long.output.index("wrote")


def test_a_disk_that_fills_during_the_encode_is_one_line_and_leaves_nothing(
        tiny_weights, clip, tmp_path, monkeypatch):
    from liif_cli.cli import app

    src = tmp_path / "clip.mp4"
    src.write_bytes(clip.read_bytes())
    _failing_writer(monkeypatch, full_after=3)
    result = CliRunner().invoke(app, ["upscale", str(src), "--scale", "2", "--weights",
                                      str(tiny_weights), "--device", "cpu", "-q"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"failed: {tmp_path / 'clip_x2.mp4'}: could not write "
                                     "the video: the disk is full (nothing was written)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_write_failing_at_the_trailer_leaves_nothing(clip, tmp_path):
    """A real failed write: the file size limit (RLIMIT_FSIZE) stops the file at 2 KB, which
    FFmpeg reports only when the output is closed (buffered writes, then MP4's index)."""
    from liif_cli import video

    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        with pytest.raises(LiifError, match="grew larger than this file system or limit"):
            video.upscale_video(nearest, clip, tmp_path / "out.mp4", double, crf=0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec, options, suffix", [("ffv1", None, "mkv"),
                                                    ("libx264", {"crf": "0"}, "mp4")])
def test_auto_weights_treat_a_lossless_video_as_clean(tiny_bundle, tmp_path, codec, options,
                                                      suffix):
    from liif_cli import video
    from liif_cli.batch import Job, run_job
    from liif_cli.cli import Precision, load_upscaler

    src = write_clip(tmp_path / f"lossless.{suffix}", _frames(2), codec=codec, options=options)
    assert not video.probe(src).lossy
    upscaler = load_upscaler(None, "cpu", Precision.fp32, None, None)
    result = run_job(upscaler, Job(src, tmp_path / "out.mp4"), lambda hw: (96, 128))
    assert result.model == "default"
    assert result.source == f"lossless {'ffv1' if codec == 'ffv1' else 'h264'} video"


# ------------------------------------------- sound offsets, pixel shapes, other streams, tags


def _first_sound_s(path: Path) -> float:
    with av.open(str(path)) as container:
        frame = next(container.decode(audio=0))
        return float(frame.pts * frame.time_base)


def test_reencoded_sound_that_starts_late_stays_in_place(tmp_path):
    """AAC cannot go into WebM, so it is re-encoded; it starts a second in, as before."""
    from liif_cli import video

    src = make_clip(tmp_path / "late.mp4", frames=2 * N, sound_start_s=1.0)
    dst = tmp_path / "out.webm"
    notes = video.upscale_video(nearest, src, dst, double)
    assert any("re-encoded as libopus" in note for note in notes)
    assert _first_sound_s(src) == pytest.approx(1.0, abs=0.03)
    assert _first_sound_s(dst) == pytest.approx(_first_sound_s(src), abs=0.03)


def test_mp3_sound_is_copied_where_the_container_holds_it(tmp_path):
    """The decoder is called mp3float; the codec is MP3, which MP4 holds as it is."""
    from liif_cli import video

    src = make_clip(tmp_path / "mp3.mkv", sound_codec="libmp3lame")
    dst = tmp_path / "out.mp4"
    assert video.upscale_video(nearest, src, dst, double) == []
    assert audio_packets(dst) == audio_packets(src)


def test_non_square_pixels_keep_their_shape_with_a_note(tmp_path):
    from liif_cli import video

    src = write_clip(tmp_path / "wide.mp4", _frames(3, w=16, h=12),
                     pixel_aspect=Fraction(2, 1))  # each pixel twice as wide as high
    dst = tmp_path / "out.mkv"
    assert video.upscale_video(nearest, src, dst, double) == [
        f"{src}: its pixels are not square (aspect 2); the output's are the same shape, so "
        "it displays at 64x24"]
    with av.open(str(dst)) as check:
        assert check.streams.video[0].sample_aspect_ratio == 2


def _two_video_streams(path: Path, *, cover: bool = False, video: bool = True) -> Path:
    """A clip with two video streams; with `cover`, one is a one-frame cover picture (MP4's
    album art, which FFmpeg lists after the tracks); without `video`, only that cover and a
    second of sound (an .m4a song)."""
    out = av.open(str(path), "w")
    streams = []
    for index in range(2 if video else 1):
        still = cover and index == 0
        stream = out.add_stream("mjpeg" if still else "libx264", rate=RATE)
        stream.width, stream.height = 16, 12
        stream.pix_fmt = "yuvj420p" if still else "yuv420p"
        if still:
            stream.disposition = av.stream.Disposition.attached_pic
        streams.append(stream)
    sound = None
    if not video:
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "mono"
    for i in range(4):
        for index, stream in enumerate(streams):
            if cover and index == 0 and i > 0:
                continue
            frame = av.VideoFrame.from_ndarray(_pattern(i + 4 * index, 16, 12), format="rgb24")
            frame = frame.reformat(format=stream.pix_fmt)
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            for packet in stream.encode(frame):
                out.mux(packet)
    if sound is not None:
        for first in range(0, 48000, 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 48000, first, Fraction(1, 48000)
            for packet in sound.encode(chunk):
                out.mux(packet)
    for stream in [*streams, *([sound] if sound else [])]:
        for packet in stream.encode(None):
            out.mux(packet)
    out.close()
    return path


def test_a_second_video_stream_is_not_kept_and_a_note_says_so(tmp_path):
    from liif_cli import video

    src = _two_video_streams(tmp_path / "angles.mkv")
    dst = tmp_path / "out.mkv"
    notes = video.upscale_video(nearest, src, dst, double)
    assert notes == [f"{src}: video stream 1 (h264) not kept (liif upscales one video "
                     "stream, 0)"]
    assert [f for _, f in video_frames(dst)][0].shape == (24, 32, 3)


def test_a_cover_picture_is_never_taken_for_the_video(tmp_path):
    from liif_cli import video

    src = _two_video_streams(tmp_path / "cover.mp4", cover=True)
    dst = tmp_path / "out.mp4"
    notes = video.upscale_video(nearest, src, dst, double)
    assert notes == [f"{src}: cover picture 1 (mjpeg) not kept (liif upscales one video "
                     "stream, 0)"]
    assert len(video_frames(dst)) == 4
    song = _two_video_streams(tmp_path / "song.mp4", cover=True, video=False)
    with pytest.raises(LiifError, match="has no video stream \\(a cover picture only\\)"):
        video.probe(song)


def test_frames_that_change_size_are_scaled_with_a_warning(tmp_path):
    from liif_cli import video
    from liif_cli.errors import Warn

    src = tmp_path / "change.mkv"
    out = av.open(str(src), "w")
    stream = out.add_stream("mjpeg", rate=RATE)
    stream.width, stream.height, stream.pix_fmt = 16, 12, "yuvj420p"
    wide = av.CodecContext.create("mjpeg", "w")  # an encoder for the frames of another size
    wide.width, wide.height, wide.pix_fmt = 32, 12, "yuvj420p"
    wide.time_base = Fraction(1, RATE)
    wide.open()
    for i in range(5):
        encoder = wide if i >= 3 else stream.codec_context
        frame = av.VideoFrame.from_ndarray(_pattern(i, 32 if i >= 3 else 16, 12), format="rgb24")
        frame = frame.reformat(format="yuvj420p")
        frame.pts, frame.time_base = i, Fraction(1, RATE)
        for packet in encoder.encode(frame):
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base = Fraction(1, RATE)
            out.mux(packet)
    out.close()
    notes = video.upscale_video(nearest, src, tmp_path / "out.mkv", double)
    assert notes == [f"{src}: its frames change size (from 16x12 to 32x12 at frame 4); every "
                     "frame is scaled to 32x24, so those of another shape are stretched"]
    assert isinstance(notes[0], Warn)  # shown even with --quiet
    assert len(video_frames(tmp_path / "out.mkv")) == 5


def test_frames_sharing_a_timestamp_are_left_out_with_a_warning(tmp_path):
    """An encoder takes no two frames at one time; before, the whole job failed on a hidden
    temporary file's name."""
    from liif_cli import video
    from liif_cli.errors import Warn

    src = write_clip(tmp_path / "twice.mkv", _frames(pts=[0, 40, 40, 80, 120]),
                     time_base=Fraction(1, 1000))
    dst = tmp_path / "out.mp4"
    notes = video.upscale_video(nearest, src, dst, double)
    assert notes == [f"{src}: 1 frame(s) with the same timestamp as the frame before left "
                     "out (a player shows such a frame for no time)"]
    assert isinstance(notes[0], Warn)
    assert [float(t) for t, _ in video_frames(dst)] == pytest.approx([0, 0.04, 0.08, 0.12])


def test_vp9_alpha_that_is_not_kept_gets_a_note(tmp_path):
    from liif_cli import video

    # libvpx-vp9 stores the alpha plane apart, and tags the track alpha_mode=1.
    src = write_clip(tmp_path / "alpha.webm", _frames(3, w=16, h=12), codec="libvpx-vp9",
                     pix_fmt="yuva420p")
    assert video.upscale_video(nearest, src, tmp_path / "out.webm", double) == [
        f"{src}: its alpha channel (VP9 alpha) is not kept"]


def test_strip_metadata_drops_a_videos_date_and_place(tmp_path):
    from liif_cli.batch import Job, run_job

    src = write_clip(tmp_path / "phone.mp4", _frames(3))  # titled "A test clip"
    with av.open(str(src)) as check:
        assert check.metadata.get("title") == "A test clip"
    kept, stripped = tmp_path / "kept.mp4", tmp_path / "stripped.mp4"
    run_job(_NearestUpscaler(), Job(src, kept), double)
    run_job(_NearestUpscaler(), Job(src, stripped), double, strip_metadata=True)
    with av.open(str(kept)) as a, av.open(str(stripped)) as b:
        assert a.metadata.get("title") == "A test clip"
        assert "title" not in b.metadata


class _NearestUpscaler:
    """Stands in for an Upscaler in batch jobs: `nearest` for every picture."""

    name = "nearest"

    def model_for(self, picture):
        return self

    def resample(self, picture, size, name=None):
        return nearest(picture, size)


# --------------------------------------------- animations: loops, delays, profiles, pages


def _frames_of(path: Path) -> list[tuple[np.ndarray, int | None]]:
    """(RGBA pixels, duration) of each frame as Pillow composites it."""
    with Image.open(path) as image:
        result = []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()
            result.append((np.asarray(image.convert("RGBA")), image.info.get("duration")))
        return result


def _same(picture, size):
    """A stand-in resample that keeps every pixel (the frames as they are)."""
    return nearest(picture, size) if picture.alpha is None else \
        picture.with_pixels(picture.rgb, picture.alpha)


def _still_size(hw):
    return hw


@pytest.mark.parametrize("suffix, loop", [(".gif", None), (".webp", 1), (".png", 1)])
def test_a_gif_that_plays_once_still_plays_once(tmp_path, suffix, loop):
    from liif_cli.animation import upscale_animation

    frames = [Image.new("RGB", (16, 12), c) for c in ("red", "blue", "green")]
    frames[0].save(tmp_path / "once.gif", save_all=True, append_images=frames[1:], duration=100)
    dst = tmp_path / f"out{suffix}"
    upscale_animation(nearest, tmp_path / "once.gif", dst, double)
    with Image.open(dst) as out:
        assert out.info.get("loop") == loop  # a GIF with no loop count plays once
    if suffix == ".gif":
        assert b"NETSCAPE2.0" not in dst.read_bytes()


def test_gif_frames_without_a_delay_keep_none(tmp_path):
    """A frame with no Graphic Control Extension has no delay; it took the first frame's."""
    import re

    from liif_cli.animation import upscale_animation

    frames = [Image.new("RGB", (16, 12), c) for c in ("red", "blue", "green")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:],
                   duration=[2000, 0, 0], loop=0)
    data = (tmp_path / "a.gif").read_bytes()
    keep = data.find(b"\x21\xf9\x04") + 8  # the first frame's extension stays
    src = tmp_path / "b.gif"
    src.write_bytes(data[:keep] + re.sub(rb"\x21\xf9\x04.{4}\x00", b"", data[keep:],
                                         flags=re.S))
    assert [d for _, d in _frames_of(src)] == [2000, None, None]
    upscale_animation(nearest, src, tmp_path / "out.gif", double)
    assert [d or 0 for _, d in _frames_of(tmp_path / "out.gif")] == [2000, 0, 0]


def test_gif_transparency_is_right_whatever_disposal_the_source_used(tmp_path):
    """Frames come out whole; the source's disposal methods were for its partial frames."""
    from liif_cli.animation import upscale_animation

    frames = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 160, 0)]):
        rgba = np.zeros((12, 16, 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = colour, 255
        rgba[:, : 4 + 3 * i, 3] = 0
        rgba[3 * i: 3 * i + 3, :, 3] = 0
        frames.append(Image.fromarray(rgba, "RGBA"))
    src = tmp_path / "d.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   disposal=[0, 2, 0])
    upscale_animation(_same, src, tmp_path / "out.gif", _still_size)
    for (ours, _), (theirs, _) in zip(_frames_of(tmp_path / "out.gif"), _frames_of(src),
                                      strict=True):
        assert np.array_equal(ours[..., 3] == 0, theirs[..., 3] == 0)


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("suffix, options", [(".png", {}), (".webp", {"lossless": True}),
                                             (".tif", {})])
def test_an_animations_colour_profile_is_kept(tmp_path, suffix, options):
    from liif_cli.animation import upscale_animation

    frames = [Image.new("RGB", (16, 12), c) for c in ("red", "blue")]
    src = tmp_path / f"icc{suffix}"
    profile = _srgb_profile()  # made once: its header holds the time it was made
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100,
                   icc_profile=profile, **options)
    dst = tmp_path / f"out{suffix}"
    upscale_animation(nearest, src, dst, double)
    with Image.open(dst) as out:
        assert out.info.get("icc_profile") == profile
    notes = upscale_animation(nearest, src, tmp_path / "out.gif", double)
    assert notes[1] == f"{src}: its colour profile dropped (GIF animations cannot hold it here)"


def test_an_apngs_hidden_default_image_stays_hidden(tmp_path):
    from liif_cli.animation import upscale_animation

    frames = [Image.new("RGB", (16, 12), c) for c in ("white", "red", "blue")]
    src = tmp_path / "a.png"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=[100, 200],
                   loop=0, default_image=True)  # Pillow times the animation frames only
    timing = [d for _, d in _frames_of(src)[1:]]
    assert timing == [100, 200]
    notes = upscale_animation(nearest, src, tmp_path / "out.png", double)
    assert notes == [f"{src}: 2 frames upscaled (and its hidden default image, kept hidden)"]
    with Image.open(tmp_path / "out.png") as out:
        assert out.info.get("default_image") and out.n_frames == 3
    assert [d for _, d in _frames_of(tmp_path / "out.png")[1:]] == timing
    for suffix, name in ((".gif", "GIF"), (".tif", "TIFF")):
        notes = upscale_animation(nearest, src, tmp_path / f"out{suffix}", double)
        what = "pages" if suffix == ".tif" else "frames"
        assert notes == [f"{src}: 2 {what} upscaled (its hidden default image left out: "
                         f"{name} has none)"]
        shown = _frames_of(tmp_path / f"out{suffix}")
        assert [tuple(f[0, 0, :3]) for f, _ in shown] == [(255, 0, 0), (0, 0, 255)]
    assert [d for _, d in _frames_of(tmp_path / "out.gif")] == timing


def test_an_animations_exif_says_the_outputs_size(tmp_path):
    from liif_cli.animation import upscale_animation

    exif = Image.Exif()
    exif.get_ifd(0x8769).update({0xA002: 16, 0xA003: 12})  # PixelXDimension, PixelYDimension
    frames = [Image.new("RGB", (16, 12), c) for c in ("red", "blue")]
    src = tmp_path / "a.webp"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, lossless=True,
                   exif=exif.tobytes())
    upscale_animation(nearest, src, tmp_path / "out.webp", double)
    with Image.open(tmp_path / "out.webp") as out:
        sub = out.getexif().get_ifd(0x8769)
        assert (sub[0xA002], sub[0xA003]) == (32, 24)
    upscale_animation(nearest, src, tmp_path / "bare.webp", double, strip_metadata=True)
    with Image.open(tmp_path / "bare.webp") as out:
        assert "exif" not in out.info


def test_tiff_pages_of_different_sizes_cannot_become_one_animation(tmp_path):
    from liif_cli.animation import upscale_animation

    pages = [Image.new("RGB", (16, 12), "red"), Image.new("RGB", (40, 6), "blue")]
    src = tmp_path / "p.tif"
    pages[0].save(src, save_all=True, append_images=pages[1:])
    for suffix in (".gif", ".webp", ".png"):
        with pytest.raises(LiifError, match="its pages differ in size, which .* cannot hold"):
            upscale_animation(_no_render, src, tmp_path / f"out{suffix}", double)
    upscale_animation(nearest, src, tmp_path / "out.tif", double)
    with Image.open(tmp_path / "out.tif") as out:
        sizes = []
        for index in range(out.n_frames):
            out.seek(index)
            sizes.append(out.size)
    assert sizes == [(32, 24), (80, 12)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "p.tif"]


def test_identical_frames_in_a_row_are_merged_by_the_writer_with_a_note(tmp_path):
    from liif_cli.animation import upscale_animation

    pages = [Image.new("RGB", (16, 12), c) for c in ("red", "red", "red", "blue")]
    src = tmp_path / "a.tif"  # a TIFF keeps every page; the animation writers would merge
    pages[0].save(src, save_all=True, append_images=pages[1:])
    dst = tmp_path / "out.gif"
    notes = upscale_animation(nearest, src, dst, double)
    assert notes[1:] == [f"{dst}: 2 frame(s) identical to the one before stored with it, its "
                         "duration lengthened (GIF keeps a still moment so); it plays the same"]
    assert len(_frames_of(dst)) == 2


def test_a_gif_without_its_end_marker_gets_a_warning(tmp_path):
    from liif_cli.animation import upscale_animation
    from liif_cli.errors import Warn

    _animation(tmp_path / "whole.gif")
    assert upscale_animation(nearest, tmp_path / "whole.gif", tmp_path / "a.gif",
                             double)[1:] == []
    cut = tmp_path / "cut.gif"
    cut.write_bytes((tmp_path / "whole.gif").read_bytes()[:-1])  # every frame, no trailer
    notes = upscale_animation(nearest, cut, tmp_path / "b.gif", double)
    assert notes[1:] == [f"{cut}: the file ends without GIF's end marker; it looks cut short, "
                         "and the output has only the frames it holds"]
    assert isinstance(notes[1], Warn)


def test_frame_times_survive_gifs_hundredths_of_a_second(tmp_path):
    """33 ms frames (30 fps) into a GIF: Pillow would store 30 ms each (10% fast); each
    frame starts at its own time to the nearest hundredth instead."""
    from liif_cli.animation import upscale_animation

    frames = [Image.new("RGB", (16, 12), (40 * i, 0, 0)) for i in range(6)]
    src = tmp_path / "a.webp"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=33, loop=0,
                   lossless=True)
    upscale_animation(nearest, src, tmp_path / "out.gif", double)
    delays = [d for _, d in _frames_of(tmp_path / "out.gif")]
    assert delays == [30, 40, 30, 30, 30, 40] and sum(delays) == 200  # 6 x 33 = 198


def test_a_source_with_alpha_is_told_its_alpha_is_not_kept(tmp_path):
    from liif_cli import video

    src = write_clip(tmp_path / "alpha.mov", _frames(3), codec="qtrle", pix_fmt="argb")
    notes = video.upscale_video(nearest, src, tmp_path / "out.mkv", double)
    assert notes == [f"{src}: pixel format argb written as yuv420p (its alpha is not kept; "
                     "libx264 cannot encode it)"]


def test_a_gif_frame_beyond_its_canvas_is_refused_not_squeezed(tmp_path):
    """Pillow widens the canvas for a frame placed past it; that frame would have been
    squeezed into the first frame's output size."""
    import struct

    from liif_cli.animation import upscale_animation

    first = Image.new("RGB", (8, 6), (10, 200, 10))
    second = first.copy()
    second.putpixel((7, 5), (250, 0, 0))  # the second frame stores one changed pixel
    src = tmp_path / "grow.gif"
    first.save(src, save_all=True, append_images=[second], duration=100, loop=0)
    raw = bytearray(src.read_bytes())
    spots = [i for i in range(len(raw) - 9) if raw[i] == 0x2C
             and struct.unpack("<HHHH", raw[i + 1:i + 9])[2:] == (1, 1)]
    raw[spots[-1] + 1:spots[-1] + 3] = struct.pack("<H", 10)  # move it 10 px from the left
    src.write_bytes(bytes(raw))
    with pytest.raises(LiifError, match="frame 2 is 11x6, not the 8x6 of the animation"):
        upscale_animation(nearest, src, tmp_path / "out.gif", double)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grow.gif"]


def test_timestamps_that_go_back_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    """A clip whose clock restarts part-way (two files joined by hand): no container writer
    takes that, so it is decoded here as if it had (frames 4-6 read as 0, 40, 80 ms)."""
    from liif_cli import video

    src = write_clip(tmp_path / "joined.mkv", _frames(pts=[0, 40, 80, 120, 160, 200]),
                     time_base=Fraction(1, 1000))
    decode = video._decode

    def restarted(av_module, packet, path):
        frames = decode(av_module, packet, path)
        for frame in frames:
            if frame.pts is not None and frame.pts >= 120:
                frame.pts -= 120
        return frames

    monkeypatch.setattr(video, "_decode", restarted)
    with pytest.raises(LiifError, match="its timestamps go back at frame 4 .from 0.080 s to "
                                        "0.000 s"):
        video.upscale_video(nearest, src, tmp_path / "out.mkv", double)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined.mkv"]
