"""Upscale an image with a LIIF or LMF model exported to ONNX: no torch, no liif needed.

    liif export default exported/ --format onnx
    python examples/onnx_upscale.py exported/ in.png out.png --scale 3.7
    python examples/onnx_upscale.py exported/ in.png out.jpg --size 1920x1080

Needs only onnxruntime, numpy and Pillow. EXPORT is the folder `liif export --format onnx`
wrote (or any file in it). It renders like `liif upscale --precision fp32` (same pixels
within one 8-bit level): the output is split into tiles of about --tile input pixels a
side, each encoding only its input window plus the halo of pixels its latents depend on
(the graphs' `liif.halo`), and its pixel centres are decoded --chunk queries at a time;
inputs with a side under 16 pixels are edge-padded along it first, and targets no larger
than the input are Lanczos-resized without the model, as liif does. Writes 8-bit PNG, JPEG
(quality --quality, 4:4:4), WebP or BMP (16-bit inputs are read in full, written in 8 bits);
grayscale stays grayscale and alpha is resampled with a bicubic filter, the colour under
fully transparent pixels first replaced by the nearest visible colours, as liif does, so
that it cannot fringe the edges; JPEG and BMP, which hold no alpha, get the image flattened
onto white first, as liif does. The colour profile is kept where it fits the output.

Like liif, it never writes over its input, refuses an existing output unless --overwrite,
and writes through a temporary file, so a failed run leaves no half-written image. Errors
are one line and exit status 1 (2 for bad options).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageCms, ImageOps

# As liif_cli/api.py: sides shorter than MIN_SIDE are extended by repeating their edge
# pixels (at least PAD_SMALL each end), since the encoder's zero padding dominates them.
MIN_SIDE, PAD_SMALL = 16, 8
EPS_SHIFT = 1e-6  # the ensemble's shift nudge, as liif_cli/model.py
DEFAULT_TILE, DEFAULT_CHUNK = 256, 16384
MIN_TILE = 32  # as liif: smaller tiles re-encode their halo over and over
DEFAULT_MAX_PIXELS = 250_000_000  # as liif upscale --max-pixels
LAYOUT_VERSION = "1"  # of the graphs' inputs and outputs (liif_cli/onnx_export.py)
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp"}


class RunnerError(Exception):
    """A problem to report in one line (exit status 1)."""


@dataclass
class Export:
    """The two ONNX sessions of an export and what tiling needs to know about the model."""

    encoder: ort.InferenceSession
    decoder: ort.InferenceSession
    halo: int  # input pixels a tile's window extends past the latents it reads
    local_ensemble: bool
    family: str


def load_export(path: str | Path, threads: int = 0) -> Export:
    """Open encoder.onnx and decoder.onnx of the export at `path` (its folder or a file in
    it) on ONNX Runtime's CPU provider; `threads` 0 lets ONNX Runtime choose."""
    folder = Path(path)
    if not folder.exists():
        raise RunnerError(f"{folder} does not exist: pass the folder that "
                          "`liif export WEIGHTS OUT --format onnx` wrote")
    folder = folder if folder.is_dir() else folder.parent
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = []
    for name in ("encoder.onnx", "decoder.onnx"):
        if not (folder / name).is_file():
            raise RunnerError(f"{folder} holds no {name}: pass the folder that "
                              "`liif export WEIGHTS OUT --format onnx` wrote")
        try:
            sessions.append(ort.InferenceSession(str(folder / name), options,
                                                 providers=["CPUExecutionProvider"]))
        except Exception as exc:  # ONNX Runtime's own error types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunnerError(f"cannot load {folder / name}: {reason}") from None
    meta = sessions[0].get_modelmeta().custom_metadata_map
    version = meta.get("liif.layout_version")
    if version != LAYOUT_VERSION:
        raise RunnerError(f"{folder} holds an export of layout version {version}; this script "
                          f"reads version {LAYOUT_VERSION} (use the script of the liif that "
                          "wrote it)")
    try:
        spec = json.loads(meta["liif.spec"])
        return Export(sessions[0], sessions[1], int(meta["liif.halo"]),
                      bool(spec["local_ensemble"]), meta["liif.family"])
    except (KeyError, ValueError) as exc:
        raise RunnerError(f"{folder}: the export's description is incomplete ({exc})") from None


