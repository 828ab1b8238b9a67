"""The `liif` command line: parse options, call the library, report.

Every user error is a LiifError, printed as one red line on stderr with a non-zero exit:
2 for usage errors and unusable inputs found before any work (bad options, missing files,
unusable weights, device or output folder), 1 for failures during the work; Ctrl-C, SIGTERM
and SIGHUP stop a command with 130. Errors that Typer finds itself (a value of the wrong
type, an unknown option) are one line and exit 2 too (LiifGroup). Everything printed goes
through `printable`, so control characters in file names reach no terminal.
torch is imported only inside the commands that run a model, so `--help` and usage errors
answer at once (importing torch takes seconds).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from . import __version__, bundled
from .errors import Interrupted, LiifError, UnusableInput, one_line, printable
from .sizing import MIN_TILE, check_tile

if TYPE_CHECKING:  # rich.progress and rich.table load when used: --help answers sooner
    from rich.progress import Progress

FLAG = " "  # metavar of a flag: shows no '<bool>' type in help (a flag takes no value)
# click's ClickException, from the click this Typer uses (Typer 0.26 and later vendor their own).
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


@contextmanager
def _one_line_click_errors() -> Iterator[None]:
    """Errors that click finds while parsing (a value of the wrong type, an unknown option, a
    missing argument) as one `error:` line with their exit code (2), not Rich's box."""
    try:
        yield
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `liif` alone: the help, as asked
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        fail(one_line(exc.format_message()).rstrip(".") + hint, getattr(exc, "exit_code", 2))


# OSError numbers that mean the path given was unusable (exit 2, like any bad input).
_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                          errno.EACCES, errno.EPERM, errno.ELOOP})


@contextmanager
def _one_line_os_errors() -> Iterator[None]:
    """The last net under every command: an OSError that no check turned into a LiifError
    (say, a path the file system refuses outright) is one line and an exit code, never a
    traceback, and this run's temporary and claim files are removed."""
    from .files import remove_own_files

    try:
        yield
    except OSError as exc:
        remove_own_files()
        where = f"{exc.filename}: " if exc.filename else ""
        fail(where + (exc.strerror or one_line(exc)), 2 if exc.errno in _PATH_ERRNOS else 1)


def _as_flag(option):
    """The --help option, shown as a flag (no '<bool>', whatever the Typer version)."""
    if option is not None:
        option.metavar = FLAG
    return option


