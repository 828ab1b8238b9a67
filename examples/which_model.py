"""Make examples/which-model.png: one JPEG photo upscaled x4 by bicubic, by the default model
and by the real-photo model, side by side (the README's "Which model?" picture).

    python examples/which_model.py [--input examples/photo.jpg] [--out examples/which-model.png]

examples/photo.jpg is a 128x128 crop of Kodak photo kodim08 (released by Kodak for
unrestricted use) saved as a JPEG at quality 75. Each method upscales the whole photo; the
picture shows the same region of each result. Rendering is fp32, so the picture is the
same on every machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from liif_cli.api import Upscaler

HERE = Path(__file__).resolve().parent
SCALE = 4
REGION = (16, 56, 112, 120)  # (left, top, right, bottom) of the input photo to show
LABEL_HEIGHT = 28


def panels(photo: Image.Image) -> list[tuple[str, Image.Image]]:
    """(label, x4 upscale of the whole photo) for bicubic and each bundled model."""
    size = (photo.width * SCALE, photo.height * SCALE)
    results = [("bicubic", photo.resize(size, Image.Resampling.BICUBIC))]
    for label, weights in (("liif default", "default"), ("liif --weights real", "real")):
        upscaler = Upscaler.from_pretrained(weights, device="cpu", precision="fp32")
        results.append((label, upscaler.upscale(photo, scale=SCALE)))
    return results


def side_by_side(results: list[tuple[str, Image.Image]]) -> Image.Image:
    """The REGION of every result in a row, each under its label."""
    left, top, right, bottom = (v * SCALE for v in REGION)
    width, height = right - left, bottom - top
    sheet = Image.new("RGB", (len(results) * width + (len(results) - 1) * 4,
                              height + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=18)
    for i, (label, image) in enumerate(results):
        x = i * (width + 4)
        sheet.paste(image.convert("RGB").crop((left, top, right, bottom)), (x, LABEL_HEIGHT))
        draw.text((x + 6, 4), label, fill="black", font=font)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=HERE / "photo.jpg")
    parser.add_argument("--out", type=Path, default=HERE / "which-model.png")
    args = parser.parse_args()
    with Image.open(args.input) as photo:
        sheet = side_by_side(panels(photo.convert("RGB")))
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
