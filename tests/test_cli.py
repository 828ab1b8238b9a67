"""Tests for the `liif` command line (liif_cli.cli): upscale, resize, info, --version.

They run the real commands through typer's CliRunner with a tiny random checkpoint (the
`tiny_weights` fixture), so they check plumbing, sizes, formats and errors, not image quality.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from liif_cli import __version__
from liif_cli.cli import app
from liif_cli.errors import LiifError
from liif_cli.images import Picture, read_image, write_image
from liif_cli.sizing import fit_size, target_size

try:
    from PIL import ImageCms

    SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
except ImportError:  # Pillow built without littlecms
    SRGB = None

RNG = np.random.default_rng(2024)
RUNNER = CliRunner()
# Paths longer than any terminal: an error message must still come out as one line.
LONG_NAME = "a_folder_with_a_deliberately_long_name_" * 4
FORMAT_OF = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".bmp": "BMP"}


# ------------------------------------------------------------------------------------- helpers


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / LONG_NAME
    folder.mkdir()
    return folder


def run(*args: object):
    result = RUNNER.invoke(app, [str(a) for a in args])
    # Anything but a clean exit (SystemExit) is a crash that a user would see as a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"crashed: {result.exception!r}\n{result.output}")
    return result


def lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def assert_one_error_line(result, *words: str, code: int | None = None) -> str:
    """Non-zero exit (or exactly `code`), no traceback, one non-blank line naming `words`."""
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    found = lines(result)
    assert len(found) == 1, found
    for word in words:
        assert word.lower() in found[0].lower(), found[0]
    return found[0]


def files_under(folder: Path) -> set[str]:
    """Every file below `folder`, hidden (temporary) ones included."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def make_image(path: Path, width: int = 30, height: int = 20, mode: str = "RGB",
               **save_options) -> Path:
    """A random-ish image of the given size and mode, saved in the format of its suffix."""
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = RNG.integers(0, 256, (height, width, channels)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode).save(path, **save_options)
    return path


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def png_depth_and_colour_type(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return data[24], data[25]


def assert_true_16_bit(values: np.ndarray) -> None:
    """Not 8-bit data stretched to 16 bits (v * 257 has equal high and low bytes)."""
    values = values.astype(np.uint16)
    assert np.any((values & 0xFF) != (values >> 8))


# ------------------------------------------------------------------------------ upscale: sizes


def test_fractional_scale_rounds_and_names_output_beside_input(work, tiny_weights):
    src = make_image(work / "photo.png", 13, 7)
    result = run("upscale", src, "--scale", "2.5", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    target = work / "photo_x2.5.png"
    assert size_of(target) == (33, 18)  # 32.5 and 17.5, rounded half up
    assert files_under(work) == {"photo.png", "photo_x2.5.png"}
    assert str(target) in "".join(result.output.split())  # reports what it wrote


def test_large_fractional_scale(work, tiny_weights):
    src = make_image(work / "small.jpg", 8, 6)
    result = run("upscale", src, "-s", "12.5", "-w", tiny_weights, "-q")
    assert result.exit_code == 0, result.output
    target = work / "small_x12.5.jpg"
    assert size_of(target) == (100, 75)
    with Image.open(target) as image:
        assert image.format == "JPEG"


def test_integer_scale_label(work, tiny_weights):
    src = make_image(work / "a.png", 10, 8)
    assert run("upscale", src, "--scale", "2", "-w", tiny_weights).exit_code == 0
    assert size_of(work / "a_x2.png") == (20, 16)


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--width", 45, (45, 30)),
    ("--width", 60, (60, 40)),
    ("--height", 50, (75, 50)),
    ("--height", 10, (15, 10)),  # smaller than the input: still keeps the aspect ratio
])
def test_width_or_height_alone_keeps_aspect(work, tiny_weights, option, value, expected):
    src = make_image(work / "a.png", 30, 20)
    out = work / "out.png"
    result = run("upscale", src, option, value, "-o", out, "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert size_of(out) == expected


def test_size_is_exact_even_if_aspect_changes(work, tiny_weights):
    src = make_image(work / "a.png", 30, 20)
    result = run("upscale", src, "--size", "50x70", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    new = files_under(work) - {"a.png"}
    assert len(new) == 1
    assert size_of(work / new.pop()) == (50, 70)
    # ... but says so, in one line, since --fit was not given.
    warning = [line for line in lines(result) if line.startswith("warning:")]
    assert len(warning) == 1 and "stretched from 30x20 to 50x70" in warning[0], result.output
    assert "--fit contain" in warning[0]


@pytest.mark.parametrize("fit,expected", [("contain", (21, 32)), ("cover", (60, 32)),
                                          ("stretch", (60, 32))])
def test_upscale_fit_with_size(work, tiny_weights, fit, expected):
    src = make_image(work / "portrait.png", 20, 30)  # 2:3, asked into a 60x32 box
    out = work / f"{fit}.png"
    result = run("upscale", src, "--size", "60x32", "--fit", fit, "-o", out, "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert size_of(out) == expected
    assert "warning" not in result.output  # --fit given: the user chose


def test_upscale_size_within_one_percent_does_not_warn(work, tiny_weights):
    src = make_image(work / "a.png", 100, 50)
    result = run("upscale", src, "--size", "201x100", "-w", tiny_weights, "-o", work / "b.png")
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert size_of(work / "b.png") == (201, 100)


def test_upscale_fit_without_size_is_a_usage_error(work, tiny_weights):
    src = make_image(work / "a.png", 10, 10)
    assert_one_error_line(run("upscale", src, "--scale", "2", "--fit", "cover"),
                          "--fit", "--size", code=2)


# ---------------------------------------------------------------------------- upscale: outputs


def test_output_file(work, tiny_weights):
    src = make_image(work / "a.png", 12, 10)
    out = work / "result.webp"
    result = run("upscale", src, "--scale", "3", "-o", out, "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert files_under(work) == {"a.png", "result.webp"}
    with Image.open(out) as image:
        assert image.format == "WEBP" and image.size == (36, 30)


def test_output_folder_with_several_inputs(work, tiny_weights):
    a = make_image(work / "a.png", 12, 10)
    b = make_image(work / "b.jpg", 8, 10)
    out = work / "out"
    out.mkdir()
    result = run("upscale", a, b, "--scale", "2", "-o", out, "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"a_x2.png", "b_x2.jpg"}
    assert size_of(out / "a_x2.png") == (24, 20)
    assert size_of(out / "b_x2.jpg") == (16, 20)
    assert files_under(work) == {"a.png", "b.jpg", "out/a_x2.png", "out/b_x2.jpg"}


def test_never_overwrites_without_overwrite(work, tiny_weights):
    src = make_image(work / "a.png", 12, 10)
    out = work / "a_x2.png"
    out.write_bytes(b"precious")
    before = out.stat().st_mtime_ns
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights)
    assert_one_error_line(result, "exists", "--overwrite")
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == before
    assert files_under(work) == {"a.png", "a_x2.png"}

    result = run("upscale", src, "--scale", "2", "-w", tiny_weights, "--overwrite")
    assert result.exit_code == 0, result.output
    assert size_of(out) == (24, 20)
    assert files_under(work) == {"a.png", "a_x2.png"}


@pytest.mark.parametrize("alias", ["same", "dotdot", "hard link"])
def test_refuses_to_write_onto_an_input_even_with_overwrite(work, tiny_weights, alias):
    # A hard link stands in for another spelling of one file on a case-insensitive file
    # system (`-o A.PNG` for a.png): only the file's identity, not its path, tells them apart.
    src = make_image(work / "a.png", 12, 10)
    original = src.read_bytes()
    (work / "sub").mkdir()
    target = {"same": src, "dotdot": work / "sub" / ".." / "a.png",
              "hard link": work / "sub" / "b.png"}[alias]
    if alias == "hard link":
        os.link(src, target)
    result = run("upscale", src, "--scale", "2", "-o", target, "--overwrite", "-w", tiny_weights)
    assert_one_error_line(result, "input")
    assert src.read_bytes() == original
    assert files_under(work) == {"a.png", "sub/b.png"} if alias == "hard link" else {"a.png"}


# ---------------------------------------------------------------------------- upscale: formats


@pytest.mark.parametrize("suffix", list(FORMAT_OF))
def test_formats_in_and_out(work, tiny_weights, suffix):
    src = make_image(work / f"in{suffix}", 10, 6)
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights, "-q")
    assert result.exit_code == 0, result.output
    with Image.open(work / f"in_x2{suffix}") as image:  # default name keeps the format
        assert image.format == FORMAT_OF[suffix] and image.size == (20, 12)
    for out_suffix, fmt in FORMAT_OF.items():
        out = work / f"converted{out_suffix}"
        result = run("upscale", src, "--scale", "1.5", "-o", out, "-w", tiny_weights, "-q")
        assert result.exit_code == 0, result.output
        with Image.open(out) as image:
            assert image.format == fmt and image.size == (15, 9)


def test_rgba_keeps_alpha(work, tiny_weights):
    pixels = RNG.integers(0, 256, (10, 16, 4)).astype(np.uint8)
    pixels[:, :8, 3] = 0  # left half transparent
    pixels[:, 8:, 3] = 255  # right half opaque
    Image.fromarray(pixels, "RGBA").save(work / "a.png")
    result = run("upscale", work / "a.png", "--scale", "2", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    with Image.open(work / "a_x2.png") as image:
        assert image.mode == "RGBA" and image.size == (32, 20)
        alpha = np.asarray(image.getchannel("A"))
    assert alpha.shape == (20, 32)
    assert alpha[:, :6].max() <= 10 and alpha[:, -6:].min() >= 245


def test_grayscale_stays_grayscale(work, tiny_weights):
    src = make_image(work / "g.png", 12, 10, mode="L")
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    with Image.open(work / "g_x2.png") as image:
        assert image.mode == "L" and image.size == (24, 20)


def test_16_bit_grayscale_png_stays_16_bit(work, tiny_weights):
    gray = RNG.integers(0, 65536, (10, 12)).astype(np.uint16)
    Image.fromarray(gray).save(work / "deep.png")
    with Image.open(work / "deep.png") as image:
        assert image.mode == "I;16"  # the input really is 16-bit gray
    result = run("upscale", work / "deep.png", "--scale", "2", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    out = work / "deep_x2.png"
    assert png_depth_and_colour_type(out) == (16, 0)
    with Image.open(out) as image:
        assert image.mode == "I;16" and image.size == (24, 20)
        assert_true_16_bit(np.asarray(image))


def test_16_bit_rgb_png_stays_16_bit(work, tiny_weights):
    src = work / "deep.png"
    write_image(Picture.from_array(RNG.integers(0, 65536, (10, 12, 3)).astype(np.uint16)), src)
    assert png_depth_and_colour_type(src) == (16, 2)
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    out = work / "deep_x2.png"
    assert png_depth_and_colour_type(out) == (16, 2)
    picture = read_image(out)
    assert picture.bit_depth == 16 and not picture.grayscale and picture.size == (20, 24)
    assert_true_16_bit(np.rint(picture.rgb * 65535))


def test_exif_orientation_is_applied(work, tiny_weights):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    src = make_image(work / "phone.jpg", 30, 20, exif=exif)
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    with Image.open(work / "phone_x2.jpg") as image:
        assert image.size == (40, 60)  # upright: width and height swapped
        assert image.getexif().get(0x0112, 1) == 1  # and not rotated a second time by viewers


@pytest.mark.skipif(SRGB is None, reason="PIL.ImageCms is not available")
def test_exif_is_carried_and_strip_metadata_drops_it_but_keeps_icc(work, tiny_weights):
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Canon", 6
    exif.get_ifd(0x8825)[1] = "N"  # GPSLatitudeRef: where the photo was taken
    exif.get_ifd(0x8769)[0xA002] = 30
    src = make_image(work / "phone.jpg", 30, 20, exif=exif, icc_profile=SRGB)
    assert run("upscale", src, "--scale", "2", "-w", tiny_weights).exit_code == 0
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights, "--strip-metadata",
                 "-o", work / "private.jpg")
    assert result.exit_code == 0, result.output
    folder = run("resize", src, "--size", "50x50", "-o", work / "out", "-w", tiny_weights,
                 "--strip-metadata", "--format", "png")
    assert folder.exit_code == 0, folder.output
    with Image.open(work / "phone_x2.jpg") as image:
        kept = image.getexif()
        assert (kept[0x010F], kept[0x0112]) == ("Canon", 1)
        assert kept.get_ifd(0x8825)[1] == "N" and kept.get_ifd(0x8769)[0xA002] == 40
    for stripped in (work / "private.jpg", work / "out" / "phone.png"):
        with Image.open(stripped) as image:
            assert not image.getexif().get_ifd(0x8825) and 0x010F not in image.getexif()
            assert image.info.get("icc_profile") == SRGB


@pytest.mark.skipif(SRGB is None, reason="PIL.ImageCms is not available")
@pytest.mark.parametrize("suffix, lost", [(".png", None), (".tif", "EXIF"),
                                          (".bmp", "colour profile and EXIF")])
def test_metadata_an_output_cannot_carry_is_named_in_a_note(work, tiny_weights, suffix, lost):
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    src = make_image(work / "photo.jpg", 12, 10, exif=exif, icc_profile=SRGB)
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights, "-o", work / f"o{suffix}")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    if lost is None:
        assert "dropped" not in text
    else:
        assert f"its {lost}" in text and f"dropped ({suffix[1:].upper()} output" in text
    quiet = run("upscale", src, "--scale", "2", "-w", tiny_weights, "--strip-metadata",
                "-o", work / f"p{suffix}")
    assert ("EXIF" in quiet.output) is False  # stripped on request: nothing to tell


@pytest.mark.skipif(SRGB is None, reason="PIL.ImageCms is not available")
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_icc_profile_is_carried(work, tiny_weights, suffix):
    src = make_image(work / f"a{suffix}", 12, 10, icc_profile=SRGB)
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    with Image.open(work / f"a_x2{suffix}") as image:
        assert image.info.get("icc_profile") == SRGB


# ------------------------------------------------------------------------- upscale: bad input


def _text_as_png(work: Path) -> Path:
    (work / "notes.png").write_text("this is not an image\n")
    return work / "notes.png"


def _truncated_png(work: Path) -> Path:
    full = make_image(work / "full.png", 30, 20).read_bytes()
    (work / "full.png").unlink()
    (work / "cut.png").write_bytes(full[: len(full) // 2])
    return work / "cut.png"


def _non_checkpoint(work: Path) -> Path:
    (work / "fake.pth").write_bytes(b"definitely not a torch checkpoint")
    return work / "fake.pth"


BAD_UPSCALES = {
    "missing file": (lambda w: [w / "missing.png", "--scale", "2"], ["missing.png", "no such"]),
    "text named .png": (lambda w: [_text_as_png(w), "--scale", "2"], ["notes.png", "not an image"]),
    "truncated png": (lambda w: [_truncated_png(w), "--scale", "2"], ["cut.png", "damaged"]),
    "scale 0": (lambda w: [make_image(w / "a.png"), "--scale", "0"], ["scale"]),
    "scale -1": (lambda w: [make_image(w / "a.png"), "--scale", "-1"], ["scale"]),
    "scale nan": (lambda w: [make_image(w / "a.png"), "--scale", "nan"], ["scale"]),
    "scale inf": (lambda w: [make_image(w / "a.png"), "--scale", "inf"], ["scale"]),
    "size 12": (lambda w: [make_image(w / "a.png"), "--size", "12"], ["size", "'12'"]),
    "size axb": (lambda w: [make_image(w / "a.png"), "--size", "axb"], ["size", "axb"]),
    "size 0x5": (lambda w: [make_image(w / "a.png"), "--size", "0x5"], ["size", "0x5"]),
    "scale and size": (lambda w: [make_image(w / "a.png"), "--scale", "2", "--size", "9x9"],
                       ["exactly one"]),
    "no size at all": (lambda w: [make_image(w / "a.png")], ["exactly one"]),
    "above max pixels": (lambda w: [make_image(w / "a.png"), "--scale", "2",
                                    "--max-pixels", "100"], ["max-pixels"]),
    "missing output folder": (lambda w: [make_image(w / "a.png"), "--scale", "2",
                                         "-o", w / "missing_dir" / "out.png"], ["missing_dir"]),
    "output folder is a file": (lambda w: [make_image(w / "a.png"), "--scale", "2",
                                           "-o", w / "a.png" / "out.png"], ["not a folder"]),
    "weights not a checkpoint": (lambda w: [make_image(w / "a.png"), "--scale", "2",
                                            "-w", _non_checkpoint(w)], ["fake.pth"]),
    "weights missing name": (lambda w: [make_image(w / "a.png"), "--scale", "2",
                                        "-w", "no-such-weights"], ["no-such-weights"]),
}


@pytest.mark.parametrize("case", list(BAD_UPSCALES))
def test_bad_upscale_input_is_one_clean_error(work, tiny_weights, case):
    build, words = BAD_UPSCALES[case]
    args = build(work)
    if "-w" not in args:
        args += ["-w", tiny_weights]
    before = files_under(work)
    result = run("upscale", *args)
    assert_one_error_line(result, *words)
    assert files_under(work) == before  # no output and no temporary file left behind
    assert not (work / "missing_dir").exists()


def test_unwritable_output_folder(work, tiny_weights):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    src = make_image(work / "a.png", 12, 10)
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run("upscale", src, "--scale", "2", "-o", locked / "out.png", "-w", tiny_weights)
        assert_one_error_line(result, "permission")
        assert files_under(locked) == set()
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("command", ["resize", "upscale"])
def test_a_name_too_long_for_the_file_system_is_one_error(work, tiny_weights, command):
    """Path.exists() raises on ENAMETOOLONG (where os.path.exists says False): one line, not a
    traceback, whether the too-long name is the input or the output folder."""
    src = make_image(work / "a.png", 12, 10)
    size = ["--size", "8x8"] if command == "resize" else ["--scale", "2"]
    too_long = work / ("n" * 300)
    result = run(command, too_long.with_suffix(".png"), *size, "-o", work / "out",
                 "-w", tiny_weights)
    assert_one_error_line(result, code=2)
    result = run(command, src, src, *size, "-o", too_long, "-w", tiny_weights)
    assert_one_error_line(result, str(too_long)[:40], code=2)
    assert files_under(work) == {"a.png"}


@pytest.mark.parametrize("args", [
    ["info", "{long}.pth"],
    ["export", "{long}.pth", "out.pth"],
    ["train", "--data", "{long}", "--out", "{work}/run", "--steps", "1"],
    ["train", "--data", "{work}", "--out", "{long}", "--steps", "1"],
    ["bench", "--data-root", "{long}", "--sets", "Set5", "--scales", "2"],
])
def test_every_command_meets_an_unusable_path_with_one_line(work, args):
    """Whatever a command does with a path the file system refuses (ENAMETOOLONG), the user
    sees one error line and exit 2, not a traceback."""
    make_image(work / "a.png", 48, 48)
    long = work / ("n" * 300)
    result = run(*(a.format(long=long, work=work) for a in args))
    assert_one_error_line(result, code=2)
    assert files_under(work) == {"a.png"}


def test_markup_like_paths_are_printed_verbatim(work, tiny_weights):
    """A file name such as 'x[/draft].png' is a path, not rich markup: no crash, shown as is."""
    result = run("upscale", work / "x[/draft].png", "--scale", "2", "-w", tiny_weights)
    assert_one_error_line(result, "x[/draft].png")
    src = make_image(work / "shot[v2].png", 8, 6)
    result = run("upscale", src, "--scale", "2", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert "shot[v2]_x2.png" in result.output and size_of(work / "shot[v2]_x2.png") == (16, 12)


# ------------------------------------------------------------------------------------- resize


def make_tree(root: Path) -> None:
    make_image(root / "a.png", 20, 10)
    make_image(root / "b.jpg", 10, 20)
    make_image(root / "sub" / "c.png", 12, 12)
    make_image(root / "sub" / "deeper" / "d.webp", 16, 8)
    (root / "sub" / "readme.txt").write_text("not an image")


@pytest.mark.parametrize("recursive", [True, False])
def test_resize_folder_mirrors_structure(work, tiny_weights, recursive):
    src, out = work / "in", work / "out"
    make_tree(src)
    args = ["resize", src, "--size", "24x24", "-o", out, "-w", tiny_weights]
    result = run(*args, *(["--recursive"] if recursive else []))
    assert result.exit_code == 0, result.output
    expected = {"a.png": (24, 12), "b.jpg": (12, 24)}
    if recursive:
        expected.update({"sub/c.png": (24, 24), "sub/deeper/d.webp": (24, 12)})
    assert files_under(out) == set(expected)
    for name, size in expected.items():
        assert size_of(out / name) == size
    assert f"resized {len(expected)}," in result.output


@pytest.mark.parametrize(("fit", "box", "expected"), [
    ("contain", "30x30", (30, 15)),
    ("cover", "30x30", (30, 30)),
    ("stretch", "30x30", (30, 30)),
    ("contain", "50x10", (20, 10)),
    ("cover", "50x10", (50, 10)),
    ("stretch", "50x10", (50, 10)),
    ("cover", "15x15", (15, 15)),  # downscale, then crop
])
def test_resize_fit(work, tiny_weights, fit, box, expected):
    src = make_image(work / "wide.png", 40, 20)
    result = run("resize", src, "--size", box, "--fit", fit, "-o", work / "out", "-w",
                 tiny_weights)
    assert result.exit_code == 0, result.output
    assert size_of(work / "out" / "wide.png") == expected


def test_resize_contain_checks_the_output_not_the_box(work, tiny_weights):
    """A box with one huge side is how `resize` fits one dimension: with --fit contain the
    output (40x20 -> 48x24) is what --max-pixels limits, not the box; cover and stretch
    would fill the box, so they are refused before any work."""
    src = make_image(work / "in" / "wide.png", 40, 20)
    result = run("resize", src.parent, "--size", "48x10000000", "-o", work / "out", "-w",
                 tiny_weights)
    assert result.exit_code == 0, result.output
    assert size_of(work / "out" / "wide.png") == (48, 24)
    for fit in ("cover", "stretch"):
        assert_one_error_line(run("resize", src.parent, "--size", "48x10000000", "--fit", fit,
                                  "-o", work / fit, "-w", tiny_weights),
                              "--max-pixels", code=2)
        assert not (work / fit).exists()


def test_resize_cover_crops_the_centre(work, tiny_weights):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)  # red left quarter
    pixels[:, 10:30] = (0, 255, 0)  # green middle half
    pixels[:, 30:] = (0, 0, 255)  # blue right quarter
    Image.fromarray(pixels).save(work / "bands.png")
    result = run("resize", work / "bands.png", "--size", "10x10", "--fit", "cover",
                 "-o", work / "out", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    with Image.open(work / "out" / "bands.png") as image:
        out = np.asarray(image.convert("RGB")).astype(int)
    assert out.shape == (10, 10, 3)
    centre = out[:, 2:8]
    assert centre[..., 1].min() > 200 and centre[..., [0, 2]].max() < 60


def test_resize_downscale_uses_no_model(work, tiny_weights, monkeypatch):
    import liif_cli.api

    calls = []
    real_render = liif_cli.api.render_tiles

    def spy(*args, **kwargs):
        calls.append(args)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(liif_cli.api, "render_tiles", spy)
    src = make_image(work / "big.png", 40, 30)
    result = run("resize", src, "--size", "20x20", "-o", work / "down", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert size_of(work / "down" / "big.png") == (20, 15)
    assert calls == []
    result = run("resize", src, "--size", "80x80", "-o", work / "up", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert size_of(work / "up" / "big.png") == (80, 60)
    assert calls  # the spy does see the model when upscaling


@pytest.mark.parametrize(("fmt", "suffix", "pil_format"), [
    ("png", ".png", "PNG"), ("jpg", ".jpg", "JPEG"), ("webp", ".webp", "WEBP")])
def test_resize_format(work, tiny_weights, fmt, suffix, pil_format):
    src = work / "in"
    make_image(src / "a.bmp", 10, 10)
    make_image(src / "b.tif", 10, 10)
    result = run("resize", src, "--size", "16x16", "--format", fmt, "-o", work / "out",
                 "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert files_under(work / "out") == {f"a{suffix}", f"b{suffix}"}
    for name in ("a", "b"):
        with Image.open(work / "out" / f"{name}{suffix}") as image:
            assert image.format == pil_format and image.size == (16, 16)


def half_transparent_png(path: Path, colour=(200, 30, 30)) -> Path:
    """A 24x20 image: left half fully transparent (hidden green), right half opaque `colour`."""
    pixels = np.zeros((20, 24, 4), np.uint8)
    pixels[:, :12] = [0, 255, 0, 0]
    pixels[:, 12:] = [*colour, 255]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


@pytest.mark.parametrize("background,expected", [(None, (255, 255, 255)), ("black", (0, 0, 0)),
                                                 ("#102030", (16, 32, 48))])
def test_transparency_is_flattened_for_jpeg_with_a_note(work, tiny_weights, background,
                                                        expected):
    src = half_transparent_png(work / "in" / "logo.png")
    extra = () if background is None else ("--background", background)
    # Downscaled (Lanczos, not the random tiny model), so the colours can be checked.
    result = run("resize", src.parent, "--size", "12x10", "--format", "jpg", "-o", work / "out",
                 "-w", tiny_weights, *extra)
    assert result.exit_code == 0, result.output
    notes = [line for line in lines(result) if line.startswith("note:")]
    assert len(notes) == 1 and "transparency flattened onto" in notes[0], result.output
    with Image.open(work / "out" / "logo.jpg") as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert np.abs(pixels[:, :4] - expected).max() <= 12  # the background, not hidden green
    assert np.abs(pixels[:, -4:] - (200, 30, 30)).max() <= 12  # opaque pixels unchanged


def test_upscale_to_jpg_flattens_and_bad_background_is_a_usage_error(work, tiny_weights):
    src = half_transparent_png(work / "logo.png")
    result = run("upscale", src, "--scale", "2", "-o", work / "logo.jpg", "-w", tiny_weights,
                 "--background", "black")
    assert result.exit_code == 0, result.output
    assert "flattened onto black" in result.output
    with Image.open(work / "logo.jpg") as image:
        assert image.size == (48, 40) and image.mode == "RGB"
    for command in (("upscale", src, "--scale", "2"),
                    ("resize", src, "--size", "8x8", "-o", work / "o")):
        assert_one_error_line(run(*command, "--background", "not-a-colour", "-w", tiny_weights),
                              "colour", code=2)
    # PNG keeps its alpha: nothing is flattened, no note.
    kept = run("upscale", src, "--scale", "2", "-o", work / "kept.png", "-w", tiny_weights)
    assert kept.exit_code == 0 and "note" not in kept.output
    with Image.open(work / "kept.png") as image:
        assert image.mode == "RGBA"


def test_resize_skips_existing_unless_overwrite(work, tiny_weights):
    src, out = work / "in", work / "out"
    make_image(src / "a.png", 10, 10)
    make_image(src / "b.png", 10, 10)
    out.mkdir()
    (out / "a.png").write_bytes(b"from an earlier run")
    stamp = (out / "a.png").stat().st_mtime_ns
    result = run("resize", src, "--size", "20x20", "-o", out, "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert (out / "a.png").read_bytes() == b"from an earlier run"
    assert (out / "a.png").stat().st_mtime_ns == stamp
    assert size_of(out / "b.png") == (20, 20)
    assert "resized 1, skipped 1 existing, failed 0 (of 2 images)" in " ".join(
        result.output.split())

    b_bytes = (out / "b.png").read_bytes()
    result = run("resize", src, "--size", "20x20", "-o", out, "-w", tiny_weights, "--overwrite")
    assert result.exit_code == 0, result.output
    assert size_of(out / "a.png") == (20, 20) and (out / "b.png").read_bytes() == b_bytes
    assert "resized 2, skipped 0 existing" in " ".join(result.output.split())
    assert files_under(out) == {"a.png", "b.png"}


def test_resize_one_broken_file_among_good_ones(work, tiny_weights):
    src, out = work / "in", work / "out"
    make_image(src / "good1.png", 10, 10)
    make_image(src / "good2.jpg", 10, 10)
    (src / "broken.png").write_text("not a png")
    result = run("resize", src, "--size", "20x20", "-o", out, "-w", tiny_weights)
    assert result.exit_code == 1, result.output
    assert files_under(out) == {"good1.png", "good2.jpg"}
    text = " ".join(result.output.split())
    assert "broken.png" in text and "Traceback" not in text
    assert "resized 2, skipped 0 existing, failed 1 (of 3 images)" in text


def test_resize_all_good_exits_zero(work, tiny_weights):
    src = make_image(work / "a.png", 10, 10)
    result = run("resize", src, "--size", "12x12", "-o", work / "out", "-w", tiny_weights, "-q")
    assert result.exit_code == 0, result.output
    assert "failed 0 (of 1 images)" in " ".join(result.output.split())


BAD_RESIZES = {
    "malformed size": (lambda w: [w / "in", "--size", "12", "-o", w / "out"], ["size"]),
    "missing input": (lambda w: [w / "nowhere", "--size", "12x12", "-o", w / "out"],
                      ["nowhere"]),
    "output is a file": (lambda w: [w / "in", "--size", "12x12", "-o", w / "in" / "a.png"],
                         ["not a folder"]),
}


@pytest.mark.parametrize("case", list(BAD_RESIZES))
def test_resize_bad_usage_exits_2(work, tiny_weights, case):
    make_image(work / "in" / "a.png", 10, 10)
    build, words = BAD_RESIZES[case]
    before = files_under(work)
    result = run("resize", *build(work), "-w", tiny_weights)
    assert_one_error_line(result, *words, code=2)
    assert files_under(work) == before
    assert not (work / "out").exists()


# -------------------------------------------------------------------------- info and --version


def test_info_shows_spec_and_parameter_count(tiny_weights):
    from liif_cli import checkpoint

    model = checkpoint.load(tiny_weights).build()
    count = sum(p.numel() for p in model.parameters())
    result = run("info", tiny_weights)
    assert result.exit_code == 0, result.output
    text = result.stdout
    for expected in ("edsr-baseline", "n_feats 8", "n_resblocks 1", "hidden",
                     "parameters", f"{count:,}", "tiny"):
        assert expected in text, expected


def test_info_json_is_the_checkpoint_record(tiny_weights):
    import json

    from liif_cli import checkpoint

    result = run("info", tiny_weights, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    ckpt = checkpoint.load(tiny_weights)
    assert record["sha256"] == checkpoint.file_sha256(tiny_weights)
    assert record["spec"] == ckpt.spec.to_dict()
    assert record["parameters"] == sum(p.numel() for p in ckpt.build().parameters())
    assert record["file"] == str(tiny_weights) and record["for"] is None


def test_info_never_fails_on_odd_metadata(tiny_weights, work):
    import json

    import torch

    from liif_cli import checkpoint

    odd = {"training_time_s": float("nan"), "lr": float("inf"), "note": "[/bold] not markup",
           "[red]key": 1, "pairs": {(1, 2): "tuple key"}, "val_psnr": {"x4": "n/a"},
           "history": [{"weights": "a.pth", "lr": "fast", "training_time_s": None},
                       {"steps": 5, "training_time_s": "2h"}, {}]}
    path = work / "odd.pth"
    torch.save(checkpoint.to_dict(checkpoint.load(tiny_weights).build(), odd), path)
    result = run("info", path)
    assert result.exit_code == 0, result.output
    for shown in ("[/bold] not markup", "[red]key", "a.pth: ? steps", "lr fast", "?: 5 steps"):
        assert shown in result.stdout, shown
    as_json = run("info", path, "--json")
    assert as_json.exit_code == 0, as_json.output
    meta = json.loads(as_json.stdout)["metadata"]  # strict JSON: no NaN, string keys
    assert meta["training_time_s"] is None and meta["lr"] is None
    assert meta["pairs"] == {"(1, 2)": "tuple key"}


def test_info_shows_training_records_readably():
    import json

    result = run("info", "real")
    assert result.exit_code == 0, result.output
    meta = json.loads(run("info", "real", "--json").stdout)["metadata"]
    # The table's value column as one text (long values wrap over several rows).
    text = " ".join(line.split("│")[2].strip() for line in result.stdout.splitlines()
                    if line.count("│") >= 3)
    # PSNR to two decimals, ranges as LO-HI, big numbers with separators, no Python reprs.
    x4 = meta["val_psnr"]["x4"]
    assert f"x4 {x4:.2f}" in text
    low, high = meta["degradation"]["jpeg_quality"]
    assert f"jpeg_quality {low}-{high}" in text
    assert f"{meta['steps_all_phases']:,}" in text
    assert "{'" not in text and "[{" not in text
    listed = " ".join(result.stdout.split("bundled models")[1].split())
    assert ("auto (upscale and resize without --weights): real for JPEGs of quality up to 94 "
            "and lossy WebP, default for the rest") in listed
    # One numbered line per earlier phase, each naming its weights and steps.
    for i, phase in enumerate(meta["history"], 1):
        assert f"{i}. {phase['weights']}: {phase['steps']:,} steps" in text


def test_info_on_a_non_checkpoint_is_one_clean_error(work):
    result = run("info", _non_checkpoint(work))
    assert_one_error_line(result, "fake.pth")


def test_export_drops_training_state_and_keeps_weights(tiny_weights, work):
    import torch

    from liif_cli import checkpoint

    source = checkpoint.load(tiny_weights)
    run_ckpt = work / "last.pth"  # a training checkpoint: weights plus a bulky train_state
    torch.save({**torch.load(tiny_weights, weights_only=True),
                "train_state": {"optimizer": torch.zeros(50_000)}}, run_ckpt)
    target = work / "slim.pth"
    result = run("export", run_ckpt, target)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "wrote" in result.stderr  # status on stderr, like upscale
    slim = checkpoint.load(target)
    assert "train_state" not in slim.extra and slim.metadata == source.metadata
    assert slim.state_dict.keys() == source.state_dict.keys()
    assert all(torch.equal(slim.state_dict[k], v) for k, v in source.state_dict.items())
    assert target.stat().st_size < run_ckpt.stat().st_size - 150_000
    assert target.stat().st_mode & 0o044 == 0o044  # readable by others: meant to be shared

    before = target.read_bytes()
    assert_one_error_line(run("export", run_ckpt, target), "already exists")
    assert target.read_bytes() == before
    assert run("export", run_ckpt, target, "--overwrite").exit_code == 0
    assert_one_error_line(run("export", target, target, "--overwrite"), "overwrite its source")
    assert_one_error_line(run("export", _non_checkpoint(work), work / "x.pth"), "fake.pth")
    assert not (work / "x.pth").exists()


def test_help_shows_every_default_text():
    # Rich eats "[...]" in help strings as markup; defaults must come through show_default.
    wide = {"COLUMNS": "200"}
    text = CliRunner().invoke(app, ["upscale", "--help"], env=wide).output
    flat = " ".join(text.replace("│", " ").split())  # help text wrapped in a box
    assert "default (for clean images), real (for JPEG photos)" in flat
    assert "Without it: auto." in flat and "JPEGs of quality up to 94" in flat
    text = CliRunner().invoke(app, ["bench", "--help"], env=wide).output
    for expected in ("$LIIF_DATA", "2,3,4,6,8,12", "512x512", "0.25 on CPU"):
        assert expected in text, expected


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"liif {__version__}"


def test_every_package_is_installed():
    """A non-editable install ships only the packages pyproject.toml lists."""
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(init.parent.relative_to(root).parts)
             for init in (root / "liif_cli").rglob("__init__.py")}
    assert found == listed


def test_python_dash_m_help():
    proc = subprocess.run([sys.executable, "-m", "liif_cli", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("upscale", "resize", "info"):
        assert command in proc.stdout


@pytest.mark.parametrize("args", [
    ["--help"], ["upscale", "--help"], ["resize", "--help"], ["train", "--help"],
    ["bench", "--help"], ["upscale", "in.png"], ["upscale", "in.png", "--size", "4000by3000"],
    ["resize", "in", "--size", "wide", "-o", "out"], ["upscale", "--bogus"],
])
def test_help_and_usage_errors_do_not_import_torch(args, cli_in_fresh_process):
    """`liif --help` and usage errors answer without importing torch (seconds of start-up)."""
    exit_code, imported = cli_in_fresh_process(args)
    assert not imported, args
    assert (exit_code == 0) == (args[-1] == "--help"), (args, exit_code)


# ----------------------------------------------------------------------------- hardening


def test_absurd_scale_is_one_clean_error(work, tiny_weights):
    src = make_image(work / "small.png", 64, 48)
    before = files_under(work)
    assert_one_error_line(run("upscale", src, "--scale", "1e308", "-w", tiny_weights),
                          "too large", code=2)  # was an OverflowError traceback
    # Fine for a 1x1 image, too large for this one: refused when the image is read.
    assert_one_error_line(run("upscale", src, "--scale", "1e8", "--max-pixels", "0",
                              "-w", tiny_weights), "small.png", "too large", code=1)
    assert_one_error_line(run("upscale", src, "--size", "99999999999x5", "-w", tiny_weights),
                          "too large", code=2)
    assert files_under(work) == before


@pytest.mark.parametrize("args", [["--size", "12"], ["--scale", "0"], ["--width", "0"],
                                  ["--scale", "2", "--height", "3"], ["--tile", "1", "-s", "2"]])
def test_upscale_usage_errors_exit_2(work, tiny_weights, args):
    src = make_image(work / "a.png", 8, 6)
    assert_one_error_line(run("upscale", src, *args, "-w", tiny_weights), code=2)


def test_upscale_output_weights_and_device_problems_exit_2(work, tiny_weights):
    """Bad -o, --weights, --device or --precision are usage errors: exit 2, nothing written."""
    src = make_image(work / "a.png", 8, 6)
    other = make_image(work / "b.png", 8, 6)
    before = files_under(work)
    cases = [(["-o", work / "out.xyz"], ["out.xyz", "unsupported output format"]),
             (["-o", work / "noext"], ["no file extension"]),
             (["-w", work / "nowhere.pth"], ["nowhere.pth"]),
             (["--precision", "fp16", "--device", "cpu"], ["fp16"])]
    if not torch_cuda_available():
        cases.append((["--device", "cuda"], ["cuda"]))
    for args, words in cases:
        weights = [] if "-w" in args else ["-w", tiny_weights]
        assert_one_error_line(run("upscale", src, "-s", "2", *args, *weights), *words, code=2)
    assert_one_error_line(run("upscale", src, other, "-s", "2", "-o", other, "-w",
                              tiny_weights), "not a folder", code=2)
    assert files_under(work) == before


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_upscale_output_errors_do_not_import_torch(work, cli_in_fresh_process):
    src, other = make_image(work / "a.png", 8, 6), make_image(work / "b.png", 8, 6)
    for args in ([src, "-s", "2", "-o", work / "out.xyz"], [src, other, "-s", "2", "-o", other],
                 [src, "-s", "2", "-w", work / "nowhere.pth"]):
        assert cli_in_fresh_process(["upscale", *args]) == (2, False), args
    resize = ["resize", work, "--size", "16x12", "-o", work / "out", "-w", "sharp"]
    assert cli_in_fresh_process(resize) == (2, False)
    assert not (work / "out").exists()


def test_train_usage_errors_exit_2_without_torch(work, cli_in_fresh_process):
    """Bad training options, missing data and unknown --init weights: exit 2, before torch is
    imported, and no run folder is made."""
    run_dir = work / "run"
    for args in (["--lr-schedule", "linear"], ["--amp", "fp8"], ["--batch-size", "0"],
                 ["--degradation", "real:jpeg_quality=0-50"], ["--degradation", "bsrgan"],
                 ["--val-degrade", "jpeg:500"], ["--ema", "1.5"], ["--init", "sharp"],
                 ["--val", work / "nowhere"]):
        command = ["train", "--out", run_dir, "--data", work, *args]
        assert cli_in_fresh_process(command) == (2, False), args
    assert cli_in_fresh_process(["train", "--out", run_dir, "--data", work / "nowhere"]) \
        == (2, False)
    assert not run_dir.exists()


def test_unknown_weights_for_info_and_export_exit_2_without_torch(work, cli_in_fresh_process):
    assert cli_in_fresh_process(["info", "sharp"]) == (2, False)
    assert cli_in_fresh_process(["export", work / "nowhere.pth", work / "x.pth"]) == (2, False)
    assert_one_error_line(run("info", "sharp"), "weights not found", "sharp", code=2)
    assert not (work / "x.pth").exists()


def test_an_empty_weights_name_is_an_error_not_the_default(work):
    """`--weights "$W"` with W unset must not quietly pick the default model."""
    Image.new("RGB", (4, 4)).save(work / "a.png")
    for args in (("info", ""), ("export", "", work / "x.pth"),
                 ("upscale", work / "a.png", "--scale", "2", "--weights", ""),
                 ("bench", "--speed", "--weights", " ")):
        assert_one_error_line(run(*args), "empty weights name", code=2)
    assert not (work / "x.pth").exists()


def test_training_times_round_half_up_to_the_minute():
    from liif_cli.info import readable

    assert readable("training_time_s", 150.0) == "150 s (0 h 03 min)"
    assert readable("training_time_s", 3570.0) == "3,570 s (1 h 00 min)"


def test_train_usage_error_is_one_line(work):
    result = run("train", "--out", work / "run", "--data", work, "--lr-schedule", "linear")
    assert_one_error_line(result, "lr schedule", "linear", code=2)


def test_default_output_takes_a_writable_suffix_from_the_file(work, tiny_weights):
    """A .jfif JPEG gives a .jpg, an extension-less PNG a .png (not an unwritable name)."""
    jfif = make_image(work / "photo.jfif", 8, 6, format="JPEG")
    bare = make_image(work / "scan", 8, 6, format="PNG")
    for src, expected in ((jfif, "photo_x2.jpg"), (bare, "scan_x2.png")):
        result = run("upscale", src, "-s", "2", "-w", tiny_weights, "-q")
        assert result.exit_code == 0, result.output
        with Image.open(work / expected) as out:
            assert out.size == (16, 12)


def test_resize_fails_for_a_folder_where_an_output_belongs(work, tiny_weights):
    src = make_image(work / "in" / "a.png", 8, 6)
    (work / "out" / "a.png").mkdir(parents=True)
    result = run("resize", src, "--size", "16x12", "-o", work / "out", "-w", tiny_weights, "-q")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "is a folder" in text and "failed 1" in text


def test_chunk_help_names_the_engines_defaults():
    from liif_cli import engine

    text = " ".join(run("upscale", "--help").output.split())
    for chunk in (*engine.CPU_CHUNKS.values(), engine.CUDA_CHUNK):
        assert str(chunk) in text


def test_tiny_tiles_are_refused(work, tiny_weights):
    """--tile 1 on a 64x48 image once ran for 14 minutes: each tile re-encodes its halo."""
    src = make_image(work / "a.png", 64, 48)
    for command in (["upscale", src, "-s", "2"], ["resize", src, "--size", "90x90", "-o",
                                                   work / "out"]):
        assert_one_error_line(run(*command, "--tile", "1", "-w", tiny_weights),
                              "--tile 1", "at least 32", code=2)
    assert run("upscale", src, "-s", "1.5", "--tile", "32", "-w", tiny_weights).exit_code == 0


def test_upscale_of_a_folder_points_to_resize(work, tiny_weights):
    make_image(work / "pics" / "a.png")
    result = run("upscale", work / "pics", "-s", "2", "-w", tiny_weights)
    assert_one_error_line(result, "is a folder", "liif resize", code=2)


def test_upscale_help_says_exactly_one_size_option():
    text = " ".join(CliRunner().invoke(app, ["upscale", "--help"],
                                       env={"COLUMNS": "200"}).output.split())
    assert "exactly one of --scale, --size, --width or --height" in text


def test_huge_input_is_refused_from_its_header(work, tiny_weights):
    """A 9500x9500 PNG decodes to 1.9 GB: sizes are checked before any pixel is decoded (this
    file has no pixel data at all, so decoding would call it damaged)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    src = work / "huge.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", 9500, 9500, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    assert_one_error_line(run("upscale", src, "-s", "2", "-w", tiny_weights),
                          "19000x19000", "--max-pixels")  # the output, at the default limit
    assert_one_error_line(run("upscale", src, "--width", "10", "--max-pixels", "1000000",
                              "-w", tiny_weights), "input 9500x9500", "--max-pixels")


BAD_SPECS = {
    "negative hidden width": lambda spec: spec.update(hidden=[-1]),
    "negative n_feats": lambda spec: spec["encoder_args"].update(n_feats=-5),
    "absurd hidden widths": lambda spec: spec.update(hidden=[10**7, 10**7]),
    "hidden not a list": lambda spec: spec.update(hidden=256),
    "unfold not a bool": lambda spec: spec.update(feat_unfold="yes"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_checkpoint_with_a_bad_spec_is_refused_before_building(work, case, monkeypatch):
    import torch

    from liif_cli import bundled, checkpoint

    raw = torch.load(bundled.resolve_weights(None), weights_only=True)
    BAD_SPECS[case](raw["spec"])
    bad = work / "bad.pth"
    torch.save(raw, bad)
    monkeypatch.setattr(checkpoint, "build_model", lambda spec: pytest.fail("built it"))
    assert_one_error_line(run("info", bad), "bad.pth", "bad model spec")
    src = make_image(work / "a.png", 8, 6)
    assert_one_error_line(run("upscale", src, "-s", "2", "-w", bad), "bad model spec")


def test_checkpoint_with_nan_weights_is_refused(work, tiny_weights):
    import torch

    raw = torch.load(tiny_weights, weights_only=True)
    raw["state_dict"]["imnet.layers.0.weight"][0, 0] = float("nan")
    torch.save(raw, work / "nan.pth")
    src = make_image(work / "a.png", 8, 6)
    assert_one_error_line(run("upscale", src, "-s", "2", "-w", work / "nan.pth"),
                          "nan.pth", "NaN")
    assert not (work / "a_x2.png").exists()


def test_out_of_memory_is_one_line_naming_the_output(work, tiny_weights, monkeypatch):
    from liif_cli import api

    def exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate "
                           "900000000000 bytes.")

    monkeypatch.setattr(api, "render_tiles", exhausted)
    src = make_image(work / "a.png", 8, 6)
    line = assert_one_error_line(run("upscale", src, "--size", "4000x3000", "-w", tiny_weights),
                                 "out of memory", "4000x3000", "--tile", "--chunk",
                                 "--max-pixels", code=1)
    assert f"a.png: out of memory rendering {work / 'a_4000x3000.png'} at 4000x3000" in line
    folder = work / "out"
    result = run("resize", src, "--size", "4000x3000", "-o", folder, "-w", tiny_weights)
    assert result.exit_code == 1
    expected = f"a.png: out of memory rendering {folder / 'a.png'} at 4000x3000"
    assert "".join(expected.split()) in "".join(result.output.split())  # wrapped lines
    # Frames of an animation (and of a video) name their output too.
    frames = [Image.new("RGB", (8, 6), colour) for colour in ("red", "blue")]
    frames[0].save(work / "b.gif", save_all=True, append_images=frames[1:], duration=100)
    line = assert_one_error_line(run("upscale", work / "b.gif", "--size", "4000x3000", "-w",
                                     tiny_weights), "out of memory", code=1)
    assert f"out of memory rendering {work / 'b_4000x3000.gif'} at 4000x3000" in line


def float_path_pixels(weights: Path, src: Path, size: tuple[int, int], target: Path,
                      crop: tuple[int, int] | None = None) -> np.ndarray:
    """What `liif upscale src` wrote at `target` (for --precision fp32 --tile 32) when it
    rendered into float: the float Picture of Upscaler.resample (the float32 reference),
    quantised by hand in the layout the output's format stores, then centre-cropped."""
    from liif_cli.api import Upscaler
    from liif_cli.images import output_layout
    from liif_cli.sizing import centre_crop_box

    picture = read_image(src)
    layout = output_layout(picture, target)
    out = Upscaler.from_pretrained(weights, device="cpu", precision="fp32",
                                   tile=32).resample(picture, size)
    planes = [out.rgb.mean(axis=2, keepdims=True) if layout.gray else out.rgb]
    if layout.alpha:
        planes.append(out.alpha[..., None])
    top = 65535 if layout.depth == 16 else 255
    values = np.rint(np.clip(np.concatenate(planes, axis=2), 0, 1) * np.float32(top))
    if crop is not None:
        first, left, bottom, right = centre_crop_box(size, crop)
        values = values[first:bottom, left:right]
    return values.astype(np.uint16 if layout.depth == 16 else np.uint8)


def decoded(path: Path, channels: int, depth: int) -> np.ndarray:
    """An output file's samples, (H, W, channels), exactly (16-bit too)."""
    if depth == 8:
        with Image.open(path) as image:
            pixels = np.asarray(image)
        return pixels[..., None] if pixels.ndim == 2 else pixels
    picture = read_image(path)
    planes = [picture.rgb[..., :1] if channels <= 2 else picture.rgb]
    if channels in (2, 4):
        planes.append(picture.alpha[..., None])
    return np.rint(np.concatenate(planes, axis=2) * 65535).astype(np.uint16)


def deep_image(path: Path, channels: int, width: int, height: int) -> Path:
    """A 16-bit image (PNG or TIFF by suffix) of random samples, alpha included."""
    pixels = RNG.integers(0, 65536, (height, width, channels)).astype(np.uint16)
    if channels in (2, 4):
        pixels[: height // 3, :, -1] = 0
        pixels[height // 3: height // 2, :, -1] = 65535
    write_image(Picture.from_array(pixels), path)
    return path


@pytest.mark.parametrize(("source", "suffix", "options"), [
    ("RGB", ".png", ()), ("RGBA", ".png", ()), ("L", ".png", ()), ("LA", ".png", ()),
    ("RGB", ".bmp", ()), ("RGB", ".tif", ()), ("RGBA", ".tif", ()),
    ("RGB", ".png", ("--size", "90x60", "--fit", "cover")),
    ("deep RGB", ".png", ()), ("deep RGBA", ".png", ()), ("deep LA", ".tif", ()),
    ("deep L", ".png", ()),
])
def test_outputs_hold_the_values_the_float_path_wrote(work, tiny_weights, source, suffix,
                                                      options):
    """Rendered tile by tile into the file's depth: every pixel as quantising the float32
    render of the whole image gives, in 8 and 16 bits, with alpha and gray, over several
    tiles (--tile 32 on a 70 x 45 input, a non-square x2.3)."""
    width, height = 70, 45
    if source.startswith("deep"):
        channels = {"deep RGB": 3, "deep RGBA": 4, "deep LA": 2, "deep L": 1}[source]
        src = deep_image(work / f"in{'.tif' if suffix == '.tif' else '.png'}", channels,
                         width, height)
    elif source == "LA":
        src = work / "in.png"
        pixels = RNG.integers(0, 256, (height, width, 2)).astype(np.uint8)
        Image.fromarray(pixels, "LA").save(src)
    else:
        src = make_image(work / "in.png", width, height, source)
    target = work / "out" / f"x{suffix}"
    target.parent.mkdir()
    result = run("upscale", src, *(options or ("--scale", "2.3")), "-o", target,
                 "-w", tiny_weights, "--precision", "fp32", "--tile", "32", "-q")
    assert result.exit_code == 0, result.output
    if options:
        size, crop = fit_size((height, width), (60, 90), "cover"), (60, 90)
    else:
        size, crop = target_size((height, width), scale=2.3), None
    assert size_of(target) == ((crop or size)[1], (crop or size)[0])
    expected = float_path_pixels(tiny_weights, src, size, target, crop)
    depth = 16 if expected.dtype == np.uint16 else 8
    np.testing.assert_array_equal(decoded(target, expected.shape[2], depth), expected)


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_lossy_outputs_are_the_float_paths_files(work, tiny_weights, suffix):
    """JPEG and WebP are lossy: the file decodes to what encoding the float path's pixels
    decodes to (8-bit and 16-bit sources; one whose alpha is opaque, which JPEG drops and
    WebP keeps; one with transparency for WebP)."""
    sources = [make_image(work / "rgb.png", 70, 45), deep_image(work / "deep.png", 3, 70, 45),
               make_image(work / "opaque.png", 70, 45, "RGBA")]
    with Image.open(sources[2]) as image:  # every pixel opaque: JPEG can hold it
        image.putalpha(255)
        image.save(sources[2])
    if suffix == ".webp":
        sources.append(deep_image(work / "clear.png", 4, 70, 45))
    for src in sources:
        target = work / f"{src.stem}{suffix}"
        result = run("upscale", src, "--scale", "2.3", "-o", target, "-w", tiny_weights,
                     "--precision", "fp32", "--tile", "32", "-q")
        assert result.exit_code == 0, result.output
        expected = float_path_pixels(tiny_weights, src, target_size((45, 70), scale=2.3),
                                     target)
        reference = work / f"{src.stem}-reference{suffix}"
        Image.fromarray(expected).save(reference, quality=95, subsampling=0)
        with Image.open(target) as got, Image.open(reference) as want:
            assert np.array_equal(np.asarray(got), np.asarray(want))


def test_out_of_memory_while_writing_is_one_line(work, tiny_weights, monkeypatch):
    from liif_cli import batch

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.34 GiB for an array")

    monkeypatch.setattr(batch, "write_image", exhausted)
    src = make_image(work / "a.png", 8, 6)
    assert_one_error_line(run("upscale", src, "-s", "2", "-w", tiny_weights),
                          "a.png", "out of memory", "--max-pixels", code=1)


@pytest.mark.parametrize("output", ["newdir/", "deeper/newdir/"])
def test_upscale_output_ending_in_slash_is_a_new_folder(work, tiny_weights, output):
    src = make_image(work / "a.png", 8, 6)
    result = run("upscale", src, "-s", "2", "-o", f"{work}/{output}", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert size_of(work / output / "a_x2.png") == (16, 12)


def test_upscale_several_inputs_create_the_output_folder(work, tiny_weights):
    a, b = make_image(work / "a.png", 8, 6), make_image(work / "b.jpg", 8, 6)
    result = run("upscale", a, b, "-s", "2", "-o", work / "made", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert files_under(work / "made") == {"a_x2.png", "b_x2.jpg"}


def test_unwritable_output_folder_is_one_error_up_front(work, tiny_weights, monkeypatch):
    from liif_cli import batch

    src = work / "in"
    for name in ("a.png", "b.png", "c.png"):
        make_image(src / name, 8, 6)
    locked = work / "locked"
    locked.mkdir()
    real_writable = batch.writable
    monkeypatch.setattr(batch, "writable",  # root may write anywhere: pretend it may not
                        lambda folder: folder != locked and real_writable(folder))
    result = run("resize", src, "--size", "16x16", "-o", locked, "-w", tiny_weights)
    assert_one_error_line(result, "no permission", "locked", code=2)
    result = run("upscale", src / "a.png", src / "b.png", "-s", "2", "-o", locked,
                 "-w", tiny_weights)
    assert_one_error_line(result, "no permission", "locked")
    assert files_under(locked) == set()


def test_resize_rerun_never_takes_inputs_from_its_output_folder(work, tiny_weights):
    make_image(work / "a.png", 8, 6)
    make_image(work / "sub" / "b.png", 8, 6)
    (work / "notes.txt").write_text("not an image")
    args = ["resize", work, "-r", "--size", "16x16", "-o", work / "out", "-w", tiny_weights]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert files_under(work / "out") == {"a.png", "sub/b.png"}
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert files_under(work / "out") == {"a.png", "sub/b.png"}  # no out/out/...
    text = " ".join(again.output.split())
    assert "resized 0, skipped 2 existing, failed 0 (of 2 images)" in text
    assert "ignored 2 files inside the output folder, 1 file with no image suffix" in text


def test_resize_into_a_folder_that_holds_the_inputs_takes_them(work, tiny_weights,
                                                               monkeypatch):
    """`resize photos -o .`: the outputs land beside photos/, never in it, so nothing in
    photos/ is an output of an earlier run."""
    make_image(work / "photos" / "a.png", 8, 6)
    monkeypatch.chdir(work)
    result = run("resize", "photos", "--size", "16x16", "-o", ".", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert (work / "a.png").is_file()
    assert "resized 1" in " ".join(result.output.split())


def test_a_pipe_as_input_is_refused_not_waited_on(work, tiny_weights):
    """Reading a FIFO with no writer blocks for ever: upscale and resize refuse it."""
    fifo = work / "pipe.png"
    os.mkfifo(fifo)
    for args in (("upscale", fifo, "-s", "2"), ("resize", fifo, "--size", "8x8", "-o",
                                                 work / "out")):
        assert_one_error_line(run(*args, "-w", tiny_weights), "not a regular file", code=2)
    with pytest.raises(LiifError, match="not a regular file"):
        read_image(fifo)


def test_a_link_loop_as_input_or_output_is_one_line(work, tiny_weights):
    (work / "loop_a.png").symlink_to(work / "loop_b.png")
    (work / "loop_b.png").symlink_to(work / "loop_a.png")
    src = make_image(work / "one.png", 8, 6)
    assert_one_error_line(run("upscale", work / "loop_a.png", "-s", "2", "-w", tiny_weights),
                          "loop_a.png")
    result = run("upscale", src, "-s", "2", "-o", work / "loop_a.png", "-w", tiny_weights)
    assert_one_error_line(result, "loop_a.png")
    assert (work / "loop_a.png").is_symlink()  # not replaced without --overwrite
    result = run("upscale", src, "-s", "2", "-o", work / "loop_a.png", "--overwrite",
                 "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert not (work / "loop_a.png").is_symlink() and (work / "loop_a.png").is_file()
    result = run("resize", src, "--size", "16x16", "-o", work / "out", "-w", tiny_weights)
    assert result.exit_code == 0, result.output


def test_resize_with_nothing_to_do_exits_1(work, tiny_weights):
    (work / "empty").mkdir()
    (work / "empty" / "readme.txt").write_text("hi")
    result = run("resize", work / "empty", "--size", "16x16", "-o", work / "out",
                 "-w", tiny_weights)
    assert_one_error_line(result, "nothing to do", "1 file with no image suffix", code=1)
    assert not (work / "out").exists()


def test_resize_without_r_counts_the_sub_folders_it_did_not_enter(work, tiny_weights):
    make_image(work / "in" / "a.png", 8, 6)
    make_image(work / "in" / "2023" / "b.png", 8, 6)
    make_image(work / "in" / "2024" / "c.png", 8, 6)
    (work / "in" / ".thumbnails").mkdir()  # hidden: counted apart
    out = work / "in" / "small"  # the output folder inside the input: not counted
    result = run("resize", work / "in", "--size", "16x16", "-o", out, "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert ("ignored 1 hidden folder, not entered, 2 sub-folders, not entered without -r"
            in " ".join(result.output.split()))
    assert files_under(out) == {"a.png"}
    again = run("resize", work / "in", "--size", "16x16", "-o", out, "-w", tiny_weights, "-r")
    assert again.exit_code == 0 and "sub-folder" not in again.output, again.output
    only = work / "only_folders"
    make_image(only / "x" / "d.png", 8, 6)
    nothing = run("resize", only, "--size", "16x16", "-o", work / "o2", "-w", tiny_weights)
    assert_one_error_line(nothing, "nothing to do", "1 sub-folder, not entered without -r",
                          code=1)


def test_info_on_bundled_weights_shows_no_absolute_paths():
    from liif_cli import bundled

    result = run("info")
    assert result.exit_code == 0, result.output
    assert str(bundled.WEIGHTS_DIR) not in result.stdout
    for line in result.stdout.splitlines():
        cells = [cell.strip(" '[]") for cell in line.split("│")]
        assert not any(cell.startswith("/") for cell in cells), line
    keys = [line.split("│")[1].strip() for line in result.stdout.splitlines()
            if line.count("│") >= 2]
    assert keys.count("encoder") == 1
    # It says what the model is for, and what every bundled model is for.
    assert "for" in keys and "--weights default" in result.stdout
    assert "bundled models (--weights NAME):" in result.stdout
    assert "  default: clean images" in result.stdout


def test_info_names_bundled_weights_however_the_path_is_spelt(monkeypatch):
    from liif_cli import bundled

    default = bundled.available_weights()[bundled.DEFAULT]
    monkeypatch.chdir(default.parent.parent)
    for spelling in (default, Path(default.parent.name) / default.name):
        result = run("info", spelling, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["file"] == f"bundled weights {bundled.DEFAULT!r}"


def test_pillow_warnings_never_reach_the_user(work, tiny_weights):
    import struct

    src = work / "bad_exif.jpg"
    bad = (b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1)
           + struct.pack("<HHII", 0x010F, 2, 1000, 5000) + b"\x00" * 4)  # data past the end
    Image.new("RGB", (8, 8), "red").save(src, exif=bad)
    proc = subprocess.run([sys.executable, "-m", "liif_cli", "upscale", str(src), "-s", "2",
                           "-w", str(tiny_weights)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "always", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"wrote {work / 'bad_exif_x2.jpg'}"]  # and no "UserWarning: Corrupt EXIF ..."


def test_quick_renders_print_no_progress_lines(work, tiny_weights):
    src = make_image(work / "a.png", 30, 20)
    result = run("upscale", src, "--scale", "10", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert lines(result) == [f"wrote {work / 'a_x10.png'}"]


def test_plain_progress_says_how_much_is_done_and_time_left(capsys):
    from liif_cli.cli import PlainProgress

    lines_of = PlainProgress("big.png", every_s=0.0, first_s=0.0)
    for done in (0, 5_000_000, 10_000_000, 20_000_000):
        lines_of(done, 20_000_000)
    said = capsys.readouterr().err.splitlines()
    assert said[0].startswith("big.png: 0% of 20.00 MP, about")
    assert said[1].startswith("big.png: 25% of 20.00 MP, about") and said[1].endswith("left")
    assert len(said) == 3  # nothing once done
    quiet = PlainProgress("small.png", first_s=60.0)  # finishes before its first line is due
    quiet(0, 100)
    quiet(100, 100)
    assert capsys.readouterr().err == ""


def test_resize_logs_one_line_per_file_when_not_a_terminal(work, tiny_weights):
    make_image(work / "in" / "a.png", 8, 6)
    make_image(work / "in" / "b.png", 8, 6)
    result = run("resize", work / "in", "--size", "16x16", "-o", work / "out", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert "resize: 1/2 a.png" in lines(result) and "resize: 2/2 b.png" in lines(result)
    quiet = run("resize", work / "in", "--size", "16x16", "-o", work / "out2", "-w",
                tiny_weights, "-q")
    assert quiet.exit_code == 0 and "1/2" not in quiet.output


@pytest.mark.parametrize("command", ["upscale", "resize", "bench", "train"])
def test_help_shows_flags_without_a_bool_type_and_names_the_inputs(command):
    result = RUNNER.invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    flags = [line for line in result.output.splitlines() if "--help" not in line]
    assert not any("<bool>" in line for line in flags)
    assert "{inputs}" not in result.output
    if command in ("upscale", "resize"):
        # Typer versions differ in braces and dots: {IMAGE}..., IMAGE... or {IMAGE}
        assert re.search(r"\b\{?(IMAGE|FOLDER_OR_IMAGE)\}?(\.\.\.)?", result.output)


def test_rendering_commands_keep_freed_memory(work, tiny_weights, monkeypatch):
    """upscale and resize ask glibc to keep freed memory (no page faults per chunk)."""
    from liif_cli import runtime

    calls = []
    monkeypatch.setattr(runtime, "retain_freed_memory", lambda: calls.append(1) or True)
    src = make_image(work / "in.png", 12, 10)
    assert run("upscale", src, "-s", "2", "-w", tiny_weights, "-q").exit_code == 0
    assert run("resize", src, "--size", "20x20", "-o", work / "out", "-w", tiny_weights,
               "-q").exit_code == 0
    assert len(calls) == 2


def test_speed_bench_keeps_freed_memory_as_upscale_does(work, tiny_weights, monkeypatch):
    """bench --speed times the engine as upscale runs it, and its protocol says so."""
    from liif_cli import runtime

    calls = []
    monkeypatch.setattr(runtime, "retain_freed_memory", lambda: calls.append(1) or True)
    out = work / "speed.json"
    result = run("bench", "--speed", "-w", tiny_weights, "--size", "16x12", "--scales", "2",
                 "--repeats", "1", "--no-reference", "--device", "cpu", "--json", out)
    assert result.exit_code == 0, result.output
    assert calls == [1]
    assert "freed memory kept in the process" in json.loads(out.read_text())["protocol"]


# ------------------------------------------------------------------- --weights auto


def test_auto_weights_pick_the_real_model_for_lossy_files(work, tiny_bundle):
    """Without --weights, JPEGs up to quality 94 and lossy WebP files get the real-photo
    model and the rest the default: the same pixels as naming that model, and the report
    says which and why."""
    sources = {"photo.jpg": ("real", "JPEG, quality 75"), "web.webp": ("real", "lossy WebP"),
               "clean.png": ("default", "PNG"), "fine.jpg": ("default", "JPEG, quality 95"),
               "q94.jpg": ("real", "JPEG, quality 94"),  # the last quality `real` gets
               "lossless.webp": ("default", "lossless WebP")}
    options = {"lossless.webp": {"lossless": True}, "fine.jpg": {"quality": 95},
               "q94.jpg": {"quality": 94}}
    for name in sources:
        make_image(work / "in" / name, 12, 9, **options.get(name, {}))
    for folder in ("auto", "default", "real"):
        (work / folder).mkdir()
    for name, (model, source) in sources.items():
        src = work / "in" / name
        result = run("upscale", src, "-s", "2", "-o", work / "auto" / name)
        assert result.exit_code == 0, result.output
        assert f"(model: {model}, for its source: {source})" in " ".join(result.output.split())
        for named in ("default", "real"):
            result = run("upscale", src, "-s", "2", "-o", work / named / name, "-w", named)
            assert result.exit_code == 0 and "model:" not in result.output, result.output
        auto = np.asarray(Image.open(work / "auto" / name))
        assert np.array_equal(auto, np.asarray(Image.open(work / model / name)))
        other = "default" if model == "real" else "real"
        assert not np.array_equal(auto, np.asarray(Image.open(work / other / name)))
    result = run("resize", work / "in", "--size", "24x24", "-o", work / "resized")
    assert result.exit_code == 0, result.output
    assert "models: default 3, real 3" in " ".join(result.output.split())


def test_a_lossless_webp_stays_lossless(work, tiny_weights):
    """Lossless in, lossless out: a lossless WebP's upscale (a .webp by default) is a
    lossless WebP, so that a second run does not take it for a compressed photo; a lossy
    WebP's stays lossy."""
    from liif_cli.images import webp_is_lossy

    for name, lossless in (("clean.webp", True), ("web.webp", False)):
        src = make_image(work / name, 12, 9, lossless=lossless)
        result = run("upscale", src, "-s", "2", "-w", tiny_weights)
        assert result.exit_code == 0, result.output
        assert webp_is_lossy(work / f"{src.stem}_x2.webp") is not lossless, name


def test_auto_weights_is_a_usage_error_where_one_model_is_needed(work, tiny_bundle):
    for args in (("bench", "--speed", "--weights", "auto"), ("info", "auto"),
                 ("export", "auto", work / "out.pth")):
        result = run(*args)
        assert_one_error_line(result, "auto", "picks a model for each input", code=2)
    (tiny_bundle / "liif-edsr-baseline-real.pth").unlink()
    src = make_image(work / "photo.jpg")
    for args in (("upscale", src, "-s", "2"), ("resize", work, "--size", "9x9", "-o", work)):
        assert_one_error_line(run(*args), "weights not found", "real", code=2)
    assert run("upscale", src, "-s", "2", "-w", "default", "-q").exit_code == 0


# ------------------------------------------------------------------- second hardening pass


@pytest.mark.parametrize(("args", "words"), [
    (["upscale", "IN", "--scale", "2x"], ["invalid value", "--scale"]),
    (["upscale", "IN", "--width", "1.5"], ["invalid value", "--width"]),
    (["upscale", "IN", "-s", "2", "--chunk", "0"], ["--chunk"]),
    (["upscale", "IN", "-s", "2", "--quality", "101"], ["--quality"]),
    (["upscale", "IN", "-s", "2", "--bogus"], ["no such option", "--bogus"]),
    (["resize", "IN", "--size", "9x9"], ["missing option", "--output"]),
    (["upscale"], ["missing argument", "IMAGE"]),
    (["--bogus"], ["no such option", "--bogus"]),
])
def test_errors_typer_finds_are_one_line_too(work, args, words):
    """Typer/click's own checks (types, ranges, unknown options) used to print a Rich box."""
    src = make_image(work / "a.png", 8, 6)
    result = run(*[src if a == "IN" else a for a in args])
    line = assert_one_error_line(result, "error:", *words, code=2)
    assert "╭" not in result.output and line.startswith("error:")


def test_help_renders_flags_as_flags_everywhere():
    """No '<bool>' after --help, --version or any other flag, in every command's help."""
    for command in ([], ["upscale"], ["resize"], ["info"], ["export"], ["bench"], ["train"]):
        result = RUNNER.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, result.output
        assert "--help" in result.output
        assert "<bool>" not in result.output, command
    assert "--version" in RUNNER.invoke(app, ["--help"]).output


def test_help_imports_no_pydantic(cli_in_fresh_process):
    """Typer 0.29 imports pydantic at start-up (+0.1 s to every --help): pyproject.toml keeps
    Typer below it; an environment that has it anyway cannot run this check."""
    import typer

    if tuple(int(part) for part in typer.__version__.split(".")[:2]) >= (0, 29):
        pytest.skip(f"typer {typer.__version__} is outside pyproject.toml's bound")
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom liif_cli.cli import app\n"
            "CliRunner().invoke(app, ['upscale', '--help'])\nprint('pydantic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_pyproject_bounds_typer_below_the_pydantic_versions():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("typer>=0.12,<0.29") for d in deps), deps


def test_several_inputs_report_every_output_written_then_the_failures(work, tiny_weights):
    good = [make_image(work / "a.png", 8, 6), make_image(work / "c.png", 8, 6)]
    broken = work / "b.png"
    broken.write_text("not a png")
    result = run("upscale", good[0], broken, good[1], "-s", "2", "-o", work / "out",
                 "-w", tiny_weights)
    assert result.exit_code == 1, result.output
    found = lines(result)
    assert found[0].startswith("failed:") and "b.png" in found[0]
    assert found[1:3] == [f"wrote {work / 'out' / name}" for name in ("a_x2.png", "c_x2.png")]
    assert found[3] == f"error: 1 of 3 images failed: {broken}"
    assert files_under(work / "out") == {"a_x2.png", "c_x2.png"}


def test_downscales_say_lanczos_and_count_under_no_model(work, tiny_bundle):
    src = make_image(work / "big.png", 40, 30)
    result = run("upscale", src, "-s", "0.5")
    assert result.exit_code == 0, result.output
    assert lines(result) == [f"wrote {work / 'big_x0.5.png'} (Lanczos)"]
    make_image(work / "in" / "big.png", 40, 30)
    make_image(work / "in" / "big2.jpg", 40, 30)
    down = run("resize", work / "in", "--size", "20x20", "-o", work / "down")
    assert down.exit_code == 0, down.output
    text = " ".join(down.output.split())
    assert "models:" not in text and "; Lanczos (downscales) 2" in text
    make_image(work / "in" / "small.png", 10, 10)
    mixed = run("resize", work / "in", "--size", "20x20", "-o", work / "mixed")
    text = " ".join(mixed.output.split())
    assert "models: default 1, real 0; Lanczos (downscales) 2" in text, text


def test_control_characters_in_names_reach_no_terminal(work, tiny_weights):
    src = make_image(work / "bad\x1b[2Jclear.png", 8, 6)
    broken = work / "new\nline.png"
    broken.write_text("not a png")
    wrote = run("upscale", src, "-s", "2", "-w", tiny_weights)
    assert lines(wrote) == [f"wrote {work}/bad\\x1b[2Jclear_x2.png"]
    failed = run("upscale", broken, "-s", "2", "-w", tiny_weights)
    assert_one_error_line(failed, "new\\nline.png", code=1)
    summary = run("resize", work, "--size", "16x16", "-o", work / "out", "-w", tiny_weights)
    assert "\x1b" not in summary.output and "new\\nline.png" in summary.output
    assert all("\x1b" not in line for line in summary.output.splitlines())


def test_resize_skips_and_counts_hidden_links_and_symlinked_folders(work, tiny_weights):
    src = work / "in"
    make_image(src / "a.png", 8, 6)
    make_image(src / ".hidden.png", 8, 6)
    make_image(src / ".cache" / "inside_hidden.png", 8, 6)
    make_image(src / "sub" / "b.png", 8, 6)
    make_image(work / "elsewhere" / "c.png", 8, 6)
    (src / "linked").symlink_to(work / "elsewhere", target_is_directory=True)
    (src / "dangling.png").symlink_to(work / "nowhere.png")
    (src / "alias.png").symlink_to(src / "a.png")  # a link to a file is followed
    result = run("resize", src, "-r", "--size", "16x16", "-o", work / "out", "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert files_under(work / "out") == {"a.png", "alias.png", "sub/b.png"}
    text = " ".join(result.output.split())
    assert ("ignored 1 hidden file, 1 hidden folder, not entered, 1 dangling link, "
            "1 symlinked folder, not followed") in text, text


def test_output_too_large_for_its_format_is_refused_before_rendering(work, tiny_weights,
                                                                     monkeypatch):
    import liif_cli.api

    def no_render(*args, **kwargs):
        raise AssertionError("rendered")

    monkeypatch.setattr(liif_cli.api, "render_tiles", no_render)
    src = make_image(work / "a.png", 8, 6)
    for size, out, limit in (("70000x2", "big.jpg", "65,500"), ("16384x2", "big.webp", "16,383")):
        result = run("upscale", src, "--size", size, "-o", work / out, "-w", tiny_weights,
                     "--max-pixels", "0")
        assert_one_error_line(result, out, "too large", limit, code=2)
    result = run("resize", src, "--size", "16384x16384", "--fit", "cover", "--format", "webp",
                 "-o", work / "r", "-w", tiny_weights, "--max-pixels", "0")
    assert_one_error_line(result, "16,383", code=2)
    # Known only once the image is read: that image fails (exit 1), still before rendering.
    result = run("upscale", src, "--scale", "3000", "-o", work / "big.webp", "-w", tiny_weights,
                 "--max-pixels", "0")
    assert result.exit_code == 1 and "16,383" in result.output, result.output
    assert files_under(work) == {"a.png"}


def test_output_name_too_long_for_the_file_system_is_refused_up_front(work, tiny_weights):
    src = make_image(work / ("n" * 250 + ".png"), 8, 6)  # the output's 257 bytes do not fit
    result = run("upscale", src, "-s", "2", "-w", tiny_weights)
    assert_one_error_line(result, "name is too long", code=2)
    result = run("upscale", src, "-s", "2", "-o", work / ("o" * 300 + ".png"),
                 "-w", tiny_weights)
    assert_one_error_line(result, "name is too long", code=2)
    assert files_under(work) == {src.name}


def test_one_exit_code_rule(work, tiny_weights, monkeypatch):
    """2: usage or inputs unusable before any work; 1: failures during the work."""
    bad = work / "bad.pth"
    bad.write_text("not a checkpoint")
    src = make_image(work / "a.png", 8, 6)
    for args in (["info", bad], ["upscale", src, "-s", "2", "-w", bad],
                 ["resize", src, "--size", "9x9", "-o", work / "r", "-w", bad],
                 ["train", "--out", work / "run", "--data", work, "--init", bad],
                 ["export", bad, work / "slim.pth"],
                 ["export", bad, work / "graphs", "--format", "onnx"]):
        assert_one_error_line(run(*args), "not a LIIF checkpoint", code=2)
    if not torch_cuda_available():
        assert_one_error_line(run("train", "--out", work / "run", "--data", work,
                                  "--device", "cuda"), "cuda", code=2)
    assert not (work / "run").exists()
    locked = work / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access",  # root may write anywhere: pretend it may not here
                        lambda path, mode: Path(path) != locked and real_access(path, mode))
    for output in (f"{locked}/", locked / "out.png"):
        result = run("upscale", src, "-s", "2", "-o", output, "-w", tiny_weights)
        assert_one_error_line(result, "no permission", "locked", code=2)
    assert files_under(locked) == set()


def test_info_of_a_run_shows_its_absolute_paths_short(work, monkeypatch):
    from liif_cli import checkpoint
    from liif_cli.model import ModelSpec, build_model

    model = build_model(ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16]))
    data = work / "photos"
    path = work / "run.pth"
    checkpoint.save(checkpoint.to_dict(model, {"training_data": [str(data)],
                                               "init": str(work / "start.pth")}), path)
    monkeypatch.chdir(work)
    shown = run("info", path)
    assert shown.exit_code == 0, shown.output
    rows = {cells[1].strip(): cells[2].strip() for cells in
            (line.split("│") for line in shown.stdout.splitlines()) if len(cells) > 3}
    assert rows["training_data"] == "photos" and rows["init"] == "start.pth"
    record = json.loads(run("info", path, "--json").stdout)  # whole, for scripts
    assert record["metadata"]["training_data"] == [str(data)]


def test_info_of_bundled_weights_explains_its_numbers():
    result = run("info", "default")
    assert result.exit_code == 0, result.output
    rows = {cells[1].strip(): cells[2].strip() for cells in
            (line.split("│") for line in result.stdout.splitlines()) if len(cells) > 3}
    assert "/" not in rows["init"]  # a file of the training machine, by name only
    record = json.dumps(json.loads(run("info", "fast", "--json").stdout)["metadata"])
    assert '"/' not in record and '"..' not in record  # nor its folders, as '../data/val'
    assert rows["training images used"].endswith("(those large enough for the largest crop)")


def test_git_ignores_no_tracked_file_and_the_quickstart_output():
    root = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=root,
                              capture_output=True, text=True, timeout=60)
        ignored = subprocess.run(["git", "check-ignore", "-q", "sample_x4.png"], cwd=root,
                                 timeout=60)
    except OSError:
        pytest.skip("no git")
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    assert done.stdout == ""  # .gitignore names no tracked file
    assert ignored.returncode == 0  # the README Quickstart's output


def test_subprocesses_keep_their_temporary_files_in_pytests_folder(tmp_path_factory):
    """torchrun's launcher makes a /tmp/torchelastic_* folder per run and leaves it; the
    conftest fixture points every subprocess's TMPDIR into pytest's pruned folder."""
    done = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert Path(done.stdout.strip()).is_relative_to(tmp_path_factory.getbasetemp())


def test_signals_the_caller_ignores_stay_ignored_while_a_command_runs():
    """`nohup liif upscale ...` ignores SIGHUP: the command must not stop when the terminal
    closes; SIGTERM, not ignored, stops it as Ctrl-C does."""
    import signal

    from liif_cli.cli import stop_on_signals

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)