class LiifGroup(typer.core.TyperGroup):
    """The `liif` command group: one-line usage errors (_one_line_click_errors) for the group's
    options and each command's, and --help shown as the flag it is."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line_click_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _one_line_click_errors(), _one_line_os_errors():  # a command's options, its run
            return super().invoke(ctx)

    def get_help_option(self, ctx):
        return _as_flag(super().get_help_option(ctx))

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _as_flag(command.get_help_option(ctx))
        return command


app = typer.Typer(help="Upscale images to any size with a Local Implicit Image Function (LIIF).",
                  cls=LiifGroup, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


class SafeConsole(Console):
    """A Console that prints text through `printable`: file names in messages cannot reach
    the terminal as control sequences (ESC, newlines, ...)."""

    def print(self, *objects, **kwargs) -> None:
        super().print(*map(_safe, objects), **kwargs)


def _safe(thing: object) -> object:
    """A str or rich Text through `printable` (a Text that needs it loses its inner styles);
    anything else (tables, ...) as it is."""
    if isinstance(thing, str):
        return printable(thing)
    if isinstance(thing, Text) and not thing.plain.isprintable():
        return Text(printable(thing.plain), style=thing.style)
    return thing


# Piped or redirected output gets room for the bench tables (Rich would use 80 columns).
err = SafeConsole(stderr=True, width=None if sys.stderr.isatty() else 160)
out = SafeConsole(width=None if sys.stdout.isatty() else 160)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Fit(str, Enum):
    contain = "contain"
    cover = "cover"
    stretch = "stretch"


class Format(str, Enum):
    keep = "keep"
    png = "png"
    jpg = "jpg"
    webp = "webp"


# Options shared by the commands that run the model.
WeightsOpt = Annotated[str | None, typer.Option(
    "--weights", "-w", help=bundled.WEIGHTS_HELP, show_default=False)]
# upscale and resize read image files, so they can also pick a bundled model per file.
AutoWeightsOpt = Annotated[str | None, typer.Option(
    "--weights", "-w", help=bundled.AUTO_WEIGHTS_HELP, show_default=False)]
FastOpt = Annotated[bool, typer.Option(
    "--fast", help=f"The fast models, per image as --weights auto picks: {bundled.FAST_LOSSY} "
    f"for the JPEGs and lossy WebP that auto gives {bundled.AUTO_LOSSY}, {bundled.FAST_OTHER} "
    "for the rest (many times faster, a little less sharp).", metavar=FLAG)]
DeviceOpt = Annotated[Device, typer.Option(help="Where to run: auto picks cuda, mps, then cpu.")]
TileOpt = Annotated[int | None, typer.Option(
    help=f"Tile size in input pixels (memory bound), at least {MIN_TILE}; 0 renders in one "
    "piece.", min=0, show_default="256 on the CPU, from free memory on CUDA")]
ChunkOpt = Annotated[int | None, typer.Option(
    help="Queries decoded at once (memory bound).", min=1,
    show_default="on the CPU 4096 in fp32, 8192 in bf16; 262144 on CUDA")]
PrecisionOpt = Annotated[Precision, typer.Option(
    help="Arithmetic: auto (bf16 where the CPU or GPU has bf16 units, else fp32), fp32 "
    "(the reference), bf16 or fp16 (GPU).")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace existing output files (never an input).", metavar=FLAG)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.",
                                         metavar=FLAG)]
MaxPixelsOpt = Annotated[int, typer.Option(
    help="Refuse inputs and outputs (each frame of a video or animation) larger than this "
    "many pixels (0: no limit).", min=0)]
QualityOpt = Annotated[int, typer.Option(
    help="JPEG/WebP quality (a lossless WebP's upscale stays lossless: there it is the "
    "compression effort).", min=1, max=100)]
BackgroundOpt = Annotated[str, typer.Option(
    help="Colour to flatten transparency onto when the output format has none (JPEG, BMP): "
    "a name such as white or black, or #RRGGBB.")]
FIT_HELP = "contain: inside the box; cover: fill and centre-crop; stretch: exactly the box."
CrfOpt = Annotated[int, typer.Option(
    help="Video quality in CRF terms (0-51 for H.264, 0-63 for VP9; lower is better and "
    "larger); images ignore it.", min=0, max=63)]
StripMetadataOpt = Annotated[bool, typer.Option(
    "--strip-metadata", help="Drop the EXIF metadata (camera, date, GPS position) from the "
    "outputs, and a video's container tags (date, place, device); the colour profile is "
    "kept.", metavar=FLAG)]


def fail(message: str, code: int = 1) -> None:
    # escape: paths may contain [brackets]; soft_wrap: one line even when stderr is not a tty
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C, SIGTERM or SIGHUP


@contextmanager
def user_errors(code: int = 1, report: bool = True) -> Iterator[None]:
    """Turn LiifError (and Ctrl-C, SIGTERM, SIGHUP) into one line and an exit code, never a
    traceback. `code` is that of a LiifError, but an UnusableInput exits 2.

    report=False: only the exit code (torchrun ranks other than 0, whose errors rank 0
    reports: see distributed.agreed_errors).
    """
    try:
        yield
    except LiifError as exc:
        code = 2 if isinstance(exc, UnusableInput) else code
        if not report:
            raise typer.Exit(code) from None
        fail(str(exc), code)
    except KeyboardInterrupt as exc:
        stopped(exc, report)


def stopped(exc: KeyboardInterrupt, report: bool = True) -> None:
    """End a command stopped by Ctrl-C (KeyboardInterrupt) or a signal (Interrupted): remove
    what is left of this run's temporary and claim files, say so in one line, exit 130."""
    from .files import remove_own_files

    remove_own_files()
    if not report:
        raise typer.Exit(INTERRUPTED) from None
    how = f"stopped by {exc.name}" if isinstance(exc, Interrupted) else "interrupted"
    fail(f"{how}; nothing half-written was left", INTERRUPTED)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Make SIGTERM (timeout, docker stop, systemd) and SIGHUP (a closed terminal) stop the
    command as Ctrl-C does: Interrupted is raised in the main thread, `finally` blocks run
    and `stopped` ends it. A second signal during that cleanup is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: object) -> None:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    # A signal the caller ignores stays ignored: `nohup liif ...` lives on when the terminal
    # closes.
    candidates = (signal.SIGTERM, getattr(signal, "SIGHUP", None))
    old = {sig: signal.getsignal(sig) for sig in candidates
           if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN}
    for sig in old:
        signal.signal(sig, handler)
    try:
        yield
    except KeyboardInterrupt as exc:  # one arriving outside the user_errors blocks
        stopped(exc)
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def make_progress(quiet: bool) -> Progress:
    """Files done, and the current image's output megapixels with the time left."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[n]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                    disable=quiet or not err.is_terminal,
                    transient=True)  # no live display when stderr is a file or pipe


class PlainProgress:
    """Progress as plain lines, for logs (stderr not a terminal): nothing for renders that
    finish within `first_s` seconds; then a line with the size, the share done and the time
    left, and another every `every_s` seconds."""

    def __init__(self, name: str, every_s: float = 30.0, first_s: float = 2.0):
        self.name, self.every_s, self.first_s = name, every_s, first_s
        self.start: float | None = None
        self.last: float | None = None

    def _due(self, done: int, total: int) -> float | None:
        """The time now if a line is due (and the work not finished), else None."""
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = (now - self.start >= self.first_s if self.last is None
               else now - self.last >= self.every_s)
        if not due or done >= total:
            return None
        self.last = now
        return now

    def __call__(self, done: int, total: int) -> None:
        now = self._due(done, total)
        if now is None:
            return
        left = (now - self.start) * (total - done) / max(done, 1)
        err.print(f"{self.name}: {100 * done / total:.0f}% of {total / 1e6:.2f} MP, about "
                  f"{_duration(left)} left", highlight=False, markup=False, soft_wrap=True)


    def frames(self, done: int, total: int, rate: float) -> None:
        """The same for a video or animation, counted in frames."""
        if self._due(done, total) is None:
            return
        err.print(f"{self.name}: {done}/{total} frames, {rate:.2f} fps, about "
                  f"{_duration((total - done) / max(rate, 1e-9))} left", highlight=False,
                  markup=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def check_weights(weights: str | None, fast: bool = False) -> None:
    """LiifError for a `--weights` of upscale or resize (None: auto) that names nothing, or
    that names a model beside `--fast`; torch-free, so a wrong name answers at once."""
    if bundled.is_auto(weights):
        for name in bundled.auto_pair(fast):
            bundled.resolve_weights(name)
    elif fast:
        raise LiifError(f"--fast picks a fast model per image; to name one, use --weights "
                        f"{bundled.FAST_OTHER} or --weights {bundled.FAST_LOSSY} without --fast")
    else:
        bundled.resolve_weights(weights)


def load_upscaler(weights: str | None, device: Device | str, precision: Precision,
                  tile: int | None, chunk: int | None, fast: bool = False):
    """The Upscaler for `--weights`, or for auto (None) an AutoUpscaler (of the fast pair
    with `fast`)."""
    check_weights(weights, fast)
    from . import runtime
    from .api import AutoUpscaler, Upscaler

    # This process renders, then exits: keeping freed memory saves re-faulting the decoder's
    # big buffers for every chunk (about 7% of an upscale's time, measured).
    runtime.retain_freed_memory()
    options = dict(device=device.value if isinstance(device, Device) else device,
                   precision=precision.value, tile=tile, chunk=chunk)
    if bundled.is_auto(weights):
        return AutoUpscaler(fast=fast, **options)
    return Upscaler.from_pretrained(weights, **options)


@dataclass
class JobTally:
    """What run_jobs did: the jobs written, with the model that resampled each (None: a
    downscale, made with Lanczos) and how its input was stored; the inputs that failed; how
    many outputs appeared meanwhile ('existing', see batch.JobResult); and the outputs
    skipped because another run holds their claim ('claimed')."""

    written: list[tuple[object, str | None, str | None]] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    existing: int = 0
    claimed: list[Path] = field(default_factory=list)


def run_jobs(upscaler, jobs, size_rule, *, quiet: bool, label: str,
             **job_options) -> JobTally:
    """Run file jobs with a progress display; report failures and the jobs' warnings (and,
    unless quiet, their notes)."""
    from .batch import run_job

    tally = JobTally()
    plain = not quiet and not err.is_terminal
    with make_progress(quiet) as progress:
        files = progress.add_task(label, total=len(jobs), n=f"0/{len(jobs)} files")
        pixels = progress.add_task("pixels", total=None, visible=False, n="")
        for job in jobs:
            name = printable(job.source.name)
            progress.update(pixels, description=f"  {escape(name)}", completed=0, total=None,
                            visible=True, n="")
            lines = PlainProgress(name) if plain else None

            def on_tile(done: int, total: int, lines: PlainProgress | None = lines) -> None:
                progress.update(pixels, completed=done, total=total,
                                n=f"{done / 1e6:.1f}/{total / 1e6:.1f} MP")
                if lines:
                    lines(done, total)

            started = time.monotonic()

            def on_frame(done: int, total: int, lines: PlainProgress | None = lines,
                         started: float = started) -> None:
                rate = done / max(time.monotonic() - started, 1e-9)
                progress.update(pixels, completed=done, total=total,
                                n=f"{done}/{total} frames, {rate:.2f} fps")
                if lines:
                    lines.frames(done, total, rate)

            def on_estimate(estimate, name: str = name) -> None:
                if not quiet and estimate.seconds >= ESTIMATE_MIN_S:
                    progress.console.print(estimate_line(name, estimate), highlight=False,
                                           markup=False, soft_wrap=True)

            try:
                result = run_job(upscaler, job, size_rule, progress=on_tile, frames=on_frame,
                                 estimate=on_estimate, **job_options)
                if result.skipped == "existing":
                    tally.existing += 1
                elif result.skipped == "claimed":
                    tally.claimed.append(job.target)
                else:
                    tally.written.append((job, result.model, result.source))
                for note in result.notes:
                    if note.level == "warning" or not quiet:
                        progress.console.print(f"[yellow]{note.level}:[/] {escape(note.text)}",
                                               highlight=False, soft_wrap=True)
            except LiifError as exc:
                tally.failed.append(job.source)
                progress.console.print(f"[bold red]failed:[/] {escape(str(exc))}",
                                       highlight=False, soft_wrap=True)
            progress.advance(files)
            done_files = int(progress.tasks[files].completed)
            progress.update(files, n=f"{done_files}/{len(jobs)} files")
            if plain and label != "upscale":  # a log of a folder job: one line per file
                err.print(f"{label}: {done_files}/{len(jobs)} {job.source.name}",
                          highlight=False, markup=False, soft_wrap=True)
        progress.update(pixels, visible=False)
    return tally


ESTIMATE_MIN_S = 10.0  # a video expected to take longer gets a one-line estimate first


def estimate_line(name: str, estimate) -> str:
    """'clip.mp4: 250 frames of 1920x1080 (518.4 MP) at 0.52 MP/s (the first frame's rate):
    about 0:16:37' (a video.Estimate; with no frame count, no estimate is made)."""
    (h, w), rate = estimate.size, estimate.rate
    return (f"estimate: {name}: {estimate.frames} frames of {w}x{h} "
            f"({estimate.megapixels:.1f} MP) at {rate:.2f} MP/s (the first frame's rate): "
            f"about {_duration(estimate.seconds)}")


