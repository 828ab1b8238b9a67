"""File jobs for `liif upscale` and `liif resize`: which file goes where, and doing one.

A job reads one image, decides its output size, checks the output can be written (before
the slow part), resamples it and writes it atomically. Nothing here prints: a job returns
its notes (e.g. that it stretched or flattened an image) and the CLI reports them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import animation, video
from .errors import LiifError, OutOfMemory, Warn, is_out_of_memory, one_line
from .files import check_regular_file, claim, file_identity, real_path, release
from .images import (
    SUPPORTED_SUFFIXES,
    Picture,
    StoredPicture,
    check_output,
    check_output_size,
    default_suffix,
    describe_source,
    dropped_metadata,
    flatten,
    is_transparent,
    parse_colour,
    read_image,
    stored_output,
    stores_alpha,
    write_image,
)
from .sizing import centre_crop_box, check_max_pixels, fit_size, uses_model

if TYPE_CHECKING:  # torch stays unimported until a job runs (usage errors answer at once)
    from .api import AutoUpscaler, Upscaler
    from .engine import Progress

SizeRule = Callable[[tuple[int, int]], tuple[int, int]]  # input (H, W) -> output (H, W)
FORMATS = {"keep": None, "png": ".png", "jpg": ".jpg", "webp": ".webp"}
NOT_ENTERED = "sub-folders not entered"  # resize_jobs' count of folders skipped without -r
# What resize_jobs passes over, by reason: how the summary names one, and several.
IGNORED = {
    "inside the output folder": ("file inside the output folder",
                                 "files inside the output folder"),
    "with no image suffix": ("file with no image suffix", "files with no image suffix"),
    "hidden file": ("hidden file", "hidden files"),
    "hidden folder": ("hidden folder, not entered", "hidden folders, not entered"),
    "dangling link": ("dangling link", "dangling links"),
    "symlinked folder": ("symlinked folder, not followed", "symlinked folders, not followed"),
    "special file": ("special file (no regular file)", "special files (no regular files)"),
    NOT_ENTERED: ("sub-folder, not entered without -r", "sub-folders, not entered without -r"),
}
# What `liif resize` takes from a folder: images, animations (GIF, APNG) and videos.
MEDIA_SUFFIXES = SUPPORTED_SUFFIXES | animation.READ_SUFFIXES | video.READ_SUFFIXES
ASPECT_TOLERANCE = 0.01  # a stretch that changes the aspect ratio more than this is reported


@dataclass(frozen=True)
class Note:
    """Something a job did that the user should hear about: level 'warning' or 'note'."""

    level: str
    text: str


@dataclass
class JobResult:
    """What a job did: its notes, the name of the model that resampled it (see Upscaler.name;
    None for a downscale, which Lanczos makes) and how its source was stored
    (images.describe_source), and why it was skipped, if it was: 'existing' (the output
    appeared meanwhile, e.g. written by another run) or 'claimed' (another run is writing it)."""

    notes: list[Note] = field(default_factory=list)
    model: str | None = None
    source: str | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def scale_label(scale: float) -> str:
    """'x4' for 4.0, 'x12.5' for 12.5: the suffix of default output names."""
    return f"x{scale:g}"


def output_is_folder(inputs: list[Path], output: str | Path | None) -> bool:
    """Whether `liif upscale -o output` names a folder: an existing one, a name ending in a
    slash (pass the text as typed: Path drops the slash), or any name for several inputs."""
    return output is not None and (os.path.isdir(output) or len(inputs) > 1
                                   or str(output).endswith(("/", "\\", os.sep)))


def upscale_jobs(inputs: Iterable[Path], output: str | Path | None, label: str) -> list[Job]:
    """Where each `liif upscale` input goes: beside it as <stem>_<label><ext> by default,
    into `output` if it is a folder (or several inputs), or to `output` itself."""
    inputs = list(inputs)
    to_folder = output_is_folder(inputs, output)
    output = None if output is None else Path(output)
    jobs = []
    for src in inputs:
        name = f"{src.stem}_{label}{output_suffix(src)}"
        if output is None:
            target = src.with_name(name)
        elif to_folder:
            target = output / name
        else:
            target = output
        jobs.append(Job(src, target))
    _check_distinct(jobs)
    return jobs


def output_suffix(source: Path) -> str:
    """The suffix of an output made from `source` when the user names none: a video keeps
    its container (.mp4 for one liif cannot write, e.g. .avi), an animation its format (an
    animated GIF stays a GIF), a still image as images.default_suffix says."""
    suffix = source.suffix.lower()
    if video.is_video(source):
        return source.suffix if suffix in video.WRITE_SUFFIXES else ".mp4"
    if suffix in animation.WRITE_SUFFIXES and animation.is_animated(source):
        return source.suffix
    return default_suffix(source)


def check_target(source: Path, target: Path, *, overwrite: bool,
                 size: tuple[int, int] | None = None) -> None:
    """LiifError if `source`'s output cannot be written to `target`: as check_output for a
    still image; for a video, a suffix no encoder writes; for an animation, a still format
    or frames of `size` too large for its format."""
    if video.is_video(source):
        video.check_video_output(target, overwrite=overwrite)
    elif target.suffix.lower() in video.WRITE_SUFFIXES:
        raise LiifError(f"{target}: an image cannot be written as a video; choose an image "
                        "suffix")
    elif animation.is_animated(source):
        animation.check_animation_output(target, overwrite=overwrite, size=size)
    else:
        check_output(target, overwrite=overwrite, size=size)


def check_upscale_output(inputs: list[Path], output: str | Path | None, jobs: list[Job],
                         size: tuple[int, int] | None = None) -> None:
    """LiifError now, before the model loads, for outputs of `liif upscale` that cannot be
    written whatever the images hold: a folder name (-o) taken by a file, a file name liif
    cannot write or the file system cannot hold, a folder that is missing or not writable,
    and, where the options fix every output's (H, W) `size`, one too large for its format.
    (An existing output is the job's to report: the other images go on.)"""
    to_folder = output is not None and output_is_folder(inputs, output)
    if to_folder:
        path = Path(output)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise LiifError(f"output {path} exists and is not a folder"
                            + (f" (with {len(inputs)} inputs, -o names a folder)"
                               if len(inputs) > 1 else ""))
    for job in jobs:
        if to_folder:  # the folder is created later (make_output_folder checks it then)
            check_output_size(job.target, size)
            if video.is_video(job.source):
                video.check_video_suffix(job.target)
        else:
            check_target(job.source, job.target, overwrite=True, size=size)


def make_output_folder(folder: Path) -> None:
    """Create `folder` (and its parents) if missing and check files can be written in it,
    so an unusable output folder is one error up front rather than one per image."""
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise LiifError(f"output {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiifError(f"cannot create output folder {folder}: "
                        f"{exc.strerror or one_line(exc)}") from None
    if not writable(folder):
        raise LiifError(f"no permission to write in output folder {folder}")


def writable(folder: Path) -> bool:
    """Whether this process may create files in `folder`."""
    return os.access(folder, os.W_OK | os.X_OK)


def resize_jobs(inputs: Iterable[Path], out_dir: Path, recursive: bool, fmt: str,
                ignored: Counter[str] | None = None) -> list[Job]:
    """`liif resize` jobs: every image under the given folders (mirroring sub-folders) or
    the given files, each into `out_dir` with the chosen format's suffix.

    Files inside `out_dir` are never inputs when it lies inside a scanned folder (a rerun
    must not resize its own outputs); an `out_dir` that holds the scanned folder (`resize
    photos -o .`) excludes nothing, as outputs then land beside that folder, not in it.
    `ignored`, if given, counts what the scanned folders held that was passed over, by
    reason (the keys of IGNORED): files with no image suffix or inside the output folder,
    hidden files and folders (names starting with '.', e.g. unfinished outputs: a hidden
    folder is not entered), dangling links, symlinked folders (not followed, so no folder is
    visited twice), special files, and sub-folders not entered because `recursive` is off
    (the output folder aside). Symlinks to files are followed.
    """
    if fmt not in FORMATS:
        raise LiifError(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")
    ignored = Counter() if ignored is None else ignored
    out_real = real_path(out_dir)
    jobs = []
    for item in inputs:
        if os.path.isdir(item):  # os.path, unlike Path, never raises (e.g. ENAMETOOLONG)
            below = out_real.is_relative_to(real_path(item))
            found = _scan(item, out_real if below else None, recursive, ignored)
            pairs = [(p, p.relative_to(item)) for p in found]
        elif os.path.exists(item):
            check_regular_file(item)
            pairs = [(item, Path(item.name))]
        else:
            raise LiifError(f"input not found: {item}")
        for src, rel in pairs:
            # Videos keep their container: --format names an image format.
            suffix = (output_suffix(src) if video.is_video(src) else
                      FORMATS[fmt] or output_suffix(src))
            jobs.append(Job(src, out_dir / rel.with_suffix(suffix)))
    _check_distinct(jobs)
    return jobs


def _scan(folder: Path, out_real: Path | None, recursive: bool,
          ignored: Counter[str]) -> list[Path]:
    """The image files in `folder` (and, if `recursive`, below it) in name order, counting
    in `ignored` what is passed over (see resize_jobs); those inside `out_real`, the output
    folder when it lies inside the scanned folder, too."""
    found = []
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        raise LiifError(f"cannot read folder {folder}: {exc.strerror or one_line(exc)}") from None
    for entry in entries:
        path = Path(folder, entry.name)
        if entry.is_dir(follow_symlinks=False) and real_path(path) == out_real:
            if recursive:  # its files are outputs: counted, never taken as inputs
                ignored["inside the output folder"] += _count_files(path)
            continue
        if entry.name.startswith("."):
            ignored["hidden folder" if entry.is_dir() else "hidden file"] += 1
        elif entry.is_symlink() and not os.path.exists(path):
            ignored["dangling link"] += 1
        elif entry.is_symlink() and entry.is_dir():
            ignored["symlinked folder"] += 1
        elif entry.is_dir():
            if recursive:
                found += _scan(path, out_real, recursive, ignored)
            else:
                ignored[NOT_ENTERED] += 1
        elif not entry.is_file():
            ignored["special file"] += 1
        elif out_real is not None and real_path(path).is_relative_to(out_real):
            ignored["inside the output folder"] += 1
        elif path.suffix.lower() not in MEDIA_SUFFIXES:
            ignored["with no image suffix"] += 1
        else:
            found.append(path)
    return found


def _count_files(folder: Path) -> int:
    """Files below `folder` (hidden ones aside; symlinked folders not followed)."""
    count = 0
    for _root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        count += sum(not name.startswith(".") for name in names)
    return count


def _check_distinct(jobs: list[Job]) -> None:
    """Two inputs must never write the same output, and no output may be an input."""
    sources = {file_identity(job.source) for job in jobs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        if file_identity(job.target) in sources:
            raise LiifError(f"output {job.target} would overwrite an input; choose another -o")
        target = real_path(job.target)
        if target in seen:
            raise LiifError(f"{seen[target]} and {job.source} would both write {job.target}")
        seen[target] = job.source


def run_job(upscaler: Upscaler | AutoUpscaler, job: Job, size_rule: SizeRule, *,
            overwrite: bool = False, max_pixels: int = 0, quality: int = 95,
            crop_to: tuple[int, int] | None = None, make_dirs: bool = False,
            progress: Progress | None = None,
            strip_metadata: bool = False, background: str | None = None,
            warn_stretch: str | None = None, shared: bool = False,
            crf: int = video.DEFAULT_CRF,
            frames: Callable[[int, int], None] | None = None,
            estimate: Callable[[video.Estimate], None] | None = None) -> JobResult:
    """Read, resample, optionally centre-crop to `crop_to` (H, W), and write one image;
    returns what the user should be told.

    `make_dirs` creates the output's folder (resize mirrors sub-folders); otherwise a
    missing folder is an error. `strip_metadata` drops the EXIF (camera, date, GPS; for
    privacy), never the ICC profile (it defines the colours). `background` (a colour, see
    images.parse_colour) flattens transparency when the output's format has no alpha (a note
    says so); without it that is an error. `warn_stretch` (the size asked for, as the user
    wrote it) warns when the output's aspect ratio differs from the input's by more than
    ASPECT_TOLERANCE.

    `shared`: other runs may write the same outputs at the same time (`liif resize` on the
    same folders): the output is claimed first (files.claim) and skipped if another live run
    holds it, and an output that appears meanwhile counts as done, not as a failure (unless
    `overwrite`). Every LiifError raised names the input file.
    """
    claimed = False
    try:
        if shared:
            if make_dirs:
                _make_parent(job.target)  # the claim lives beside the output
            claimed = claim(job.target)
            if not claimed:
                return JobResult(skipped="claimed")
            if not overwrite and already_written(job.target):
                return JobResult(skipped="existing")
        return _run_job(upscaler, job, size_rule, overwrite=overwrite, max_pixels=max_pixels,
                        quality=quality, crop_to=crop_to, make_dirs=make_dirs,
                        progress=progress, strip_metadata=strip_metadata,
                        background=background, warn_stretch=warn_stretch, crf=crf,
                        frames=frames, estimate=estimate)
    except LiifError as exc:
        if shared and not overwrite and already_written(job.target):
            return JobResult(skipped="existing")  # another run finished it first
        if str(job.source) in str(exc) or str(job.target) in str(exc):
            raise
        raise LiifError(f"{job.source}: {exc}") from exc
    except Exception as exc:  # e.g. numpy running out of memory while writing
        if not is_out_of_memory(exc):
            raise
        raise LiifError(f"{job.source}: out of memory making {job.target} ({one_line(exc)}); "
                        "ask for a smaller output (--max-pixels refuses large ones up "
                        "front)") from None
    finally:
        if claimed:
            release(job.target)


def already_written(target: Path) -> bool:
    """Whether an output exists at `target` (a folder in its place is no output: the job
    fails, saying so, rather than being skipped as done)."""
    return os.path.lexists(target) and not os.path.isdir(target)


def _make_parent(target: Path) -> None:
    """Create the folder of `target` (and its parents) if missing; LiifError if impossible."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiifError(f"cannot create output folder {target.parent}: "
                        f"{exc.strerror or exc}") from None


def _run_job(upscaler: Upscaler | AutoUpscaler, job: Job, size_rule: SizeRule, *,
             overwrite: bool, max_pixels: int, quality: int, crop_to: tuple[int, int] | None,
             make_dirs: bool, progress: Progress | None, strip_metadata: bool,
             background: str | None, warn_stretch: str | None, crf: int = video.DEFAULT_CRF,
             frames: Callable[[int, int], None] | None = None,
             estimate: Callable[[video.Estimate], None] | None = None) -> JobResult:
    if video.is_video(job.source) or animation.is_animated(job.source):
        return _run_media_job(upscaler, job, size_rule, overwrite=overwrite,
                              max_pixels=max_pixels, quality=quality, crop_to=crop_to,
                              make_dirs=make_dirs, crf=crf, strip_metadata=strip_metadata,
                              frames=frames, estimate=estimate)

    def check_size(in_size: tuple[int, int]) -> None:  # from the header, before decoding
        check_max_pixels(size_rule(in_size), max_pixels)

    picture = read_image(job.source, max_pixels=max_pixels, check=check_size)
    notes = []
    if strip_metadata:
        picture.exif = None
    if background is not None and not stores_alpha(job.target) and is_transparent(picture):
        picture = flatten(picture, parse_colour(background))
        notes.append(Note("note", f"{job.source}: transparency flattened onto {background} "
                                  f"({job.target.suffix.lstrip('.').upper()} has no alpha)"))
    lost = dropped_metadata(picture, job.target)
    if lost:
        notes.append(Note("note", f"{job.source}: its {' and '.join(lost)} dropped "
                                  f"({job.target.suffix.lstrip('.').upper()} output cannot "
                                  "carry it)"))
    size = size_rule(picture.size)
    check_max_pixels(size, max_pixels)
    change = aspect_change(picture.size, size)
    if warn_stretch is not None and change > ASPECT_TOLERANCE:
        h, w = picture.size
        notes.append(Note("warning", f"{job.source}: stretched from {w}x{h} to {warn_stretch} "
                                     f"(aspect ratio changed by {change:.0%}); --fit contain "
                                     "or --fit cover keeps it, --fit stretch silences this"))
    if make_dirs:
        _make_parent(job.target)
    check_output(job.target, picture, overwrite=overwrite, size=crop_to or size)
    out: Picture | StoredPicture
    if uses_model(picture.size, size):
        # Rendered tile by tile straight into the file's bit depth and layout: the output
        # is never held in float.
        model = upscaler.model_for(picture)
        name = model.name
        try:
            out = model.resample_into(picture, stored_output(picture, size, job.target),
                                      progress, name=str(job.target))
        except OutOfMemory as exc:
            raise OutOfMemory(f"{job.source}: {exc}") from None
    else:  # a downscale: Lanczos, as the model's own resample would (no model is loaded)
        from .api import downscale

        out, name = downscale(picture, size, progress), None
    if crop_to is not None and crop_to != size:
        top, left, bottom, right = centre_crop_box(size, crop_to)
        if isinstance(out, StoredPicture):
            out = out.crop(top, left, bottom, right)
        else:
            alpha = None if out.alpha is None else out.alpha[top:bottom, left:right]
            out = out.with_pixels(out.rgb[top:bottom, left:right], alpha)
    # A lossless WebP stays lossless (the output keeps the source's format by default).
    lossless = picture.format == "WEBP" and not picture.lossy
    write_image(out, job.target, overwrite=overwrite, quality=quality, lossless=lossless)
    return JobResult(notes, model=name, source=describe_source(picture))


def _run_media_job(upscaler: Upscaler | AutoUpscaler, job: Job, size_rule: SizeRule, *,
                   overwrite: bool, max_pixels: int, quality: int,
                   crop_to: tuple[int, int] | None, make_dirs: bool, crf: int,
                   strip_metadata: bool, frames: Callable[[int, int], None] | None,
                   estimate: Callable[[video.Estimate], None] | None = None) -> JobResult:
    """A video or animation job: every frame through the upscaler's `resample`, as a
    still's; `frames` hears (frames done, total), `estimate` (videos) the first frame's
    time."""
    if make_dirs:
        _make_parent(job.target)
    check_target(job.source, job.target, overwrite=overwrite)
    used: list[str | None] = []

    def resample(picture: Picture, size: tuple[int, int]) -> Picture:
        if not uses_model(picture.size, size):
            from .api import downscale

            used.append(None)
            return downscale(picture, size)
        model = upscaler.model_for(picture)
        used.append(model.name)
        return model.resample(picture, size, name=str(job.target))

    if video.is_video(job.source):
        info = video.probe(job.source)
        size = size_rule(info.size)
        check_max_pixels(size, max_pixels)
        if uses_model(info.size, size):  # load the model now: the first frame is timed
            stand_in = Picture.from_array(np.zeros((1, 1, 3), np.uint8))
            stand_in.lossy = info.lossy
            upscaler.model_for(stand_in)
        texts = video.upscale_video(resample, job.source, job.target, size_rule, crf=crf,
                                    overwrite=overwrite, max_pixels=max_pixels,
                                    crop_to=crop_to, progress=frames, info=info,
                                    estimate=estimate, strip_metadata=strip_metadata)
        source = f"{'lossy' if info.lossy else 'lossless'} {info.codec} video"
    else:
        texts = animation.upscale_animation(resample, job.source, job.target, size_rule,
                                            overwrite=overwrite, max_pixels=max_pixels,
                                            quality=quality, crop_to=crop_to,
                                            strip_metadata=strip_metadata, progress=frames)
        source = "animation"
    notes = [Note("warning" if isinstance(text, Warn) else "note", text)
             for text in texts]
    return JobResult(notes, model=used[0] if used else None, source=source)


def aspect_change(in_size: tuple[int, int], out_size: tuple[int, int]) -> float:
    """How much resizing (H, W) `in_size` to `out_size` changes the aspect ratio: 0 for none,
    0.5 when one side is stretched 1.5 times more than the other."""
    (h, w), (oh, ow) = in_size, out_size
    stretch = (ow / w) / (oh / h)
    return max(stretch, 1 / stretch) - 1


def fit_rule(box: tuple[int, int], fit: str) -> tuple[SizeRule, tuple[int, int] | None]:
    """The size rule for `liif resize --fit`, and the crop box for 'cover'."""
    return (lambda size: fit_size(size, box, fit)), (box if fit == "cover" else None)

