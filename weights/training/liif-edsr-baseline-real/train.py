"""The training run behind weights/liif-edsr-baseline-real.pth: the default EDSR-baseline LIIF
fine-tuned on degraded LR inputs (`liif train --degradation`), on the project's shared
2-core CPU. Run from the repository root, RECIPE=this file.

The first runs start from the default model's weights (`--init`: fresh Adam, a new cosine
from 1e-4, the lr the default model's phase-3 probes chose for fine-tuning these weights), on the
338-photo training set (../shared/data/train), batch 4, bf16 autocast, a moving average of
the weights (decay 0.999) that checkpoints hold and validation scores. The schedule runs
over a time budget, so the run ends with its lr decayed whenever the budget is spent.
Validation: Kodak24 at x4 with clean, JPEG-75 and noise-5 LR inputs (the conditions the
model is judged on, measured on images it is neither trained nor benchmarked on).

Degradation settings were chosen by measurement: variants ran side by side from the same
start (1 thread each) until their first validation at step 1,500, and the best continued
alone. Kodak24 x4 Y-PSNR, clean / JPEG 75 / noise 5 (the default model: 28.22 / 26.65 /
27.41; bicubic: 26.87 / 26.34 / 26.65):
    full      liif's `real` defaults: Real-ESRGAN-strength blur, resize, noise (sigma up
              to 25) and JPEG (30-95), a second pass half the time.
              Step 1,500: 26.82 / 26.49 / 26.72 -- below the default model on all three
              (it learns to smooth and sharpen what these inputs do not need); stopped.
    moderate  the same chain, milder and less often (ranges below).
              Step 1,500: 27.78 / 26.93 / 27.55.
    light     milder still, mostly JPEG and light noise, little blur; started when `full`
              stopped. Step 1,500: 27.86 / 26.97 / 27.63, above `moderate` on all three
              (which at step 3,000 stood at 27.66 / 26.94 / 27.46); `light` continued alone
              and was stopped at step 7,508 (Kodak24 27.77 / 27.04 / 27.57 at step 7,500),
              whose moving average was the first real-photo model (commit 1ae669c; run
              files in light/, bench results in bench/light/).
    camera    from light's weights, for light's weak spots (Gaussian noise; clean inputs):
              JPEG alone, noise alone and untouched crops come more often, with less blur
              and resizing (see VARIANTS); a cosine from 5e-5 over 6,300 s, 1 thread beside
              the default model's phase 4. Step 1,500: 27.88 / 27.03 / 27.64; at its end,
              step 7,946: 27.98 / 27.03 / 27.69 (clean +0.21, noise +0.12 over light). Its
              moving average was the second real-photo model (commit 686f958); its config,
              log and metrics are in camera/, bench results in bench/camera/.
    camera2   camera's mix again, a second cosine from 5e-5 from camera's weights. Step 1,500:
              27.97 / 27.02 / 27.69, no better than camera's end; stopped at step 1,930.
    camera-clean  camera's mix with more untouched crops (31% of first passes against 21%:
              noise and JPEG each 0.4, resizing 0.05), from camera's weights, a cosine from
              5e-5 over 7,000 s, 1 thread beside the default model's phase 3. Step 1,500:
              28.02 / 27.01 / 27.70 (against camera2's 27.97 / 27.02 / 27.69); stopped at
              step 7,509 (83% of its budget, lr 2.4e-6; step 7,500: 28.09 / 27.02 / 27.71).
              Its moving average was the third real-photo model; its config, log and
              metrics are in camera-clean/ (camera's in camera/).
    from-default  camera-clean's mix in one run from the default model of commit 543d9b6
              (phase 3 at step 40,281), a cosine from 1e-4 over 15,000 steps, 1 thread
              beside the default model's phase 3 (about 1.4 steps/s each). Step 1,500:
              28.18 / 26.90 / 27.76; step 7,500: 28.19 / 27.02 / 27.77, level with or above
              camera-clean's end on all three; its moving average at step 7,559 was the
              fourth real-photo model (commit daf6368; bench results in
              bench/from-default-step7559/). It ran to its end, step 15,000 (12,439 s):
              28.22 / 27.03 / 27.79, whose moving average was the fifth real-photo model
              (sha256 c1b06e5d..., shipped until from-phase7's end; bench results in
              bench/from-default/). Its config, log and metrics are beside this file; its
              checkpoint with training state at step 9,471 is
              weights/training/liif-edsr-baseline-real/last.pth at commit daf6368.
    jpeg-heavier  from the default model at the end of its phase 3 (step 71,457; Kodak24 x4
              28.36 against 28.32 for from-default's start), more JPEG at qualities 50-90 and
              fewer untouched crops (see VARIANTS), a cosine from 1e-4 over 15,000 steps, 1
              thread beside the default model's phase 6. Step 1,500: 28.14 / 26.96 / 27.76;
              step 3,000: 28.11 / 27.01 / 27.73, against from-default's 28.15 / 26.96 / 27.76
              at step 3,000: +0.05 dB on JPEG 75 for -0.05 clean and -0.02 noise 5, a trade
              rather than a gain, far from the +0.17 dB that Set14's JPEG 75 bar still needs;
              stopped at step 3,092.
    from-phase7  from-default's mix and schedule again, from the default model at the end of
              its phase 7 (step 60,000; Kodak24 x4 28.39 against 28.32 for from-default's
              start), on both threads (about 4.5 steps/s), over two sittings (stopped at
              step 9,619 and resumed). Step 1,500: 28.23 / 26.91 / 27.79; step 4,500: 28.21 /
              27.00 / 27.78; step 9,000: 28.25 / 27.03 / 27.81 (from-default at 9,000: 28.20 /
              27.03 / 27.78); its end, step 15,000 (3,450 s): 28.26 / 27.04 / 27.82. Its
              moving average there is weights/liif-edsr-baseline-real.pth, above
              from-default's end at all twelve clean points of Set5 and Set14 and at x4 under
              every degradation benchmarked (bench/; from-default's in bench/from-default/).
              Its config, log and metrics are in from-phase7/; its checkpoint with
              training state at step 9,619 is weights/training/liif-edsr-baseline-real/
              last.pth at commit c26029b.
    jpeg-noise, jpeg-noise-more  from the default model of commit 3a480b1 (phase 11 at
              step 31,431), the conditions the model is judged on more often and untouched
              crops less often (see VARIANTS), a cosine from 1e-4 over 20,000 steps, side by
              side at 1 thread each (about 3.1 steps/s each). Step 3,000 (from-phase7 at
              3,000: 28.20 / 26.97 / 27.78): jpeg-noise 28.09 / 27.04 / 27.78, jpeg-noise-more
              27.96 / 27.06 / 27.73 -- its further 0.02 dB on JPEG 75 cost 0.13 dB clean and
              0.05 dB noise 5, a trade that the clean-input allowance cannot pay for; stopped at
              step 3,480, and jpeg-noise-64 took its place. jpeg-noise went on: step 6,000
              28.14 / 27.07 / 27.79, 9,000 28.18 / 27.08 / 27.79, 12,000 28.20 / 27.08 /
              27.79 (from-phase7 at 12,000: 28.26 / 27.04 / 27.81; the default model it
              started from: 28.41 / 26.62 / 27.38). +0.04 dB on JPEG 75 for -0.06 clean and
              -0.02 noise 5: less JPEG gain than the bar needs and a loss on noise, so it was
              stopped at step 12,362 (lr 3.4e-5) for the probes below.
    jpeg-noise-64  jpeg-noise's mix on 64 px crops (4,096 queries), a cosine from 1e-4 over
              8,000 steps, 1 thread beside jpeg-noise (about 1.6 steps/s). Step 2,000: 28.11 /
              27.02 / 27.80; step 4,000: 28.13 / 27.06 / 27.80, level with jpeg-noise at its
              steps 3,000-6,000 on clean and JPEG 75, +0.01 dB on noise 5, at half the steps
              per second; stopped at step 4,957.
    probe-jpeg75, probe-noise5  what this network reaches on one judged condition when it
              trains on nothing else: every LR crop JPEG'd at exactly quality 75, or given
              Gaussian colour noise of sigma exactly 5; from the same start, a cosine from
              1e-4 over 6,000 steps, side by side at 1 thread each (about 3.0 steps/s, 2,180 s).
              Kodak24 clean / JPEG 75 / noise 5 at steps 2,000, 4,000, 6,000:
                probe-jpeg75  27.89 / 27.09 / 27.64, 27.76 / 27.13 / 27.57, 27.72 / 27.13 / 27.55
                probe-noise5  28.16 / 26.87 / 27.92, 28.10 / 26.88 / 27.93, 28.09 / 26.88 / 27.93
              Not candidates for shipping (each fails the other conditions), but bounds:
              benchmarked at x4 (bench/probe-*), the JPEG-75 specialist is +1.16 dB above the
              default model on Set5 and +0.74 on Set14 under JPEG 75 (the shipped model: +1.01
              / +0.65), at -1.63 / -0.98 dB on clean inputs; the noise specialist is +0.81 /
              +0.50 under noise 5 (shipped: +0.59 / +0.38), at -0.57 / -0.33 clean.
A variant starts with:
    mkdir -p runs/real-<v>
    VARIANT=<v> ADAPTIVE=0 nohup .venv/bin/python $RECIPE > runs/real-<v>/train.log 2>&1 &
(ADAPTIVE=0 keeps 1 thread while two runs share the CPU; a run alone is restarted with
RESUME=1 and ADAPTIVE=1.)
To continue a cut-off run, copy its last.pth into its run folder and set RESUME=1. camera
ran to the end of its time budget and camera-clean to 83% of its own (lr 2.4e-6). light's
checkpoint with training state is weights/training/liif-edsr-baseline-real/last.pth at
commit 1ae669c.
    git show 1ae669c:weights/liif-edsr-baseline-real.pth > runs/real-light.pth
    mkdir -p runs/real-camera
    VARIANT=camera ADAPTIVE=0 nohup .venv/bin/python $RECIPE > runs/real-camera/train.log 2>&1 &
camera2 and camera-clean start from camera's weights (commit 686f958):
    git show 686f958:weights/liif-edsr-baseline-real.pth > runs/real-camera.pth
from-default starts from the default model of commit 543d9b6:
    git show 543d9b6:weights/liif-edsr-baseline.pth > runs/default-40k.pth
from-phase7 starts from the default model whose SHA-256 begins 0ea4507f (phase 7's end):
    git show 3e83f43:weights/liif-edsr-baseline.pth > runs/default-p7.pth
jpeg-noise, jpeg-noise-more, jpeg-noise-64 and the probes start from the default model of
commit 3a480b1 (sha256 6e4d6a0c...):
    git show 3a480b1:weights/liif-edsr-baseline.pth > runs/default-p11.pth
jpeg-heavier starts from runs/p3-71457.pth, made as the default model's recipe shows for its
phases 6 and 7.
Then: liif export runs/real-<variant>/last.pth weights/liif-edsr-baseline-real.pth
"""
import os
import sys
from pathlib import Path

