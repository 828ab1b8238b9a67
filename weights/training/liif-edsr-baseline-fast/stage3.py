"""Third stage of the fast model: one long cosine from the shipped fast weights, the encoder
frozen, on both cores of the machine.

Run from the repository root, RECIPE=this file:
    mkdir -p runs/fast3
    nohup .venv/bin/python $RECIPE > runs/fast3/train.log 2>&1 &
Add RESUME=1 to continue a stopped run.

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
"""
import os
import sys
from pathlib import Path

from liif_cli.train import TrainConfig, run_training

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train as first  # noqa: E402  (the first stage's recipe, beside this file)
from adaptive_threads import recipe_progress  # noqa: E402

fast = TrainConfig(**{
    **first.fast.to_dict(), "out": "runs/fast3", "init": "weights/liif-edsr-baseline-fast.pth",
    "freeze_encoder": True, "time_budget": 6600.0, "amp": "auto", "lr": 2e-4, "batch_size": 8,
    "val_every": 3000, "seed": 3, "resume": bool(os.environ.get("RESUME"))})

if __name__ == "__main__":
    os.environ.setdefault("ADAPTIVE", "1")  # the only run on the machine
    result = run_training(fast, recipe_progress())
    print(f"{'interrupted' if result.interrupted else 'done'} at step {result.step}")
