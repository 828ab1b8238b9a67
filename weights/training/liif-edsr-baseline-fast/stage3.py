"""Third stage of the fast models: one long cosine from the shipped fast weights, the encoder
frozen, on both cores of the machine.

Run from the repository root, RECIPE=this file, RUN=fast (runs/fast3) or RUN=fast-real
(runs/fast-real3):
    mkdir -p runs/fast3
    RUN=fast nohup .venv/bin/python $RECIPE > runs/fast3/train.log 2>&1 &
Add RESUME=1 to continue a stopped run, AMP=off to train in float32 on a CPU with bf16 units
(as the earlier rounds did on CPUs without them). ROUND=4 (or 5, ...) runs the same stage once more
from the shipped weights, which are then the previous round's result, into runs/fast4 (or
runs/fast-real4) with seed 4; ROUND defaults to 3, this stage as first run.

Why this stage: the first stage's curve (train.py) was still rising when its cosine reached
0, and the second stage (stage2.py) showed that training the encoder gains nothing over
keeping it frozen for the same time. So this stage is the first stage again, from its end,
with a lower peak (2e-4, as stage 2's frozen probe) and the whole of the machine's CPU (both
threads, AdaptiveThreads keeping whichever thread count runs faster), batch 8 so that two
threads have work enough. Autocast is `auto`: bf16 where the CPU has bf16 units, float32
where bf16 would be emulated (slower than float32).

What it gave: run on an otherwise idle 2-core AMD EPYC (Zen 2, AVX2 only, so float32), both
threads (1.15-1.45 s a step, against 2.2-2.8 s on one), 4,940 steps in the 6,600 s budget.
Kodak24 x2 / x4 / x8 dB (the moving average, fp32 rendering): step 3,000 33.35 / 28.30 /
25.63, step 4,940 33.38 / 28.32 / 25.64, from 33.28 / 28.25 / 25.59 (the first stage's end);
the default model, its teacher, 33.51 / 28.41 / 25.73. Shipped as
weights/liif-edsr-baseline-fast.pth (`liif export runs/fast3/last.pth ...`): on Set5 / Set14
x4 31.53 / 28.22 dB, +0.18 / +0.13 over the first stage, 0.28 / 0.14 below default
(bench/fast_clean.json). Config, log and metrics in fast3/.

`fast-real` took the same stage from its first stage's weights (train.py's fast_real: the
real-photo model's degradations, distilled from `real`), on a 2-core AMD EPYC (Zen 3, AVX2
only, so float32), idle but for a one-thread validation of the starting weights in its first
ten minutes, both threads (1.0-1.5 s a step, against 1.9-2.5 s on one): 5,007 steps in the
6,600 s budget. Kodak24 x4 clean / JPEG 75 / noise 5 dB (the moving average, fp32
rendering): step 3,000 28.15 / 27.00 / 27.74, step 5,007 28.17 / 27.01 / 27.76, from 28.11 /
26.99 / 27.71 (the first stage's end, also fp32); `real`, its teacher, 28.26 / 27.04 / 27.82
(bf16 rendering). Shipped as weights/liif-edsr-baseline-fast-real.pth (bench.sh): on Set5 /
Set14 x4 clean 31.27 / 28.02 dB (+0.14 / +0.09), under noise 5 30.40 / 27.55 (+0.10 /
+0.07), under JPEG 75 28.88 / 26.51 (+0.04 / +0.03); 0.24 / 0.12, 0.16 / 0.08 and 0.05 /
0.02 below `real`. Config, log and metrics in fast-real3/.

`fast-real` then took this stage once more from that result (ROUND=4, runs/fast-real4), on
the same kind of CPU, idle: 4,970 steps. Kodak24 x4 clean / JPEG 75 / noise 5: step 3,000
28.19 / 27.02 / 27.77, step 4,970 28.19 / 27.02 / 27.78. Shipped (bench.sh fast-real): on
Set5 / Set14 x4 clean 31.33 / 28.06 dB (+0.07 / +0.04), under noise 5 30.45 / 27.59 (+0.05 /
+0.03), under JPEG 75 28.91 / 26.52 (+0.02 / +0.01); 0.17 / 0.08, 0.11 / 0.05 and 0.03 /
0.01 below `real` (bench/fast-real_*.json). Config, log and metrics in fast-real4/.

`fast` then took this stage once more from its result (ROUND=4, runs/fast4), on an idle
2-core AMD EPYC (Zen 3, AVX2 only, so float32), both threads (mostly 1.1-1.3 s a step,
against 1.9-2.7 s on one): 5,027 steps. Kodak24 x2 / x4 / x8: step 3,000 33.40 / 28.34 /
25.66, step 5,027 33.41 / 28.35 / 25.67. Shipped (bench.sh fast): on Set5 / Set14 x4 31.62 /
28.27 dB (+0.09 / +0.05), 0.19 / 0.09 below default; +0.04 to +0.07 and +0.02 to +0.05 at
the other scales (bench/fast_*.json). Config, log and metrics in fast4/.

`fast` took it once more (ROUND=5, runs/fast5), on the same kind of CPU, both threads (the
machine also ran single-threaded tests for part of the run): 5,096 steps. Kodak24 x2 / x4 /
x8: step 3,000 33.42 / 28.36 / 25.68, step 5,096 33.43 / 28.36 / 25.68. Shipped (bench.sh
fast): on Set5 / Set14 x4 31.66 / 28.29 dB (+0.04 / +0.02), 0.15 / 0.07 below default;
+0.01 to +0.03 at the other scales. Config, log and metrics in fast5/.

`fast` took it once more (ROUND=6, runs/fast6), on the same kind of CPU, both threads (the
machine also ran single-threaded tests for part of the run, and the thread probe kept one
thread for a while then): 4,559 steps. Kodak24 x2 / x4 / x8: step 3,000 33.44 / 28.37 /
25.69, step 4,559 33.44 / 28.37 / 25.69 (33.441 / 28.368 / 25.689, from 33.430 / 28.361 /
25.682). Shipped (bench.sh fast): on Set5 / Set14 x4 31.68 / 28.30 dB (+0.03 / +0.01),
0.12 / 0.06 below default; +0.00 to +0.02 at the other scales. Config, log and metrics in
fast6/.

`fast` took it once more (ROUND=7, runs/fast7), on the same kind of CPU, both threads (the
machine also ran single-threaded tests and other work for part of the run): 4,664 steps.
Kodak24 x2 / x4 / x8: step 3,000 33.444 / 28.371 / 25.692, step 4,664 33.449 / 28.374 /
25.695 (from 33.441 / 28.368 / 25.689). Shipped (bench.sh fast): on Set5 / Set14 x4 31.70 /
28.31 dB (+0.020 / +0.008), 0.102 / 0.050 below default; +0.00 to +0.02 at the other
scales. Config, log and metrics in fast7/.

`fast` took it once more (ROUND=8, AMP=off, runs/fast8) on a 2-core AMD EPYC Zen 5
(AVX512-BF16, trained in float32 all the same), both threads at about 2 steps a second
(one thread for a few minutes at a time while single-threaded tests ran; stopped once with
SIGTERM for speed measurements on the idle machine, then resumed with RESUME=1): 11,649
steps. Kodak24 x2 / x4 / x8: step 3,000 33.452 / 28.378 / 25.699, step 6,000 33.460 /
28.383 / 25.702, step 9,000 33.465 / 28.385 / 25.702, step 11,649 33.467 / 28.386 / 25.703
(from 33.449 / 28.374 / 25.695). Shipped (bench.sh fast): on Set5 / Set14 x4 31.73 / 28.32
dB (+0.028 / +0.016), 0.075 / 0.034 below default; +0.004 to +0.039 at the other scales,
within 0.083 dB of default at every scale and 0.028 under every degradation. Config, log
and metrics in fast8/.
"""
import os
import sys
from pathlib import Path

from liif_cli.train import TrainConfig, run_training

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train as first  # noqa: E402  (the first stage's recipe, beside this file)
from adaptive_threads import recipe_progress  # noqa: E402

ROUND = int(os.environ.get("ROUND", "3"))
STAGE3 = {"freeze_encoder": True, "time_budget": 6600.0, "amp": os.environ.get("AMP", "auto"),
          "lr": 2e-4,
          "batch_size": 8, "val_every": 3000, "seed": ROUND,
          "resume": bool(os.environ.get("RESUME"))}
fast = TrainConfig(**{**first.fast.to_dict(), **STAGE3, "out": f"runs/fast{ROUND}",
                      "init": "weights/liif-edsr-baseline-fast.pth"})
fast_real = TrainConfig(**{**first.fast_real.to_dict(), **STAGE3, "out": f"runs/fast-real{ROUND}",
                           "init": "weights/liif-edsr-baseline-fast-real.pth"})

if __name__ == "__main__":
    config = {"fast": fast, "fast-real": fast_real}[os.environ.get("RUN", "fast")]
    os.environ.setdefault("ADAPTIVE", "1")  # the only run on the machine
    result = run_training(config, recipe_progress())
    print(f"{'interrupted' if result.interrupted else 'done'} at step {result.step}")