def wrote_line(target: Path, model: str | None, source: str | None, auto: bool) -> str:
    """'wrote out.png', naming what resampled it: '(Lanczos)' for a downscale, and with
    --weights auto the model picked and why."""
    if model is None:
        return f"wrote {target} (Lanczos)"
    return f"wrote {target} (model: {model}, for its source: {source})" if auto \
        else f"wrote {target}"


# --------------------------------------------------------------------------- commands


def interruptible(command):
    """Run a command under stop_on_signals (SIGTERM and SIGHUP stop it as Ctrl-C does)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        with stop_on_signals():
            return command(*args, **kwargs)

    return run


@app.command()
@interruptible
def upscale(
    inputs: Annotated[list[Path], typer.Argument(metavar="IMAGE",
        help="Image, animation (GIF, WebP, APNG, multi-page TIFF) or video files (.mp4, .mov, "
        ".mkv, .webm, .avi) to upscale (for a folder, use `liif resize`).")],
    scale: Annotated[float | None, typer.Option("--scale", "-s", help="Any factor > 0, e.g. 12.5.")]
    = None,
    size: Annotated[str | None, typer.Option(
        help="Output size WIDTHxHEIGHT: exactly (stretched) unless --fit says otherwise.")]
    = None,
    fit: Annotated[Fit | None, typer.Option(
        help=f"With --size: {FIT_HELP}",
        show_default="stretch, with a warning when the aspect ratio changes")] = None,
    width: Annotated[int | None, typer.Option(help="Output width; keeps the aspect ratio.")]
    = None,
    height: Annotated[int | None, typer.Option(help="Output height; keeps the aspect ratio.")]
    = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Output file (one input), or folder (several inputs, or a name "
        "ending in /); a missing output folder is created (a file's folder must exist).",
        show_default="<stem>_x<scale>.<ext> beside the input")] = None,
    weights: AutoWeightsOpt = None,
    fast: FastOpt = False,
    device: DeviceOpt = Device.auto,
    tile: TileOpt = None,
    chunk: ChunkOpt = None,
    precision: PrecisionOpt = Precision.auto,
    max_pixels: MaxPixelsOpt = 250_000_000,
    quality: QualityOpt = 95,
    background: BackgroundOpt = "white",
    strip_metadata: StripMetadataOpt = False,
    crf: CrfOpt = 18,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Upscale images, animations and videos by a factor or to a size.

    Give exactly one of --scale, --size, --width or --height.
    Exit code 0: all done; 1: an image failed; 2: bad usage or an unusable input (found
    before any work); 130: stopped (Ctrl-C, SIGTERM, SIGHUP).
    """
    from .images import parse_colour
    from .sizing import parse_size, target_size

    with user_errors(code=2):  # usage errors (torch is imported last, to load the model)
        box = parse_size(size) if size is not None else None
        target_size((1, 1), scale=scale, size=box, width=width, height=height)  # validate early
        if fit is not None and box is None:
            raise LiifError("--fit applies to --size only (--scale, --width and --height keep "
                            "the aspect ratio anyway)")
        parse_colour(background)
        check_tile(tile, cli=True)
        from .files import check_regular_file

        for src in inputs:
            if os.path.isdir(src):
                raise LiifError(f"{src} is a folder; upscale takes image files: for a folder "
                                f"use `liif resize {src} --size WIDTHxHEIGHT -o OUTPUT_FOLDER`")
            if not os.path.lexists(src):
                raise LiifError(f"{src}: no such file")
            check_regular_file(src)  # a FIFO would block the read
        from .batch import (
            check_upscale_output,
            fit_rule,
            make_output_folder,
            output_is_folder,
            scale_label,
            upscale_jobs,
        )

        if scale is not None:
            label = scale_label(scale)
        elif box is not None:
            label = f"{box[1]}x{box[0]}"
        else:
            label = f"w{width}" if width is not None else f"h{height}"
        jobs = upscale_jobs(inputs, output, label)
        # --size with stretch or cover fixes the size of every output: check it fits them.
        fixed = box if box is not None and fit != Fit.contain else None
        check_upscale_output(inputs, output, jobs, fixed)
        # Weights, device and precision that cannot work are usage errors too.
        upscaler = load_upscaler(weights, device, precision, tile, chunk, fast)
        if output is not None and output_is_folder(inputs, output):
            make_output_folder(Path(output))
    with user_errors():
        crop_to, warn_stretch = None, None
        if fit is not None:
            size_rule, crop_to = fit_rule(box, fit.value)
        else:
            def size_rule(hw: tuple[int, int]) -> tuple[int, int]:
                return target_size(hw, scale=scale, size=box, width=width, height=height)
            warn_stretch = label if box is not None else None
        tally = run_jobs(upscaler, jobs, size_rule, quiet=quiet, label="upscale",
                         overwrite=overwrite, max_pixels=max_pixels, quality=quality,
                         crop_to=crop_to, strip_metadata=strip_metadata,
                         background=background, warn_stretch=warn_stretch, crf=crf)
        if not quiet:  # every output written, also when another image failed
            for job, model, source in tally.written:
                err.print(wrote_line(job.target, model, source, bundled.is_auto(weights)),
                          highlight=False, markup=False, soft_wrap=True)
        if tally.failed:
            if len(jobs) == 1:
                raise typer.Exit(1)  # its one 'failed:' line already says why
            fail(f"{len(tally.failed)} of {len(jobs)} images failed: "
                 + ", ".join(str(src) for src in tally.failed))


