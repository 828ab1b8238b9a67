"""Videos and animations: every frame through the still-image path, timing and sound kept."""

from __future__ import annotations

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


def make_clip(path: Path, frames: int = N, audio: bool = True, video: bool = True) -> Path:
    """A 12-frame 64x48 H.264 clip at 12 fps with a one-second 440 Hz AAC track."""
    out = av.open(str(path), "w")
    v = None
    if video:
        v = out.add_stream("libx264", rate=RATE)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    a = None
    if audio:
        a = out.add_stream("aac", rate=44100)
        a.layout = "mono"
    for i in range(frames if v is not None else 0):
        frame = av.VideoFrame.from_ndarray(_pattern(i), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, RATE)
        for packet in v.encode(frame):
            out.mux(packet)
    if a is not None:
        n = 44100 * N // RATE
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)
        for start in range(0, n, 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 44100, start, Fraction(1, 44100)
            for packet in a.encode(chunk):
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
            "def resample(self, *a):\n    time.sleep(0.5)\n    return slow(self, *a)\n"
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


def test_multi_page_tiff_upscales_every_page(upscaler, tmp_path):
    from liif_cli.batch import Job, run_job

    src = tmp_path / "pages.tif"
    pages = [Image.new("RGB", (16, 12), c) for c in ("red", "blue")]
    pages[0].save(src, save_all=True, append_images=pages[1:])
    dst = tmp_path / "out.tif"
    run_job(upscaler, Job(src, dst), lambda hw: (24, 32))
    with Image.open(dst) as out, Image.open(src) as original:
        assert out.n_frames == 2
        for index in range(2):
            out.seek(index)
            original.seek(index)
            assert out.size == (32, 24)
            expected = np.rint(upscaler.resample(_picture(original), (24, 32)).rgb * 255)
            assert np.abs(np.asarray(out.convert("RGB")) - expected).max() <= 1  # deflate


def test_an_animation_cannot_be_written_as_a_still_format(upscaler, tmp_path):
    from liif_cli.batch import Job, run_job

    src = tmp_path / "anim.gif"
    _animation(src)
    with pytest.raises(LiifError, match="holds one picture only"):
        run_job(upscaler, Job(src, tmp_path / "out.jpg"), lambda hw: (24, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif"]


def test_core_install_error_names_the_video_extra(monkeypatch, clip, tmp_path):
    from liif_cli import video

    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails
    with pytest.raises(LiifError, match=r"pip install 'liif\[video\]'"):
        video.probe(clip)
