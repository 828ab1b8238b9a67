"""Pack a subset of the training photos for a GPU machine that takes uploads of at most
64 MiB, the repository's tracked files included (about 40 MB today).

    python weights/training/gpu_data.py [--parts 2] [--part-mb 22]

Shuffles ../shared/data/train's images with a fixed seed, then copies them into
runs/gpu-data/part1, part2, ... (ignored by git), each at most --part-mb megabytes, until
--parts are full. Upload one part per run of weights/training/gpu_run.sh (part1, then
part2): what an earlier run uploaded stays on the machine while it is held. Phase 5 of
the default model's recipe trains on every part that arrived.
"""
import argparse
import random
import shutil
from pathlib import Path

SOURCE = Path("../shared/data/train")
TARGET = Path("runs/gpu-data")
SUFFIXES = {".png", ".jpg", ".jpeg"}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--parts", type=int, default=2)
parser.add_argument("--part-mb", type=float, default=22.0)
args = parser.parse_args()

files = sorted(p for p in SOURCE.iterdir() if p.suffix.lower() in SUFFIXES)
random.Random(0).shuffle(files)
if TARGET.exists():
    shutil.rmtree(TARGET)
budget = int(args.part_mb * 1e6)
part, used, counts = 1, 0, {}
for file in files:
    size = file.stat().st_size
    if size > budget:
        continue
    if used + size > budget:
        part, used = part + 1, 0
        if part > args.parts:
            break
    folder = TARGET / f"part{part}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(file, folder / file.name)
    used += size
    counts[part] = counts.get(part, 0) + 1
for number, count in sorted(counts.items()):
    size = sum(p.stat().st_size for p in (TARGET / f"part{number}").iterdir()) / 1e6
    print(f"{TARGET / f'part{number}'}: {count} photos, {size:.1f} MB")