# --------------------------------------------------------------------------- geometry


def axis_centres(n: int) -> np.ndarray:
    """(n,) float32 centres of n equal cells spanning [-1, 1], exactly as liif computes them
    (model.axis_centres: float32(-1 + r) + float32(2 r) * i)."""
    r = 1.0 / n
    return np.float32(-1 + r) + np.float32(2 * r) * np.arange(n, dtype=np.float32)


def nearest_latent(coord: np.ndarray, size: int) -> np.ndarray:
    """Index of the latent nearest to float32 coordinates along an axis of `size` latents:
    grid_sample's nearest rule, rounding half to even (exact on float32 positions)."""
    pos = ((coord + 1) * size - 1) / 2  # float32, like the engine
    return np.clip(np.rint(pos), 0, size - 1).astype(np.int64)


def spans(n_in: int, n_out: int, tile: int, halo: int, ensemble: bool,
          first: int, last: int) -> list[tuple[int, int, int, int]]:
    """Tile one axis as liif's engine.plan_tiles does: (out_start, out_stop, in_start,
    in_stop) for output ranges of about `tile` input pixels within [first, last)."""
    step = n_out if tile <= 0 or tile >= n_in else max(1, round(tile * n_out / n_in))
    centres = axis_centres(n_out)
    shifts = (-1, 1) if ensemble else (0,)
    eps = EPS_SHIFT if ensemble else 0.0
    out = []
    for start in range(first, last, step):
        stop = min(start + step, last)
        ends = centres[[start, stop - 1]]
        index = [nearest_latent(np.clip(ends + np.float32(s / n_in + eps), -1 + 1e-6, 1 - 1e-6),
                                n_in) for s in shifts]
        low, high = min(int(i[0]) for i in index), max(int(i[1]) for i in index)
        out.append((start, stop, max(0, low - halo), min(n_in, high + halo + 1)))
    return out


def target_size(in_hw: tuple[int, int], scale: float | None,
                size: tuple[int, int] | None) -> tuple[int, int]:
    """(H', W'): the input times `scale` rounded half up (at least 1), or `size` itself."""
    if size is not None:
        return size
    if scale is None or not math.isfinite(scale) or scale <= 0:
        raise RunnerError(f"scale must be a finite number > 0, got {scale}")
    sides = [n * scale for n in in_hw]
    if max(sides) >= 2**31:
        raise RunnerError(f"an output side of {max(sides):.4g} pixels is too large")
    # Half up, a hair short of a half counting as one (15 x 4.1 = 61.49999999999999), as liif
    return tuple(max(1, math.floor(round(v, 9) + 0.5)) for v in sides)  # type: ignore[return-value]