@app.command()
@interruptible
def resize(
    inputs: Annotated[list[Path], typer.Argument(help="Image folders and/or files.",
                                                 metavar="FOLDER_OR_IMAGE")],
    size: Annotated[str, typer.Option(help="Target box WIDTHxHEIGHT.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    fit: Annotated[Fit, typer.Option(help=FIT_HELP)] = Fit.contain,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", metavar=FLAG,
                                            help="Descend into sub-folders.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.keep,
    weights: AutoWeightsOpt = None,
    fast: FastOpt = False,
    device: DeviceOpt = Device.auto,
    tile: TileOpt = None,
    chunk: ChunkOpt = None,
    precision: PrecisionOpt = Precision.auto,
    max_pixels: MaxPixelsOpt = 250_000_000,
    quality: QualityOpt = 95,
    background: BackgroundOpt = "white",
    strip_metadata: StripMetadataOpt = False,
    crf: CrfOpt = 18,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fit every image to a box; downscaling uses Lanczos, upscaling the model.

    Existing outputs are skipped (so an interrupted run resumes) unless --overwrite.
    Exit code 0: all done; 1: some images failed, or outputs another run holds are still
    missing; 2: bad usage or an unusable input; 130: stopped (Ctrl-C, SIGTERM, SIGHUP).
    Under torchrun every rank takes its share of the files (on its own GPU when there are
    several); rank 0 prints the one summary and all ranks exit with the same code.
    """
    from .images import parse_colour
    from .sizing import check_max_pixels, parse_size

    if os.environ.get("RANK", "0") == "0":  # usage errors before importing torch (rank 0 says)
        with user_errors(code=2):
            box = parse_size(size)
            if fit != Fit.contain:  # a contained output may be far smaller than its box
                check_max_pixels(box, max_pixels)
            parse_colour(background)
            check_tile(tile, cli=True)
            check_weights(weights, fast)
    from collections import Counter

    from . import distributed
    from .batch import already_written, fit_rule, make_output_folder, resize_jobs
    from .files import CLAIM_LEASE_S, remove_stale_temps
    from .images import check_output_size

    with user_errors():  # each rank that cannot join says why
        distributed.init_from_env(device.value)  # no-op unless started by torchrun
    try:
        main, world = distributed.is_main(), distributed.world_size()
        ignored: Counter[str] = Counter()
        with user_errors(code=2, report=main), distributed.agreed_errors():
            box = parse_size(size)
            if fit != Fit.contain:  # contained outputs are checked image by image
                check_max_pixels(box, max_pixels)
            parse_colour(background)
            check_tile(tile, cli=True)
            if os.path.lexists(output) and not os.path.isdir(output):
                raise LiifError(f"--output {output} exists and is not a folder")
            jobs = resize_jobs(inputs, output, recursive, fmt.value, ignored)
            if fit != Fit.contain:  # every output is exactly the box: each format must hold it
                for job in jobs:
                    check_output_size(job.target, box)
        if not jobs:  # every rank found the same nothing
            if main:
                fail(f"nothing to do: no images in {', '.join(map(str, inputs))}"
                     + _ignored_text(ignored, " (ignored {})"))
            raise typer.Exit(1)
        with user_errors(code=2, report=main), distributed.agreed_errors():
            upscaler = load_upscaler(weights, distributed.device_name(device.value), precision,
                                     tile, chunk, fast)
            make_output_folder(output)
            for folder in sorted({job.target.parent for job in jobs}):
                remove_stale_temps(folder)  # left by a run killed mid-write (kill -9)
        # Rank 0 decides what is left before any rank writes; each rank then does
        # todo[rank::world], so every output is written by exactly one rank.
        todo = distributed.broadcast(
            [job for job in jobs if overwrite or not already_written(job.target)] if main
            else None)
        size_rule, crop_to = fit_rule(box, fit.value)
        with user_errors(code=1, report=main):
            tally = run_jobs(upscaler, distributed.shard(todo), size_rule,
                             quiet=quiet or not main,
                             label="resize" if world == 1 else f"resize (rank 0 of {world})",
                             overwrite=overwrite, max_pixels=max_pixels, quality=quality,
                             crop_to=crop_to, make_dirs=True, strip_metadata=strip_metadata,
                             background=background, shared=True, crf=crf)
        # Outputs another run held: done by now, or still missing (this run did not make them).
        missing = [target for target in tally.claimed if not already_written(target)]
        picks = bundled.auto_pair(fast)[::-1]  # (other, lossy)
        used = Counter(model for _, model, _ in tally.written)
        resized, failed, existing, blocked, *picked = (int(n) for n in distributed.all_sum(
            [len(tally.written), len(tally.failed),
             tally.existing + len(tally.claimed) - len(missing), len(missing), used[None]]
            + [used[name] for name in picks]))
        lanczos, picked = picked[0], picked[1:]
        if main:
            ranks = f" on {world} ranks" if world > 1 else ""
            others = f", {blocked} being written by another run" if blocked else ""
            # Which model made what, for --weights auto; downscales used none (Lanczos).
            models = ", ".join(f"{name} {n}" for name, n in zip(picks, picked, strict=True))
            how = (f"; models: {models}" if sum(picked) else "") + \
                (f"; Lanczos (downscales) {lanczos}" if lanczos else "")
            err.print(f"resized {resized}, skipped {len(jobs) - len(todo) + existing} "
                      f"existing{others}, failed {failed} (of {len(jobs)} images) into "
                      f"{output}{ranks}" + (how if bundled.is_auto(weights) else "")
                      + _ignored_text(ignored, "; ignored {}"),
                      highlight=False, markup=False, soft_wrap=True)
        if missing:  # each rank names its own
            err.print(f"[bold red]error:[/] {len(missing)} output"
                      f"{'s' if len(missing) != 1 else ''} not written: another run holds "
                      f"{'their claims' if len(missing) != 1 else 'its claim'} (rerun when it "
                      f"ends; a claim not refreshed for {CLAIM_LEASE_S} s, e.g. of a killed "
                      f"run, is taken over): {escape(', '.join(map(str, missing)))}",
                      highlight=False, soft_wrap=True)
        distributed.barrier()  # leave together, after the summary
    finally:
        distributed.cleanup()
    raise typer.Exit(1 if failed or blocked else 0)


def _ignored_text(ignored: dict[str, int], template: str) -> str:
    """'3 files with no image suffix, 1 hidden folder, not entered' put into `template`, or
    '' if nothing was ignored (see batch.IGNORED for the reasons, in the order shown)."""
    from .batch import IGNORED

    parts = [f"{ignored[reason]} {one if ignored[reason] == 1 else many}"
             for reason, (one, many) in IGNORED.items() if ignored.get(reason)]
    return template.format(", ".join(parts)) if parts else ""


@app.command()
def info(
    weights: Annotated[str | None, typer.Argument(
        help=bundled.WEIGHTS_HELP, show_default=False)]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON instead (for scripts).",
                                          metavar=FLAG)] = False,
) -> None:
    """Show what a checkpoint holds and which bundled model is for what.

    Architecture, size, training run and measured quality, as the checkpoint records them."""
    with user_errors(code=2):  # no such file or bundled name: a usage error
        path = bundled.resolve_weights(weights)
    from .info import checkpoint_record, readable_rows

    with user_errors(code=2):  # not a (usable) checkpoint: an unusable input
        record = checkpoint_record(path)
    available = bundled.available_weights()
    if as_json:  # plain (no wrapping, no colour) and strict JSON, whatever the metadata holds
        typer.echo(json.dumps(record, indent=2, allow_nan=False))
        return
    from rich.table import Table

    table = Table(title=Text(printable(path.name)), show_header=False, title_justify="left")
    for key, value in readable_rows(record):  # Text: brackets in metadata are not markup
        table.add_row(Text(printable(key)), Text("\n".join(map(printable, value.split("\n")))))
    out.print(table, highlight=False)
    if available:
        out.print("bundled models (--weights NAME):", highlight=False)
        for stem in available:
            described = bundled.describe(stem)
            out.print(f"  {described.short}: {described.use}" if described else f"  {stem}",
                      highlight=False)
        out.print(f"  {bundled.AUTO} (upscale and resize without --weights): "
                  f"{bundled.AUTO_RULE}", highlight=False)


class ExportFormat(str, Enum):
    pth = "pth"
    onnx = "onnx"


# As liif_cli/onnx_export.py's DEFAULT_OPSET and OPSETS (tests/test_onnx.py checks): that
# module is imported only by an ONNX export, so that --help loads neither it nor numpy.
EXPORT_FORMAT_HELP = (  # "\\[" keeps Rich from reading "[onnx]" as markup
    "pth: a slim liif checkpoint; onnx: ONNX graphs of the encoder and decoder, to run "
    "without PyTorch (needs pip install 'liif\\[onnx]'; examples/onnx_upscale.py runs them).")
OPSET_HELP = "ONNX opset of the graphs, 13 to 20 (--format onnx only)."


@app.command()
def export(
    source: Annotated[str, typer.Argument(
        help="Checkpoint to export: a run's last.pth, an official LIIF file, or a bundled name.")],
    target: Annotated[Path, typer.Argument(
        help="The slim weights file to write; with --format onnx, the folder to write "
        "encoder.onnx, decoder.onnx and manifest.json into (new or empty).")],
    kind: Annotated[ExportFormat, typer.Option("--format", help=EXPORT_FORMAT_HELP)]
    = ExportFormat.pth,
    opset: Annotated[int | None, typer.Option(help=OPSET_HELP, show_default="17")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write an inference-only copy of a checkpoint (training state dropped), ready to share,
    or ONNX graphs of it (--format onnx)."""
    with user_errors(code=2):  # no such file or bundled name: a usage error
        path = bundled.resolve_weights(source)
        if kind == ExportFormat.onnx:
            from .onnx_export import DEFAULT_OPSET, check_opset

            opset = check_opset(DEFAULT_OPSET if opset is None else opset)
        elif opset is not None:
            raise LiifError("--opset applies to --format onnx only")
    if kind == ExportFormat.onnx:
        from .onnx_export import export_onnx

        with user_errors():
            done = export_onnx(path, target, opset=opset, overwrite=overwrite)
        graphs = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in done.sizes.items()
                           if name.endswith(".onnx"))
        err.print(f"wrote {target} ({graphs}; {done.family} model, opset {opset})",
                  highlight=False, markup=False, soft_wrap=True)
        return
    from . import checkpoint

    with user_errors():
        ckpt = checkpoint.export(path, target, overwrite)
    size = target.stat().st_size / 1e6
    err.print(f"wrote {target} ({size:.1f} MB, {ckpt.spec.encoder}, "
              f"{ckpt.metadata.get('steps', '?')} steps)", highlight=False, markup=False,
              soft_wrap=True)  # a status line, on stderr like upscale's


@app.command()
def bench(
    data_root: Annotated[Path | None, typer.Option(
        help="Folder holding the sets (NAME/HR/*.png).", show_default="$LIIF_DATA")] = None,
    sets: Annotated[str | None, typer.Option(help="Comma-separated set names.",
                                             show_default="Set5,Set14")] = None,
    scales: Annotated[str | None, typer.Option(
        help="Comma-separated scales.",
        show_default="2,3,4,6,8,12; with --speed 4,12.5")] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = Device.auto,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every number here.")]
    = None,
    save_images: Annotated[Path | None, typer.Option(
        help="Save the model's outputs here, as SET/x4/NAME.png (SET/x4-jpeg75/... with "
             "--degrade jpeg:75).")]
    = None,
    speed: Annotated[bool, typer.Option("--speed", help="Speed benchmark instead of quality.",
                                        metavar=FLAG)]
    = False,
    training: Annotated[bool, typer.Option(
        "--training", help="Training throughput (crops/s) instead of quality.",
        metavar=FLAG)] = False,
    threads: Annotated[str | None, typer.Option(
        help="With --training: comma-separated CPU thread counts.", show_default="1,2")]
    = None,
    batch_size: Annotated[int | None, typer.Option(help="With --training: crops per step.",
                                                   show_default="4")] = None,
    size: Annotated[str | None, typer.Option(help="Speed input size WIDTHxHEIGHT.",
                                                     show_default="512x512")]
    = None,
    repeats: Annotated[int | None, typer.Option(
        help="With --speed or --training: timed repeats (median reported).", min=1,
        show_default="3")] = None,
    max_output_mp: Annotated[float | None, typer.Option(
        help="Time a band of about this many output megapixels (0: all).",
        show_default="0.25 on CPU")]
    = None,
    reference: Annotated[bool, typer.Option(help="Also time the reference decoder.",
                                            metavar=FLAG)] = True,
    tile: Annotated[int | None, typer.Option(help="Engine tile size.", min=0)] = None,
    chunk: Annotated[int | None, typer.Option(help="Engine chunk size.", min=1)] = None,
    precision: Annotated[Precision | None, typer.Option(
        help="Arithmetic: fp32 (the reference), bf16, fp16 (GPU) or auto (bf16 where the CPU "
        "or GPU has bf16 units). --training: bf16 (autocast) or fp32.",
        show_default="fp32; with --training bf16")] = None,
    overwrite: OverwriteOpt = False,
    degrade: Annotated[str | None, typer.Option(
        help="Degrade every LR input first, deterministically per image: jpeg:QUALITY, "
        "webp:QUALITY, noise:SIGMA (Gaussian, 8-bit levels), blur:SIGMA (px), or a chain such as "
        "blur:1+noise:5+jpeg:75.")] = None,
) -> None:
    """Score the model against bicubic and Lanczos, or time it.

    Quality: Y-PSNR and SSIM on benchmark sets. --speed: rendering time.

    --training: training steps per second."""
    from .bench.command import prepare_bench, run_bench

    with user_errors(code=2):  # bad options, data or weights: usage errors
        request = prepare_bench(
            data_root=data_root, sets=sets, scales=scales, weights=weights, device=device.value,
            json_path=json_path, save_images=save_images, speed=speed, size=size,
            repeats=repeats, max_output_mp=max_output_mp, reference=reference, tile=tile,
            chunk=chunk, precision=precision.value if precision else None, overwrite=overwrite,
            training=training, threads=threads, batch_size=batch_size, degrade=degrade, console=out)
    with user_errors():
        run_bench(request)


@app.command()
def train(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, metrics.")],
    data: Annotated[list[Path] | None, typer.Option(
        help="Folder of training images (repeatable); not needed with --resume (the run's "
        "own are used).")] = None,
    val: Annotated[Path | None, typer.Option(help="Folder of HR images to validate on.")]
    = None,
    encoder: Annotated[str, typer.Option(help="edsr-baseline or rdn.")] = "edsr-baseline",
    decoder: Annotated[str, typer.Option(
        help="liif (the paper's MLP) or lmf (the fast model: latent-modulated, about a 40th "
        "of the arithmetic per pixel); with --init from the other family, its encoder is "
        "taken.")] = "liif",
    teacher: Annotated[str | None, typer.Option(
        help="Distil from these weights (bundled name or file): their RGB at the same "
        "queries is a second target, weighted by --distill.")] = None,
    distill: Annotated[float, typer.Option(
        help="Weight of the teacher's L1 in the loss (the ground truth's is 1 - this).")] = 0.0,
    freeze_encoder: Annotated[bool, typer.Option(
        "--freeze-encoder", help="Train the decoder alone (the encoder keeps its --init "
        "weights).", metavar=FLAG)] = False,
    init: Annotated[str | None, typer.Option(
        help="Fine-tune: start from these weights (bundled name or file; their architecture, "
        "a fresh optimiser and lr schedule).")] = None,
    steps: Annotated[int | None, typer.Option(
        help="Training steps. With --resume: leave out to finish the run as planned, or give "
        "more to extend it (the lr schedule then follows the new length).",
        show_default="100000; with --resume the run's")] = None,
    time_budget: Annotated[float | None, typer.Option(
        help="Also end the run after this many seconds; the lr schedule follows whichever "
        "of --steps and the budget ends first.")] = None,
    batch_size: Annotated[int, typer.Option(
        help="Crops per step, in all (under torchrun: split evenly over the ranks).")] = 16,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    lr_schedule: Annotated[str, typer.Option(
        help="step: halve every 20% of the run (the paper); cosine: decay to 0.")] = "step",
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
    val_every: Annotated[int, typer.Option(help="Steps between validations.")] = 2000,
    val_degrade: Annotated[list[str] | None, typer.Option(
        help="Also validate on degraded LR inputs (repeatable; as bench --degrade, e.g. "
        "jpeg:75).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue RUN_DIR/last.pth.",
                                         metavar=FLAG)]
    = False,
    device: Annotated[Device, typer.Option(
        help="Where to train: auto picks cuda, else cpu (mps only when named). A resumed run "
        "keeps its own unless given.")] = Device.auto,
    workers: Annotated[int, typer.Option(
        help="CPU threads (0: torch's default). A resumed run keeps its own unless given.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    ema: Annotated[float, typer.Option(
        help="Keep a moving average of the weights with this decay (e.g. 0.999; 0: off); "
        "it is what validation scores and what checkpoints hold.")] = 0.0,
    amp: Annotated[str, typer.Option(
        help="auto: bf16 autocast on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16), "
        "else fp32; bf16; off (fp32).")] = "auto",
    degradation: Annotated[str, typer.Option(
        help="LR inputs: none (clean bicubic, the paper's) or real (a random chain of blur, "
        "resize, noise and JPEG, once or twice); change ranges with "
        "real:KEY=LO-HI,... e.g. real:jpeg_quality=50-95.")] = "none",
) -> None:
    """Train a LIIF model (self-supervised: random crops, random scale in [1, 4]).

    Under torchrun the ranks train one model with DistributedDataParallel; rank 0 writes
    the checkpoints and metrics and shows the progress.
    """
    if not data and not resume:
        fail("--data is required (except with --resume, which trains on the run's own data)",
             code=2)
    from .train import TrainConfig

    config = TrainConfig(data=[str(d) for d in data or []], out=str(out_dir),
                         val=str(val) if val else None, encoder=encoder, decoder=decoder,
                         teacher=teacher, distill=distill, freeze_encoder=freeze_encoder,
                         steps=steps,
                         time_budget=time_budget, batch_size=batch_size, lr=lr,
                         lr_schedule=lr_schedule,
                         checkpoint_every=checkpoint_every, val_every=val_every,
                         device=device.value, workers=workers, seed=seed, resume=resume, amp=amp,
                         init=init, ema=ema, val_degrade=list(val_degrade or []),
                         degradation=None if degradation.strip().lower() == "none"
                         else degradation, given=_given_options(ctx, {"out_dir": "out"}))
    # Bad options are usage errors, answered before torch is imported; every rank finds the
    # same ones (under torchrun), rank 0 says which.
    with user_errors(code=2, report=os.environ.get("RANK", "0") == "0"):
        config.check_options()
    from . import distributed
    from .train import run_training, train_with_console

    with user_errors():  # each rank that cannot join says why
        distributed.init_from_env(device.value)  # no-op unless started by torchrun
    try:
        main = distributed.is_main()
        with user_errors(report=main):  # errors are raised on every rank; rank 0 says why
            result = train_with_console(config, err) if main else run_training(config)
    finally:
        distributed.cleanup()
    if result.interrupted:
        raise typer.Exit(130)


def _given_options(ctx: typer.Context, renamed: dict[str, str]) -> list[str]:
    """The command's parameters set on its command line (or by environment variable), by
    the name the library calls them (`renamed`: parameter name -> that name)."""
    # By name: Typer's Click is its own (vendored) copy, whose enum cannot be imported.
    return [renamed.get(name, name) for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None)
            in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")]


def version_callback(value: bool) -> None:
    if value:
        out.print(f"liif {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_callback,
                                          is_eager=True, help="Show the version.",
                                          metavar=FLAG)] = False,
) -> None:
    """Upscale images to any size with a Local Implicit Image Function (LIIF)."""
    # Pillow's warnings (decompression bomb, corrupt EXIF, ...) are not for users: what
    # matters is checked and reported by liif itself as one line.
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")


def main() -> None:
    app(prog_name="liif")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
