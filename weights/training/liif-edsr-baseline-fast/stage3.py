"""Third stage of the fast model: one long cosine from the shipped fast weights, the encoder
frozen, on both cores of the machine.

Run from the repository root, RECIPE=this file:
    mkdir -p runs/fast3
    nohup .venv/bin/python $RECIPE > runs/fast3/train.log 2>&1 &
Add RESUME=1 to continue a stopped run.

Why this stage: the first stage's curve (train.py) was still rising when its cosine reached
0, and the second stage (stage2.py) showed that training the encoder gains nothing over
keeping it frozen for the same time. So this stage is the first stage again, from its end,
with a lower peak (2e-4, as stage 2's frozen probe) and the whole of a sitting's CPU (both
threads, AdaptiveThreads keeping whichever thread count runs faster), batch 8 so that two
threads have work enough. Autocast is `auto`: bf16 where the CPU has bf16 units, float32
where bf16 would be emulated (slower than float32).
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
