"""Print the README's "Which model?" table from twelve `liif bench --json` files.

    python weights/training/liif-edsr-baseline-real/which_table.py DIR

DIR holds {default,real}_{none,jpeg75,jpeg90,jpeg95,webp80,noise5}.json, each from
    liif bench --sets Set5,Set14 --scales 4 --weights W [--degrade SPEC] --json F
with SPEC jpeg:75, jpeg:90, jpeg:95, webp:80 or noise:5. Y-PSNR at x4 of bicubic, both models
and the real-photo model's difference to the default.
"""
import json
import sys
from pathlib import Path

CONDITIONS = (("none", "clean"), ("jpeg75", "JPEG quality 75"), ("jpeg90", "JPEG quality 90"),
              ("jpeg95", "JPEG quality 95"), ("webp80", "WebP quality 80"),
              ("noise5", "Gaussian noise, sigma 5"))
SETS = ("Set5", "Set14")


def scores(folder: Path, weights: str, condition: str) -> dict[str, dict]:
    data = json.loads((folder / f"{weights}_{condition}.json").read_text())
    return {e["set"]: e for e in data["results"] if e["scale"] == 4}


folder = Path(sys.argv[1])
head = " | ".join(f"{s} bicubic | {s} default | {s} real | {s} real - default" for s in SETS)
print(f"| LR input (x4) | {head} |")
print("| --- |" + " ---: | ---: | ---: | ---: |" * len(SETS))
for condition, label in CONDITIONS:
    default, real = scores(folder, "default", condition), scores(folder, "real", condition)
    cells = []
    for s in SETS:
        d, r = default[s]["model"]["psnr"], real[s]["model"]["psnr"]
        cells.append(f"{default[s]['bicubic']['psnr']:.2f} | {d:.2f} | {r:.2f} | {r - d:+.2f}")
    print(f"| {label} | " + " | ".join(cells) + " |")
