"""Print `liif bench --json` quality results as MODEL_CARD.md's markdown tables.

    python weights/training/liif-edsr-baseline/card_table.py bench.json [LABEL=other.json ...]

The first file is the model the card describes: its full table (PSNR / SSIM beside bicubic
and Lanczos). Each LABEL=FILE after it (e.g. previous=phase2/bench.json, paper=paper.json)
adds a PSNR / SSIM column to a second, side-by-side table, with the difference to it.
"""
import json
import sys
from pathlib import Path


def load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def key(e: dict) -> tuple[str, float]:
    return e["set"], e["scale"]


result = load(sys.argv[1])
others = [(label, load(path)) for label, path in (a.split("=", 1) for a in sys.argv[2:])]

print("| set | scale | LR input | LIIF PSNR / SSIM | bicubic PSNR / SSIM "
      "| Lanczos PSNR / SSIM | gain over bicubic |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
for e in result["results"]:
    source = e["lr_folder"] if e["lr_source"] == "file" else "PIL bicubic from HR"
    m, b, lz = e["model"], e["bicubic"], e["lanczos"]
    print(f"| {e['set']} | x{e['scale']:g} | {source} | {m['psnr']:.2f} / {m['ssim']:.4f} | "
          f"{b['psnr']:.2f} / {b['ssim']:.4f} | {lz['psnr']:.2f} / {lz['ssim']:.4f} | "
          f"{e['gain_psnr']:+.2f} |")
print()
print(f"weights sha256 {result['weights_sha256']}, torch {result['torch_version']}, "
      f"{result['device']}")

if others:
    print()
    head = " | ".join(f"{label} PSNR / SSIM | this - {label}" for label, _ in others)
    print(f"| set | scale | this model PSNR / SSIM | {head} |")
    print("| --- | ---: | ---: |" + " ---: | ---: |" * len(others))
    tables = [{key(e): e["model"] for e in other["results"]} for _, other in others]
    for e in result["results"]:
        m = e["model"]
        cells = []
        for table in tables:
            o = table.get(key(e))
            cells.append("- | -" if o is None else
                         f"{o['psnr']:.2f} / {o['ssim']:.4f} | {m['psnr'] - o['psnr']:+.2f}")
        print(f"| {e['set']} | x{e['scale']:g} | {m['psnr']:.2f} / {m['ssim']:.4f} | "
              + " | ".join(cells) + " |")
