"""Print a `liif bench --json` quality result as MODEL_CARD.md's markdown table.

    python weights/training/liif-edsr-baseline/card_table.py bench.json
"""
import json
import sys
from pathlib import Path

result = json.loads(Path(sys.argv[1]).read_text())
print("| set | scale | LR input | LIIF PSNR / SSIM | bicubic PSNR / SSIM "
      "| Lanczos PSNR / SSIM | gain over bicubic |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
for e in result["results"]:
    source = e["lr_folder"] if e["lr_source"] == "file" else "PIL bicubic from HR"
    scale = f"x{e['scale']:g}"
    m, b, lz = e["model"], e["bicubic"], e["lanczos"]
    print(f"| {e['set']} | {scale} | {source} | {m['psnr']:.2f} / {m['ssim']:.4f} | "
          f"{b['psnr']:.2f} / {b['ssim']:.4f} | {lz['psnr']:.2f} / {lz['ssim']:.4f} | "
          f"{e['gain_psnr']:+.2f} |")
print()
print(f"weights sha256 {result['weights_sha256']}, torch {result['torch_version']}, "
      f"{result['device']}")
