"""Print the fast models' model-card tables (markdown) from `liif bench --json` results.

    python weights/training/liif-edsr-baseline-fast/card_tables.py [--write]

With --write, each table in the two fast model cards is replaced in place by the one with
the same header line. The tables: clean quality at every scale, each fast model beside the
LIIF model it was distilled from; then x4 under each degradation, the fast pair beside the
LIIF pair. Reads bench/ here and the LIIF models' own bench results (the same protocol, fp32
on the CPU).
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAINING = HERE.parent
WEIGHTS = TRAINING.parent
LIIF_CLEAN = {"fast": TRAINING / "liif-edsr-baseline" / "bench.json",
              "fast-real": TRAINING / "liif-edsr-baseline-real" / "bench" / "real_full.json"}
LIIF_DEGRADED = TRAINING / "liif-edsr-baseline-real" / "bench"  # {default,real}_{spec}.json
SPECS = {"none": "clean", "jpeg75": "JPEG quality 75", "jpeg90": "JPEG quality 90",
         "jpeg95": "JPEG quality 95", "webp80": "WebP quality 80",
         "noise5": "Gaussian noise, sigma 5"}


def psnr_by_point(path: Path) -> dict[tuple[str, float], dict]:
    results = json.loads(path.read_text())["results"]
    return {(e["set"], e["scale"]): e for e in results}


def clean_table(fast: str) -> list[str]:
    ours, theirs = psnr_by_point(HERE / "bench" / f"{fast}_clean.json"), \
        psnr_by_point(LIIF_CLEAN[fast])
    liif = "default" if fast == "fast" else "real"
    lines = [f"| set | scale | {fast} PSNR / SSIM | {liif} PSNR / SSIM | {fast} - {liif} "
             "| bicubic PSNR |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, e in ours.items():
        m, o = e["model"], theirs[key]["model"]
        lines.append(f"| {key[0]} | x{key[1]:g} | {m['psnr']:.2f} / {m['ssim']:.4f} | "
                     f"{o['psnr']:.2f} / {o['ssim']:.4f} | {m['psnr'] - o['psnr']:+.2f} | "
                     f"{e['bicubic']['psnr']:.2f} |")
    return lines


def degraded_table() -> list[str]:
    lines = ["| LR input (x4) | set | default | fast | fast - default | real | fast-real "
             "| fast-real - real |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for spec, label in SPECS.items():
        if spec == "none":
            rows = {w: HERE / "bench" / f"{w}_clean.json" for w in ("fast", "fast-real")}
        else:
            rows = {w: HERE / "bench" / f"{w}_{spec}.json" for w in ("fast", "fast-real")}
        rows.update({w: LIIF_DEGRADED / f"{w}_{spec}.json" for w in ("default", "real")})
        points = {w: psnr_by_point(p) for w, p in rows.items()}
        for name in ("Set5", "Set14"):
            v = {w: points[w][(name, 4.0)]["model"]["psnr"] for w in points}
            lines.append(f"| {label} | {name} | {v['default']:.2f} | {v['fast']:.2f} | "
                         f"{v['fast'] - v['default']:+.2f} | {v['real']:.2f} | "
                         f"{v['fast-real']:.2f} | {v['fast-real'] - v['real']:+.2f} |")
    return lines


def replace_table(card: str, table: list[str]) -> str:
    """The card with its table whose header line is table[0] replaced by table."""
    lines = card.split("\n")
    if table[0] not in lines:
        raise SystemExit(f"card_tables.py: no table headed {table[0]!r} in the card")
    start = lines.index(table[0])
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[:start] + table + lines[end:])


if __name__ == "__main__":
    tables = {"fast": clean_table("fast"), "fast-real": clean_table("fast-real")}
    degraded = degraded_table()
    if "--write" not in sys.argv[1:]:
        for table in (*tables.values(), degraded):
            print("\n".join(table) + "\n")
        raise SystemExit(0)
    for name, clean in tables.items():
        card_path = WEIGHTS / f"MODEL_CARD-{name}.md"
        card = replace_table(replace_table(card_path.read_text(), clean), degraded)
        card_path.write_text(card)
        print(f"updated {card_path}")
