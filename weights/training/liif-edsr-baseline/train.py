"""The training runs behind weights/liif-edsr-baseline.pth (EDSR-baseline LIIF), on the
project's shared 2-core CPU. Run from the repository root, RECIPE=this file.

Phase 1 (run folder runs/default): from scratch, 26,000 steps, cosine from
1.5e-4 (time budget 10,000 s, extended from 6,653 s at step 3,000). It ended at Set5 x4
30.88 dB (validation); its weights shipped at commit cba354a, its checkpoint with training
state is weights/training/liif-edsr-baseline/last.pth at that commit. Log, metrics, config
and bench results: phase1/.
    mkdir -p runs/default && nohup .venv/bin/python $RECIPE > runs/default/train.log 2>&1 &
Phase 2 (run folder runs/phase2): a warm restart. Fine-tunes phase 1's weights
(`liif train --init`: fresh Adam, a new cosine from 1e-4) for a 2 h 15 min time budget (set
from 7,200 s at step 1,076), on the 80 Sun-Hays photos the training folder held then. Its
checkpoint with training state is weights/training/liif-edsr-baseline/last.pth at commit
2df1362; its log, metrics, config and bench results are in phase2/.
    mkdir -p runs/phase2 && git show cba354a:weights/liif-edsr-baseline.pth > runs/phase1.pth
    PHASE=2 nohup .venv/bin/python $RECIPE > runs/phase2/train.log 2>&1 &
Phase 3 (run folder runs/phase3): fine-tunes phase 2's weights on the 338-photo training set
(about 407 megapixels; ../shared/data/train, see its SOURCES.md), validating on Kodak24
instead of Set5, with a cosine from 1e-4 over 80,000 steps (about 8 h of this CPU, meant to
be resumed over several sittings) and a moving average of the weights (decay 0.999), which
is what the checkpoint holds and validation scores, so the run leaves usable weights
whenever it stops.
    mkdir -p runs/phase3 && git show 2df1362:weights/liif-edsr-baseline.pth > runs/phase2.pth
    PHASE=3 nohup .venv/bin/python $RECIPE > runs/phase3/train.log 2>&1 &
Choices, by measurement: lr 1e-4 over 2e-4 from two probe runs from phase 2's weights
(probes/: batch 4, 1 thread each, side by side, constant lr; Kodak24 x4 Y-PSNR at steps
300/600: 28.046/28.110 at 1e-4, 28.057/28.080 at 2e-4, both after the dip that a fresh Adam
state causes, from 28.213 for phase 2's weights). Batch 4 as in phases 1-2, not probed: on
this CPU the crops per second do not grow with the batch, so a larger batch only means
fewer updates. Validation every 4,000 steps: it renders Kodak24 at x2, x4 and x8 (bf16),
about 2.5 minutes on the shared CPU.
Phase 3 ran first on a 2-core AMD EPYC (AVX512-BF16, no AMX) shared with development work,
at about 1.7 steps/s; its weights at step 8,074 (the moving average) shipped as the default.
It was resumed from step 12,133, on one thread beside the real-photo model's runs (about 1.3
steps/s) to step 22,656, then alone on two (2.6 steps/s), and stopped at step 24,410 (lr
7.9e-5). Resumed again on two threads (about 2.4 steps/s, with tests and benchmarks at times
beside it), it reached step 40,281 (lr 5.0e-5), whose moving average shipped as the default,
and went on to step 44,009. From there it ran on one thread beside the real-photo model's
`from-default` run (about 1.4 steps/s each; ADAPTIVE=0) to step 54,366 (lr 2.3e-5), whose
moving average shipped as the default, and went on to step 56,265 (lr 2.1e-5). Resumed
beside `from-default` to its end (step 63,963), then alone on two threads (about 2.5
steps/s), it reached step 64,000 (lr 9.6e-6), whose moving average shipped as the default,
and went on to step 71,457 (lr 2.8e-6), where it was stopped for good: its curve was flat,
and its moving average there, benchmarked, was worse than step 64,000's at Set5 and Set14 x8
(-0.008 and -0.004 dB; phase3/bench_step71457.json), so phases 6 and 7 (below) go on from it
instead. Its checkpoint with training state is weights/training/liif-edsr-baseline/last.pth
at commit 140553c. Kodak24 x2/x4/x8 of its moving average: 33.16/28.21/25.59 dB at the
start, 33.22/28.24/25.62 at step 12,000, 33.23/28.25/25.62 at 16,000, 33.27/28.27/25.63 at
20,000, 33.28/28.28/25.65 at 24,000, 33.31/28.29/25.65 at 28,000, 33.33/28.30/25.65 at
32,000, 33.35/28.30/25.66 at 36,000, 33.37/28.32/25.66 at 40,000, 33.39/28.33/25.67 at
44,000, 33.40/28.34/25.67 at 48,000 and at 52,000, 33.41/28.34/25.68 at 56,000,
33.42/28.35/25.69 at 60,000, 33.43/28.36/25.68 at 64,000, 33.43/28.36/25.68 at 68,000 (phase
4: 33.29/28.26/25.62).
To continue a cut-off run, copy its last.pth into its run folder and set RESUME=1 (the run
keeps its saved settings), e.g. phase 7 from its step 32,701, whose checkpoint with training
state is weights/training/liif-edsr-baseline/last.pth at commit b262216:
    mkdir -p runs/phase7
    git show b262216:weights/training/liif-edsr-baseline/last.pth > runs/phase7/last.pth
    PHASE=7 RESUME=1 nohup .venv/bin/python $RECIPE >> runs/phase7/train.log 2>&1 &
Phase 4 (run folder runs/phase4): anneals phase 3. Its moving average at step 12,133 is
fine-tuned (fresh Adam) with a cosine from 5e-5 to 0 over a 7,500 s time budget.
    liif export weights/training/liif-edsr-baseline/last.pth runs/phase3.pth  # at 1ae669c
    mkdir -p runs/phase4 && PHASE=4 nohup .venv/bin/python $RECIPE > runs/phase4/train.log 2>&1 &
It shared the CPU with the real-photo model's `camera` run from step 548 on, 1 thread each
(PHASE=4 RESUME=1 ADAPTIVE=0), and ended at step 10,410 (Kodak24 x2/x4/x8 33.29/28.26/25.62
dB, against 33.22/28.24/25.62 at its start). Its weights were the default (better than
phase 3's step 8,074, the default before, at every scale of Set5 and Set14) until phase 3's
moving average at step 40,281 beat them at every scale, step 54,366 beat step 40,281 and
step 64,000 beat step 54,366 the same way, phase 7's step 28,000 beat step 64,000, and
phase 7's end (step 60,000) beat step 28,000 at 11 of 12 points (level at Set14 x12, -0.003
dB), phase 8's end beat phase 7's end at 8 of 12 points and was level within 0.0015 dB at the
other four (Set5 x4 31.766 against 31.752), and phase 11's step 31,431 beat phase 8's end at
all 12 points (+0.014 to +0.059 dB; Set5 x4 31.803); the shipped weights are the export of
phase 11's last.pth at step 31,431, benchmarked in bench.json beside this file (phase 8's
end: phase8/bench.json; phase 7's end: phase7/bench_step60000.json). Phase 4's config,
log, metrics and benches (fp32 and bf16) are in phase4/; phase3/ holds the benches of
phase 3's step 8,074 (bench.json), step 22,656 (x4), step 40,281, step 54,366, step 64,000
and step 71,457.
Phases 6 and 7 (run folders runs/phase6, runs/phase7) start from phase 3's moving average
at step 71,457:
    git show 140553c:weights/training/liif-edsr-baseline/last.pth > runs/p3-71457-state.pth
    liif export runs/p3-71457-state.pth runs/p3-71457.pth
    mkdir -p runs/phase7 && PHASE=7 nohup .venv/bin/python $RECIPE > runs/phase7/train.log 2>&1 &
Phase 6 ran on one thread beside the real-photo model's `jpeg-heavier` probe (about 1.5
steps/s each) to step 3,083, then alone on two (about 2.5 steps/s); its config, log and
metrics are in phase6/. Phase 7 ran alone on two threads (2.5 to 4.4 steps/s) to its end,
step 60,000, in 20,113 s; Kodak24 x2/x4/x8 of its moving average: 33.42/28.36/25.69 at step
4,000, 33.42/28.35/25.68 at 8,000, 33.44/28.36/25.68 at 12,000, 33.43/28.36/25.68 at 16,000,
33.45/28.37/25.68 at 20,000, 33.45/28.38/25.69 at 24,000, 33.45/28.38/25.70 at 28,000,
33.46/28.37/25.69 at 32,000, 33.46/28.37/25.70 at 36,000, 33.47/28.38/25.70 at 40,000,
33.47/28.38/25.70 at 44,000, 33.48/28.39/25.70 at 48,000, 52,000, 56,000 and 60,000.
Benchmarked against phase 3's step 64,000: step 24,000 below at Set5 x8 (-0.006 dB), steps
28,000 and 30,788 above at all 12 points; step 28,000, best at Set5 x4 (31.750 dB), shipped.
Against step 28,000, steps 48,000 and 60,000 were above at 11 of 12 points and level at
Set14 x12 (-0.003 dB); the end of the schedule, step 60,000 (Set5 x4 31.752, Set14 x4
28.337), shipped (phase7/bench_step*.json). Its config, log and metrics are in phase7/.
Phases 8-10 start from phase 7's end (runs/default-p7.pth: `liif export` of its last.pth,
the default weights of SHA-256 0ea4507f..., in git at commit 3e83f43):
    git show 3e83f43:weights/liif-edsr-baseline.pth > runs/default-p7.pth
    mkdir -p runs/phase8
    PHASE=8 ADAPTIVE=0 nohup .venv/bin/python $RECIPE > runs/phase8/train.log 2>&1 &
Phase 11 starts from phase 8's end: liif export runs/phase8/last.pth runs/p8-5000.pth (or
take the default weights of SHA-256 75ef8e93..., in git at commit 436e17a:
git show 436e17a:weights/liif-edsr-baseline.pth > runs/p8-5000.pth).
Then: liif export runs/<run>/last.pth weights/liif-edsr-baseline.pth --overwrite

On a shared 2-core box, 2 oneDNN threads collapse (10x slower) when another process runs;
1 thread degrades gracefully. AdaptiveThreads probes 1 vs 2 threads every few hundred
steps and keeps the faster (speed only; it makes the run non-bit-exact across thread counts).
"""
import os
import sys
from pathlib import Path