def edge_padding(n_in: int, n_out: int) -> int:
    """Pixels to add at each end of a short axis (liif_cli/api.py's edge_padding): a whole
    number of output pixels' worth, at least PAD_SMALL; 0 for sides of MIN_SIDE or more."""
    if n_in >= MIN_SIDE:
        return 0
    unit = n_in // math.gcd(n_in, n_out)
    return -(-PAD_SMALL // unit) * unit


# --------------------------------------------------------------------------- rendering


def render(export: Export, rgb: np.ndarray, size: tuple[int, int], *, tile: int = DEFAULT_TILE,
           chunk: int = DEFAULT_CHUNK, out_rows: tuple[int, int] | None = None,
           out_cols: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] -> (H', W', 3) float32 in [0, 1] at `size` = (H', W'),
    or only output rows `out_rows` = (start, stop) and columns `out_cols` of it."""
    in_h, in_w = rgb.shape[:2]
    first, last = out_rows or (0, size[0])
    left, right = out_cols or (0, size[1])
    image = (np.ascontiguousarray(rgb.transpose(2, 0, 1), np.float32)[None] - np.float32(0.5)) \
        / np.float32(0.5)  # (1, 3, H, W), the encoder's input range
    rows = spans(in_h, size[0], tile, export.halo, export.local_ensemble, first, last)
    cols = spans(in_w, size[1], tile, export.halo, export.local_ensemble, left, right)
    row_centres, col_centres = axis_centres(size[0]), axis_centres(size[1])
    cell = np.array([2.0 / size[0], 2.0 / size[1]], np.float32)
    grid = np.array([in_h, in_w], np.int64)
    out = np.empty((last - first, right - left, 3), np.float32)
    for r0, r1, in_r0, in_r1 in rows:
        for c0, c1, in_c0, in_c1 in cols:
            window = np.ascontiguousarray(image[:, :, in_r0:in_r1, in_c0:in_c1])
            state = export.encoder.run(None, {"image": window})[0]  # (1, h, w, C)
            ys, xs = np.meshgrid(row_centres[r0:r1], col_centres[c0:c1], indexing="ij")
            coords = np.stack([ys.ravel(), xs.ravel()], axis=-1)  # (Q, 2), row-major
            offset = np.array([in_r0, in_c0], np.int64)
            pieces = []
            for begin in range(0, coords.shape[0], chunk):
                query = coords[None, begin:begin + chunk]  # (1, q, 2)
                cells = np.broadcast_to(cell, query.shape).copy()
                pieces.append(export.decoder.run(None, {
                    "state": state, "coord": query, "cell": cells, "grid_size": grid,
                    "offset": offset})[0][0])  # (q, 3)
            tile_rgb = np.concatenate(pieces)
            if not np.isfinite(tile_rgb).all():
                raise RunnerError("the model produced NaN or infinite values")
            tile_rgb = tile_rgb * np.float32(0.5) + np.float32(0.5)
            out[r0 - first:r1 - first, c0 - left:c1 - left] = \
                np.clip(tile_rgb, 0, 1).reshape(r1 - r0, c1 - c0, 3)
    return out


def resample_rgb(export: Export, rgb: np.ndarray, size: tuple[int, int], *,
                 tile: int = DEFAULT_TILE, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """What liif's Upscaler.render_rgb does: Lanczos for a target no larger than the input,
    else the model, on an edge-padded copy when a side is under MIN_SIDE pixels."""
    (h, w), (out_h, out_w) = rgb.shape[:2], size
    if out_h <= h and out_w <= w:
        return np.stack([resize_plane(rgb[..., c], size, Image.Resampling.LANCZOS)
                         for c in range(3)], axis=-1)
    pad_h, pad_w = edge_padding(h, out_h), edge_padding(w, out_w)
    if not (pad_h or pad_w):
        return render(export, rgb, size, tile=tile, chunk=chunk)
    # The padded image at the same pixel size; keep the original's pixels (each pad is a
    # whole number of output pixels, so the geometry is exact).
    padded = np.pad(rgb, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)), mode="edge")
    top, left = pad_h * out_h // h, pad_w * out_w // w
    return render(export, padded, (out_h + 2 * top, out_w + 2 * left), tile=tile, chunk=chunk,
                  out_rows=(top, top + out_h), out_cols=(left, left + out_w))


def resize_plane(plane: np.ndarray, size: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    """One float channel resampled to (H', W') by a Pillow filter in float, clipped to [0, 1]."""
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.clip(np.asarray(image.resize((size[1], size[0]), method), np.float32), 0.0, 1.0)


def quantise(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] to uint8, rounding to nearest (NaN to 0), as liif's images.quantise."""
    block = np.clip(np.nan_to_num(values.astype(np.float32), nan=0.0), 0.0, 1.0)
    return np.rint(block * np.float32(255)).astype(np.uint8)


# --------------------------------------------------------------------------- files


def read_rgb(path: Path) -> tuple[np.ndarray, np.ndarray | None, bool, bytes | None]:
    """An image upright, as (H, W, 3) float32 RGB in [0, 1], its alpha (H, W) or None,
    whether it is grayscale, and its ICC profile. 16-bit gray is read in full."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            gray = image.mode in ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "F")
            icc = image.info.get("icc_profile") or None
            if image.mode.startswith("I") or image.mode == "F":  # 16-bit or float gray
                values = np.asarray(image, np.float32)
                if image.mode != "F":
                    values = values / np.float32(65535)
                plane = np.clip(np.nan_to_num(values), 0, 1)
                return np.repeat(plane[..., None], 3, axis=2), None, True, icc
            alpha = image.has_transparency_data
            if image.mode in ("P", "PA") and gray_palette(image):
                gray = True  # a gray image stored with a palette of grays, as liif reads it
            if image.mode == "CMYK" and (icc or b"")[16:20] == b"CMYK":
                image, icc = cmyk_to_srgb(image, icc), None  # as liif: through its profile
            pixels = np.asarray(image.convert("RGBA" if alpha else "RGB"),
                                np.float32) / np.float32(255)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RunnerError(f"cannot read {path}: {exc}") from None
    return pixels[..., :3], (pixels[..., 3] if alpha else None), gray, icc


def gray_palette(image: Image.Image) -> bool:
    """Whether a palette image's colours are all grays."""
    colours = np.asarray(image.getpalette("RGB") or [0, 0, 1], np.uint8).reshape(-1, 3)
    return bool((colours == colours[:, :1]).all())


def cmyk_to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """A CMYK image converted to sRGB through its own CMYK profile, as a colour-managed
    viewer shows it (Pillow's plain conversion ignores the profile); the plain conversion
    where littlecms cannot use the profile."""
    try:
        return ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                         ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:
        return image.convert("RGB")


def output_format(path: Path) -> str:
    """The Pillow format the output's suffix names: PNG, JPEG, WEBP or BMP."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt not in FORMATS:
        raise RunnerError(f"{path}: write .png, .jpg, .webp or .bmp")
    return fmt


def check_output(source: Path, target: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that is the input, that exists (unless
    `overwrite`), or whose folder does not exist."""
    if not target.parent.is_dir():
        raise RunnerError(f"{target}: the folder {target.parent} does not exist")
    if target.exists():
        if target.is_dir():
            raise RunnerError(f"{target} is a folder")
        if os.path.samefile(source, target):
            raise RunnerError(f"{target} is the input: write the output elsewhere")
        if not overwrite:
            raise RunnerError(f"{target} exists (pass --overwrite to replace it)")


def profile_fits(icc: bytes | None, gray: bool) -> bool:
    """Whether an ICC profile describes the output's colours: a gray profile for gray
    output, an RGB one for colour (a CMYK source's profile fits neither)."""
    return icc is not None and icc[16:20] == (b"GRAY" if gray else b"RGB ")


def write_image(path: Path, rgb: np.ndarray, alpha: np.ndarray | None, gray: bool,
                icc: bytes | None, quality: int) -> None:
    """8-bit output in the format of the suffix, written to a temporary file beside it and
    renamed into place; grayscale as the mean of the channels."""
    fmt = output_format(path)
    gray = gray and fmt != "WEBP"
    planes = [rgb.mean(axis=2, keepdims=True) if gray else rgb]
    if alpha is not None and fmt not in ("JPEG", "BMP"):
        planes.append(alpha[..., None])
    pixels = quantise(np.concatenate(planes, axis=2))
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    options: dict[str, object] = {"icc_profile": icc} if profile_fits(icc, gray) else {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "JPEG":
        options["subsampling"] = 0
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            image.save(f, format=fmt, **options)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def window_sums(plane: np.ndarray, radius: int) -> np.ndarray:
    """Each pixel's sum of `plane` over the square of side 2 * radius + 1 around it."""
    (h, w), side = plane.shape, 2 * radius + 1
    t = np.pad(plane, (radius + 1, radius)).cumsum(0).cumsum(1)
    return t[side:, side:] - t[:h, side:] - t[side:, :w] + t[:h, :w]


def fill_hidden_colours(rgb: np.ndarray, alpha: np.ndarray, reach: int = 31) -> np.ndarray:
    """`rgb` with each fully transparent pixel within `reach` pixels of a visible one given
    the mean of the visible (or already filled) colours in the smallest square window (3, 5,
    9, 17, 33 pixels a side) that holds any: liif_cli.api.visible_colours, written again
    here because this script runs without liif."""
    known = alpha > 0
    if known.all() or not known.any():
        return rgb
    out, radius, covered = rgb.copy(), 1, 0
    while covered + radius <= reach and not known.all():
        counts = window_sums(known.astype(np.float64), radius)
        new = ~known & (counts > 0)
        for c in range(3):
            sums = window_sums(np.where(known, out[..., c], 0.0), radius)
            out[..., c][new] = sums[new] / counts[new]
        known |= new
        covered, radius = covered + radius, 2 * radius
    return out


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}")
    return int(match.group(2)), int(match.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="folder written by liif export --format onnx")
    parser.add_argument("input", type=Path, help="image to upscale")
    parser.add_argument("output", type=Path, help="image to write (.png, .jpg, .webp, .bmp)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--scale", "-s", type=float, help="any factor > 0, e.g. 12.5")
    how.add_argument("--size", type=parse_size, help="output size WIDTHxHEIGHT (stretched)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE,
                        help=f"tile size in input pixels, 0 for one tile, else at least "
                             f"{MIN_TILE} (default %(default)s)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help="queries decoded at once (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime threads; 0: its default (one per core)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality, 1-100")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse larger outputs; 0: no limit (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    if args.chunk < 1 or args.tile < 0 or 0 < args.tile < MIN_TILE:
        parser.error(f"--chunk must be at least 1 and --tile 0 or at least {MIN_TILE}")
    if not 1 <= args.quality <= 100 or args.threads < 0:
        parser.error("--quality must be 1-100 and --threads at least 0")
    try:
        upscale_file(args)
    except RunnerError as err:
        raise SystemExit(f"error: {err}") from None
    except MemoryError:
        raise SystemExit("error: out of memory: use a smaller --tile or --chunk") from None
    except OSError as exc:
        raise SystemExit(f"error: cannot write {args.output}: {exc.strerror or exc}") from None
    except Exception as exc:  # ONNX Runtime's own errors (out of memory, a broken graph)
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(f"error: ONNX Runtime failed: {reason}") from None


def upscale_file(args: argparse.Namespace) -> None:
    """The command line's job: every check first, then read, render and write."""
    fmt = output_format(args.output)
    if not args.input.is_file():
        raise RunnerError(f"{args.input}: no such file")
    check_output(args.input, args.output, args.overwrite)
    export = load_export(args.export, args.threads)
    rgb, alpha, gray, icc = read_rgb(args.input)
    size = target_size(rgb.shape[:2], args.scale, args.size)
    if args.max_pixels > 0 and size[0] * size[1] > args.max_pixels:
        raise RunnerError(f"output {size[1]}x{size[0]} has {size[0] * size[1]:,} pixels, above "
                          f"--max-pixels {args.max_pixels:,}")
    if alpha is not None and fmt in ("JPEG", "BMP"):  # flattened onto white, as liif does
        rgb = rgb * alpha[..., None] + (1 - alpha[..., None])
        alpha = None
    colours = rgb if alpha is None else fill_hidden_colours(rgb, alpha)
    out = resample_rgb(export, colours, size, tile=args.tile, chunk=args.chunk)
    if alpha is not None:
        grows = size[0] > alpha.shape[0] or size[1] > alpha.shape[1]
        alpha = resize_plane(alpha, size, Image.Resampling.BICUBIC if grows
                             else Image.Resampling.LANCZOS)
    write_image(args.output, out, alpha, gray, icc, args.quality)
    print(f"wrote {args.output} ({size[1]}x{size[0]}, {export.family} model)", file=sys.stderr)


if __name__ == "__main__":
    main()