from liif_cli.train import TrainConfig, run_training

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from adaptive_threads import recipe_progress  # noqa: E402

# name: (--degradation spec, time budget in s (None: steps only), initial weights, peak lr)
DEFAULT = "weights/liif-edsr-baseline.pth"
CAMERA_CLEAN = ("real:blur_prob=0.05,blur_sigma=0.2-0.8,resize_prob=0.05,"
                "resize_scale=0.85-1.15,noise_prob=0.4,noise_sigma=1-10,poisson_prob=0.3,"
                "gray_noise_prob=0.3,poisson_scale=0.05-0.8,jpeg_prob=0.4,"
                "jpeg_quality=50-95,second_pass_prob=0.05")
JPEG_NOISE = ("real:blur_prob=0.05,blur_sigma=0.2-0.8,resize_prob=0.05,"
              "resize_scale=0.85-1.15,noise_prob={noise},noise_sigma=1-10,poisson_prob=0.2,"
              "gray_noise_prob=0.3,poisson_scale=0.05-0.8,jpeg_prob={jpeg},"
              "jpeg_quality=60-90,second_pass_prob=0.05")
VARIANTS = {
    "full": ("real", 7_800.0, DEFAULT, 1e-4),
    "moderate": ("real:blur_prob=0.3,blur_sigma=0.2-1.0,resize_prob=0.3,"
                 "resize_scale=0.75-1.25,noise_prob=0.5,noise_sigma=1-12,"
                 "poisson_scale=0.05-1.0,jpeg_prob=0.7,jpeg_quality=40-95,"
                 "second_pass_prob=0.2", 7_800.0, DEFAULT, 1e-4),
    # Started 38 minutes after the other two, with a budget that ends with theirs.
    "light": ("real:blur_prob=0.1,blur_sigma=0.2-0.8,resize_prob=0.2,"
              "resize_scale=0.8-1.2,noise_prob=0.4,noise_sigma=1-10,"
              "poisson_scale=0.05-0.8,jpeg_prob=0.8,jpeg_quality=50-95,"
              "second_pass_prob=0.1", 5_500.0, DEFAULT, 1e-4),
    # From light's weights, for light's weak spots (Gaussian noise; clean inputs). Of the
    # first passes: JPEG without noise 25% (light: 48%), noise without JPEG 25% (8%),
    # Gaussian noise without JPEG 17.5% (4%), untouched 21% (9%); less blur and resizing.
    "camera": ("real:blur_prob=0.05,blur_sigma=0.2-0.8,resize_prob=0.1,"
               "resize_scale=0.85-1.15,noise_prob=0.5,noise_sigma=1-10,poisson_prob=0.3,"
               "gray_noise_prob=0.3,poisson_scale=0.05-0.8,jpeg_prob=0.5,"
               "jpeg_quality=50-95,second_pass_prob=0.05", 6_300.0,
               "runs/real-light.pth", 5e-5),
    # A second cosine over camera's mix, from camera's weights (the shipped real model).
    "camera2": ("real:blur_prob=0.05,blur_sigma=0.2-0.8,resize_prob=0.1,"
                "resize_scale=0.85-1.15,noise_prob=0.5,noise_sigma=1-10,poisson_prob=0.3,"
                "gray_noise_prob=0.3,poisson_scale=0.05-0.8,jpeg_prob=0.5,"
                "jpeg_quality=50-95,second_pass_prob=0.05", 7_800.0,
                "runs/real-camera.pth", 5e-5),
    # camera's mix with more untouched crops (about 31% against 21%): light -> camera
    # raised clean and noise-5 scores while JPEG held, so go further that way.
    "camera-clean": (CAMERA_CLEAN, 7_000.0, "runs/real-camera.pth", 5e-5),
    # camera-clean's mix in one run from the default model of commit 543d9b6 (phase 3 at
    # step 40,281, 0.13 dB above the one light started from on Set5 x4), lr 1e-4 as light's
    # first run from a default model; a schedule over steps alone, so that the run resumes
    # bit-for-bit across stops.
    "from-default": (CAMERA_CLEAN, None, "runs/default-40k.pth", 1e-4),
    # From the default model at the end of its phase 3 (step 71,457): camera-clean's mix with
    # more JPEG (55% of first passes against 40%, at qualities 50-90 instead of 50-95: the
    # upper end, where the default model already does as well, is left out) and so fewer
    # untouched crops (about 24% against 31%).
    "jpeg-heavier": ("real:blur_prob=0.05,blur_sigma=0.2-0.8,resize_prob=0.05,"
                     "resize_scale=0.85-1.15,noise_prob=0.4,noise_sigma=1-10,poisson_prob=0.3,"
                     "gray_noise_prob=0.3,poisson_scale=0.05-0.8,jpeg_prob=0.55,"
                     "jpeg_quality=50-90,second_pass_prob=0.05", None, "runs/p3-71457.pth",
                     1e-4),
    # from-default again, from the default model at the end of its phase 7 (Kodak24 x4 28.39
    # against 28.32 for from-default's start).
    "from-phase7": (CAMERA_CLEAN, None, "runs/default-p7.pth", 1e-4),
    # From the default model of commit 3a480b1 (phase 11 at step 31,431), the conditions the
    # model is judged on more often and untouched crops less often, spending clean-input
    # fidelity on JPEG and noise. jpeg-noise: JPEG 60% of passes at qualities 60-90, noise
    # 50% (Gaussian 80% of it), untouched first passes about 18% (camera-clean: 31%);
    # jpeg-noise-more: JPEG 70%, noise 60%, untouched about 11%.
    "jpeg-noise": (JPEG_NOISE.format(jpeg=0.6, noise=0.5), None, "runs/default-p11.pth", 1e-4),
    "jpeg-noise-more": (JPEG_NOISE.format(jpeg=0.7, noise=0.6), None, "runs/default-p11.pth",
                        1e-4),
    # jpeg-noise on 64 px LR crops with 4,096 queries (the default model's phase 11 gained
    # from them), over 8,000 steps.
    "jpeg-noise-64": (JPEG_NOISE.format(jpeg=0.6, noise=0.5), None, "runs/default-p11.pth",
                      1e-4),
    # Probes of what this network can reach on each judged condition alone: every crop
    # JPEG'd at exactly quality 75, or given Gaussian colour noise of sigma exactly 5.
    "probe-jpeg75": ("real:blur_prob=0,resize_prob=0,noise_prob=0,jpeg_prob=1,"
                     "jpeg_quality=75-75,second_pass_prob=0", None, "runs/default-p11.pth",
                     1e-4),
    "probe-noise5": ("real:blur_prob=0,resize_prob=0,noise_prob=1,poisson_prob=0,"
                     "gray_noise_prob=0,noise_sigma=5-5,jpeg_prob=0,second_pass_prob=0", None,
                     "runs/default-p11.pth", 1e-4),
}
# The rest: 40,000 steps, with their time budget ending first.
STEPS = {"from-default": 15_000, "jpeg-heavier": 15_000, "from-phase7": 15_000,
         "jpeg-noise": 20_000, "jpeg-noise-more": 20_000, "jpeg-noise-64": 8_000,
         "probe-jpeg75": 6_000, "probe-noise5": 6_000}