from liif_cli.train import TrainConfig, line_progress, run_training

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from adaptive_threads import recipe_progress  # noqa: E402

phase1 = TrainConfig(
    data=["../shared/data/train"],
    out="runs/default",
    val="../shared/data/bench/Set5/HR",
    encoder="edsr-baseline",  # ModelSpec() defaults: 16 resblocks, 64 feats, MLP 4x256
    steps=26_000,
    batch_size=4,
    lr=1.5e-4,
    lr_schedule="cosine",
    amp="bf16",  # ~2.2x the fp32 step rate on the Xeon (AMX) of phases 1-2
    checkpoint_every=1000,  # ~4 min
    val_every=3250,  # ~13 min; full Set5 x2/x4/x8 takes ~20 s
    device="cpu",
    workers=0,  # threads are managed by AdaptiveThreads
    seed=0,
    resume=bool(os.environ.get("RESUME")),
)
phase2 = TrainConfig(
    **{**phase1.to_dict(), "out": "runs/phase2", "init": "runs/phase1.pth",
       "steps": 40_000, "time_budget": 8100.0, "lr": 1e-4}
)
# Phase 3: 338 photos (407 MP, 25x phase 2's data), validation on Kodak24 instead of Set5,
# a long cosine schedule meant to be resumed over several sittings, and a moving average of
# the weights (decay 0.999, about the last 1,000 steps) so that the checkpoint holds usable
# weights at any point of it. lr 1e-4 from a probe (see the model card); batch 4 as before.
phase3 = TrainConfig(
    **{**phase1.to_dict(), "out": "runs/phase3", "init": "runs/phase2.pth",
       "val": "../shared/data/val/Kodak24", "val_every": 4000, "checkpoint_every": 1000,
       "steps": 80_000, "lr": 1e-4, "ema": 0.999, "time_budget": None}
)
# Phase 4: the annealing of phase 3. Phase 3's curve was flat at its peak lr (Kodak24 x4
# 28.22 at step 4,000 and 8,000, 28.24 at 12,000, lr still 9.5e-5), so its moving average at
# step 12,133 is fine-tuned with a cosine from half that lr to 0 over a 7,500 s time budget.
phase4 = TrainConfig(
    **{**phase3.to_dict(), "out": "runs/phase4", "init": "runs/phase3.pth",
       "lr": 5e-5, "time_budget": 7500.0}
)
# Phase 6 (a probe): phase 3's moving average at step 71,457 (lr 2.8e-6, its Kodak24 curve
# flat since step 64,000) fine-tuned on scales drawn from [2, 4] instead of [1, 4], so that
# x4 and the scales beyond it get twice the training density they had; fresh Adam, a gentle
# cosine from 2e-5 over 9,000 steps, validation every 1,500 steps to see what x2 gives up for
# it. Kodak24 x2/x4/x8 against phase 3's step 68,000 (33.428/28.355/25.678): step 1,500
# 33.425/28.361/25.688, step 3,000 33.424/28.367/25.689, step 4,500 33.419/28.359/25.684,
# step 6,000 33.420/28.360/25.689. It moves quality from x2 (-0.01 dB) to x8 (+0.01) and
# leaves x4 level (+0.00 to +0.01), so it was stopped at step 6,143 and not shipped.
phase6 = TrainConfig(
    **{**phase3.to_dict(), "out": "runs/phase6", "init": "runs/p3-71457.pth",
       "scale_min": 2.0, "steps": 9_000, "lr": 2e-5, "val_every": 1500,
       "checkpoint_every": 500}
)
# Phase 7: a second long cosine over phase 3's end (its moving average at step 71,457), on
# the paper's scales [1, 4] (phase 6 found no gain at x4 from [2, 4]). The gains of phase 3
# came slowly over a long schedule (Kodak24 x4 +0.12 dB from step 12,000 to 64,000), so more
# of the same: peak lr 5e-5, half phase 3's, so that the restart moves the annealed weights
# less far (not probed; phase 3's probes found 2e-4 worse than 1e-4 from trained weights).
# 60,000 steps: about 7 h of this CPU alone, resumed over several sittings.
phase7 = TrainConfig(
    **{**phase3.to_dict(), "out": "runs/phase7", "init": "runs/p3-71457.pth",
       "steps": 60_000, "lr": 5e-5}
)
# Phases 8 and 9 (probes, side by side on one thread each): a short anneal of phase 7's end
# (the shipped weights, runs/default-p7.pth) on larger crops, 64x64 LR pixels with 4,096
# queries (phase 8), against the same anneal on phase 7's 48x48 crops (phase 9, the control).
# Every training crop so far was 48x48, so nearly every latent saw the zero padding at the
# crop's edge through the encoder's 33-pixel receptive field; larger crops give more latents
# the context they have inside a whole photo. A gentle cosine from 2e-5 over 5,000 steps.
# Kodak24 x2/x4/x8 (start: phase 7's end, 33.478/28.386/25.701):
#   step    phase 8 (64 px)         phase 9 (48 px)         phase 10 (48 px, shrunk, below)
#   1,250   33.471/28.389/25.703    33.477/28.383/25.701    33.472/28.384/25.702
#   2,500   33.475/28.389/25.704    33.476/28.378/25.697    33.465/28.384/25.710
#   3,750   33.480/28.394/25.706    33.478/28.380/25.698    33.466/28.383/25.709
#   5,000   33.484/28.396/25.705    33.477/28.379/25.697    33.467/28.384/25.708
# The anneal alone (phase 9) ends a little below its start; on 64 px crops it ends above
# both its start (+0.006/+0.011/+0.004) and the control (+0.007/+0.017/+0.009). Phase 8 ran
# on one thread beside phase 9 or 10 and a benchmark (about 1.2 steps/s, 4,196 s), phase 9
# at about 2.2 steps/s (2,737 s); their config, log and metrics are in phase8/ and phase9/.
phase8 = TrainConfig(
    **{**phase7.to_dict(), "out": "runs/phase8", "init": "runs/default-p7.pth",
       "crop": 64, "samples": 4096, "steps": 5_000, "lr": 2e-5, "val_every": 1250,
       "checkpoint_every": 500}
)
phase9 = TrainConfig(
    **{**phase8.to_dict(), "out": "runs/phase9", "crop": 48, "samples": 2304}
)
# Phase 10 (a probe beside phase 9, the same anneal): every HR crop cut from its photo shrunk
# by a random factor in [1, 2] (antialiased bicubic), so it holds up to twice the detail per
# pixel. Against the paper's own weights, the shipped model's gap on Set5 and Set14 is
# largest on images of sharp, high-contrast edges (x4: butterfly -1.08 dB, monarch -1.04,
# bird -0.79, ppt3 -0.70, zebra -0.52) and smallest on smooth ones (head -0.05, bridge
# -0.06, baby -0.15), which points at the training photos holding too few sharp edges per
# pixel. Result (table above; phase10/): it moves quality from x2 (-0.010 dB against phase
# 9's end) to x8 (+0.012) and leaves x4 about level (+0.004), like phase 6's scales from
# [2, 4]; not taken further.
phase10 = TrainConfig(
    **{**phase9.to_dict(), "out": "runs/phase10", "shrink_max": 2.0}
)
# Phase 11: a long cosine on phase 8's 64x64 crops (4,096 queries), from phase 8's end
# (runs/p8-5000.pth): phase 8 ended above both its control (phase 9) and its start on
# Kodak24, so more of it, at phase 7's peak lr over phase 7's length. About 2.5 steps/s
# alone on this CPU: 40,000 steps are about 4.5 h, resumed over several sittings.
# Kodak24 x2/x4/x8 (phase 8's end: 33.484/28.396/25.705):
#   step 4,000 33.477/28.394/25.707, 8,000 33.476/28.397/25.718, 12,000 33.487/28.405/25.709,
#   16,000 33.493/28.398/25.719, 20,000 33.501/28.404/25.722, 24,000 33.509/28.406/25.722,
#   28,000 33.516/28.413/25.719, 32,000 33.514/28.410/25.726, 36,000 33.517/28.409/25.722.
# It ran alone on two threads (about 2.6 to 2.9 steps/s). Its moving average at step 31,431
# (lr 5.6e-6, 11,436 s), benchmarked, beat phase 8's end at all 12 points and shipped; the
# run went on to step 36,000 (lr 1.2e-6, 13,012 s) and stopped there: from step 28,000 on
# its Kodak24 scores held level within 0.007 dB, so the last 4,000 steps were left unrun.
# Its checkpoint with training state at step 34,465 is weights/training/liif-edsr-baseline/
# last.pth (resuming it repeats steps 34,466-36,000 bit for bit); config, log and metrics
# to step 36,000 in phase11/.
#     mkdir -p runs/phase11
#     git show 436e17a:weights/liif-edsr-baseline.pth > runs/p8-5000.pth
#     cp weights/training/liif-edsr-baseline/last.pth runs/phase11/
#     PHASE=11 RESUME=1 nohup .venv/bin/python $RECIPE >> runs/phase11/train.log 2>&1 &
phase11 = TrainConfig(
    **{**phase8.to_dict(), "out": "runs/phase11", "init": "runs/p8-5000.pth",
       "steps": 40_000, "lr": 5e-5, "val_every": 4000, "checkpoint_every": 1000}
)
# Phase 12 (a probe): phase 8's gentle anneal (cosine from 2e-5 over 5,000 steps) from the
# shipped weights (phase 11's step 31,431, runs/default-p11.pth), on 96x96 crops with 9,216
# queries. From 48 to 64 px, phase 8 gained +0.017 dB at x4 on Kodak24 over its control; at
# 96 px, 56% of the latents lie within the encoder's reach of the crop's zero padding
# instead of 75% at 64 px. Photos under 384 px a side (36 of 338) are too small for x4 at
# this crop and are skipped. Alone on two threads, about 1.33 steps/s.
# Result: no gain. Kodak24 x2/x4/x8 (bf16, liif_cli.train.validation.validate of the
# exported weights; the shipped weights: 33.5117/28.4105/25.7269): step 1,250
# 33.517/28.413/25.725, 2,500 33.516/28.410/25.726, 3,750 33.515/28.411/25.723, and the
# moving average at step 3,865 (lr 2.4e-6, where the run was stopped) 33.5158/28.4110/25.7239.
# Phase 11's long run on 64 px crops had already taken what larger crops give. Config, log
# and metrics in phase12/; not shipped.
#     mkdir -p runs/phase12
#     git show eb5dc26:weights/liif-edsr-baseline.pth > runs/default-p11.pth
#     PHASE=12 nohup .venv/bin/python $RECIPE > runs/phase12/train.log 2>&1 &
phase12 = TrainConfig(
    **{**phase8.to_dict(), "out": "runs/phase12", "init": "runs/default-p11.pth",
       "crop": 96, "samples": 9216}
)
phase = os.environ.get("PHASE", "1")
if phase == "5":
    # Phase 5: the current default weights fine-tuned on a GPU for a few minutes
    # (weights/training/gpu_run.sh runs it there). Batch 16 and lr 1e-4,
    # the paper's settings (not probed: no GPU run yet), a cosine to 0 over
    # TIME_BUDGET seconds, on the photos that weights/training/gpu_data.py packed into
    # runs/gpu-data/part* (a subset: an upload is at most 64 MiB). No validation there:
    # the exported weights are benchmarked here before they ship.
    parts = sorted(str(p) for p in Path("runs/gpu-data").glob("part*"))
    config = TrainConfig(
        **{**phase4.to_dict(), "out": "runs/phase5", "init": "weights/liif-edsr-baseline.pth",
           "data": parts, "device": os.environ.get("DEVICE", "cuda"), "batch_size": 16,
           "lr": 1e-4, "val": None,
           "checkpoint_every": 2000, "time_budget": float(os.environ.get("TIME_BUDGET", 240)),
           "resume": bool(os.environ.get("RESUME"))})
    progress = line_progress(lambda line: print(line, flush=True), every_s=15)
else:
    config = {"1": phase1, "2": phase2, "3": phase3, "4": phase4, "6": phase6,
              "7": phase7, "8": phase8, "9": phase9,
              "10": phase10, "11": phase11, "12": phase12}[phase]
    progress = recipe_progress()
result = run_training(config, progress)
print(f"result: step {result.step}/{result.total} interrupted={result.interrupted} "
      f"last_val={result.last_val}", flush=True)
