"""The training runs behind weights/liif-edsr-baseline-fast.pth (`--weights fast`) and
weights/liif-edsr-baseline-fast-real.pth (`--weights fast-real`): the fast model (LMF, a
latent-modulated decoder) on the encoders of the two LIIF models. Run from the repository
root, RECIPE=this file:
    mkdir -p runs/fast runs/fast-real
    RUN=fast nohup .venv/bin/python $RECIPE > runs/fast/train.log 2>&1 &
    RUN=fast-real nohup .venv/bin/python $RECIPE > runs/fast-real/train.log 2>&1 &
Add RESUME=1 to continue a stopped run.

Both keep their LIIF's encoder frozen (the fast model's encoder is exactly the LIIF model's)
and train the latent MLP and render MLP alone: the first latent convolution starts from the
LIIF's first-layer projection of the unfolded latent, the rest from scratch. The loss mixes
the ground truth and the LIIF model's own RGB at the same queries (distillation), half each.
`fast` trains on clean bicubic downscales like the default model; `fast-real` on the
degradations of the real-photo model (from-phase7's mix), with `real` as init and teacher.

Choices, by measurement on Kodak24 (two probes from `default`, 1 thread each side by side,
batch 4, cosine from 2e-4 over a 420 s time budget, render width 16 and 3 modulated
layers): ground truth alone (distill 0) reached x2/x4/x8 31.23/27.16/24.85 dB in 1,757
steps, the teacher alone (distill 1) 31.19/27.14/24.84 in 1,128 steps (the teacher's
decoder makes a step 1.55x as long): per step the teacher's targets teach more, per second
the two are level, so the runs take half of each. Both probes were far below the teacher
(33.51/28.41/25.73) and still rising quickly: the runs use a higher learning rate (5e-4)
and as long a schedule as the time budget allows.

Both runs ran side by side on a 2-core AMD EPYC (AVX512-BF16), one thread each, bf16
autocast, a cosine over a 6,000 s time budget of run time (validation included), at times
sharing the CPU with tests (about 1.5 to 2.5 steps/s each): `fast` ended at step 11,710,
`fast-real` at 11,739. Their checkpoints hold the moving average of the weights, which is
what ships (`liif export runs/fast/last.pth weights/liif-edsr-baseline-fast.pth`, likewise
fast-real; both now ship from a second stage, stage3.py, trained from these weights);
config, log and metrics are in fast/ and fast-real/.
Kodak24 (bf16 rendering, the moving average), x2 / x4 / x8:
    fast      step 3,000 30.05 / 26.67 / 24.57, 6,000 32.56 / 27.86 / 25.32,
              9,000 33.23 / 28.22 / 25.57, 11,710 33.28 / 28.25 / 25.59
    default (the teacher) 33.51 / 28.41 / 25.73
x4 clean / JPEG 75 / noise 5:
    fast-real step 3,000 26.65 / 26.09 / 26.44, 6,000 27.84 / 26.86 / 27.49,
              9,000 28.08 / 26.97 / 27.69, 11,739 28.11 / 26.99 / 27.71
    real (the teacher) 28.26 / 27.04 / 27.82
The curves were still rising as the learning rate reached 0: a longer schedule (or a
second cosine from these weights) is the next step. At step 3,000 the moving average was
below bicubic while the weights being trained were above it (x4 on 6 of the photos: 27.46
against 27.77 dB): early on the weights move too fast for a 0.999 average.
"""
import os
import sys
from pathlib import Path

from liif_cli.train import TrainConfig, run_training

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from adaptive_threads import recipe_progress  # noqa: E402

REAL_DEGRADATION = {  # weights/training/liif-edsr-baseline-real/from-phase7/config.json
    "second_pass_prob": 0.05, "blur_prob": 0.05, "blur_size": [3, 11],
    "blur_sigma": [0.2, 0.8], "anisotropic_prob": 0.5, "resize_prob": 0.05,
    "resize_scale": [0.85, 1.15], "noise_prob": 0.4, "poisson_prob": 0.3,
    "gray_noise_prob": 0.3, "noise_sigma": [1.0, 10.0], "poisson_scale": [0.05, 0.8],
    "jpeg_prob": 0.4, "jpeg_quality": [50, 95]}

fast = TrainConfig(
    data=["../shared/data/train"],
    out="runs/fast",
    val="../shared/data/val/Kodak24",
    decoder="lmf",  # ModelSpec defaults: latent MLP 256, 256; render MLP 16 wide, 5 layers
    init="default",
    teacher="default",
    distill=0.5,
    freeze_encoder=True,
    steps=100_000,
    time_budget=6000.0,
    batch_size=4,
    lr=5e-4,
    lr_schedule="cosine",
    ema=0.999,
    amp="bf16",
    checkpoint_every=500,
    val_every=3000,
    val_scales=[2, 4, 8],
    device="cpu",
    workers=1,
    seed=0,
    resume=bool(os.environ.get("RESUME")),
)
fast_real = TrainConfig(
    **{**fast.to_dict(), "out": "runs/fast-real", "init": "real", "teacher": "real",
       "degradation": REAL_DEGRADATION, "val_scales": [4], "val_degrade": ["jpeg:75", "noise:5"]}
)

if __name__ == "__main__":
    config = {"fast": fast, "fast-real": fast_real}[os.environ.get("RUN", "fast")]
    os.environ.setdefault("ADAPTIVE", "0")  # two runs side by side, one thread each
    result = run_training(config, recipe_progress())
    print(f"{'interrupted' if result.interrupted else 'done'} at step {result.step}")