# The rest: every 1,500 steps.
VAL_EVERY = {"jpeg-noise": 3_000, "jpeg-noise-more": 3_000, "jpeg-noise-64": 2_000,
             "probe-jpeg75": 2_000, "probe-noise5": 2_000}
# The rest: 48 px LR crops with 2,304 queries.
CROPS = {"jpeg-noise-64": {"crop": 64, "samples": 4096}}
variant = os.environ.get("VARIANT", "moderate")
degradation, time_budget, init, lr = VARIANTS[variant]
config = TrainConfig(
    data=["../shared/data/train"],
    out=f"runs/real-{variant}",
    val="../shared/data/val/Kodak24",
    val_scales=[4],
    val_degrade=["jpeg:75", "noise:5"],
    val_every=VAL_EVERY.get(variant, 1500),
    init=init,
    degradation=degradation,
    encoder="edsr-baseline",
    steps=STEPS.get(variant, 40_000),
    time_budget=time_budget,  # full, moderate: about 2 h 10 min, validation included
    batch_size=4,
    lr=lr,
    lr_schedule="cosine",
    ema=0.999,
    amp="bf16",
    checkpoint_every=500,
    device="cpu",
    workers=0,  # threads are managed by AdaptiveThreads
    seed=0,
    resume=bool(os.environ.get("RESUME")),
    **CROPS.get(variant, {}),
)

result = run_training(config, recipe_progress())
print(f"result: step {result.step}/{result.total} interrupted={result.interrupted} "
      f"last_val={result.last_val}", flush=True)
