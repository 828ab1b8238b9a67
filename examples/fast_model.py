"""Make examples/fast-model.png: the bundled sample upscaled x4 and x12 by bicubic, by the
default LIIF model and by the fast model (`--weights fast`), side by side (the README's
picture in "Which model?").

    python examples/fast_model.py [--input examples/sample.png] [--out examples/fast-model.png]

Each method upscales the whole image; the picture shows the same region of each result, one
row per scale. Rendering is fp32, so the picture is the same on every machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from liif_cli.api import Upscaler

HERE = Path(__file__).resolve().parent
SCALES = (4, 12)
REGION = (40, 2, 64, 26)  # (left, top, right, bottom) of the input to show: 24 px square
PANEL = 288  # pixels a side of each panel: the x12 region as rendered, the x4 one enlarged x3
LABEL_HEIGHT = 28


def sheet_for(image: Image.Image) -> Image.Image:
    """One row per scale: the REGION of the bicubic, default and fast results."""
    models = {name: Upscaler.from_pretrained(name, device="cpu", precision="fp32")
              for name in ("default", "fast")}
    rows = []
    for scale in SCALES:
        size = (image.width * scale, image.height * scale)
        row = [(f"bicubic x{scale}", image.resize(size, Image.Resampling.BICUBIC))]
        row += [(f"{name} x{scale}", model.upscale(image, scale=scale))
                for name, model in models.items()]
        rows.append((scale, row))
    width = PANEL * 3 + 8
    sheet = Image.new("RGB", (width, len(rows) * (PANEL + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=18)
    for r, (scale, row) in enumerate(rows):
        y = r * (PANEL + LABEL_HEIGHT)
        box = tuple(v * scale for v in REGION)
        for i, (label, result) in enumerate(row):
            panel = result.convert("RGB").crop(box).resize((PANEL, PANEL),
                                                           Image.Resampling.NEAREST)
            sheet.paste(panel, (i * (PANEL + 4), y + LABEL_HEIGHT))
            draw.text((i * (PANEL + 4) + 6, y + 4), label, fill="black", font=font)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=HERE / "sample.png")
    parser.add_argument("--out", type=Path, default=HERE / "fast-model.png")
    args = parser.parse_args()
    with Image.open(args.input) as image:
        sheet = sheet_for(image.convert("RGB"))
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
