"""Whole-process speed of the fast model: `liif upscale --weights fast` against
`--weights default`, same input, same precision, each process timed from launch to exit
(start-up, loading, encoding, decoding, saving), as a user waits for it.

    python examples/fast_speed.py in.png --scales 4,12.5 --precisions fp32,bf16 --json out.json

The commands run alternately (default, fast) `--rounds` times per scale and precision; it
prints the median seconds and the speed-up, and the largest 8-bit difference between the two
outputs (the models differ, so this is a sanity check, not a tolerance). bf16 is skipped on
a CPU without bf16 units (`--precision auto` would pick fp32 there). Run it on an otherwise
idle machine. The README's input is a 512x384 crop of Kodak photo kodim01:

    python -c "from PIL import Image as I; I.open('kodim01.png').crop((0,0,512,384)).save('in.png')"
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


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--scales", default="4,12.5")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", help="also write the timings here")
    args = parser.parse_args()

    from liif_cli.runtime import cpu_has_fast_bf16

    precisions = [p for p in args.precisions.split(",") if p != "bf16" or cpu_has_fast_bf16()]
    report = {"input": args.input, "size": Image.open(args.input).size, "rounds": args.rounds,
              "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            for scale in args.scales.split(","):
                seconds: dict[str, list[float]] = {"default": [], "fast": []}
                outputs = {}
                for _ in range(args.rounds):
                    for weights in seconds:
                        outputs[weights] = str(Path(tmp) / f"{weights}.png")
                        seconds[weights].append(timed([
                            sys.executable, "-m", "liif_cli", "upscale", args.input,
                            "--scale", scale, "--weights", weights, "--precision", precision,
                            "-o", outputs[weights], "--overwrite", "--quiet"]))
                median = {k: statistics.median(v) for k, v in seconds.items()}
                diff = int(np.abs(np.asarray(Image.open(outputs["default"]), np.int16)
                                  - np.asarray(Image.open(outputs["fast"]), np.int16)).max())
                entry = {"precision": precision, "scale": float(scale), "seconds": seconds,
                         "median_s": median, "speedup": median["default"] / median["fast"],
                         "max_8bit_difference": diff}
                report["results"].append(entry)
                print(f"{precision} x{scale}: default {median['default']:.1f} s, fast "
                      f"{median['fast']:.1f} s: {entry['speedup']:.1f}x "
                      f"(outputs differ by up to {diff} levels)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
