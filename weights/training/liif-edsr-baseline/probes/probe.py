"""The learning-rate probes behind phase 3 (see ../train.py): two runs side by side, one
thread each, from phase 2's weights, with the step schedule over 100,000 steps so the lr stays
constant for the probe's length; stopped with SIGTERM after about 730 steps (12 minutes).

    PROBE=1e-4; nohup .venv/bin/python $THIS $PROBE 4 probe_lr$PROBE > runs/probe_lr$PROBE.log &

Their logs are beside this file. (They ran with glibc's allocator set as liif train now sets
it itself: see liif_cli/runtime.py.)
"""
import sys

import torch

from liif_cli.train import TrainConfig, line_progress, run_training

lr, batch, name = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
config = TrainConfig(data=["../shared/data/train"], out=f"runs/{name}",
                     val="../shared/data/val/Kodak24", steps=100_000, batch_size=batch, lr=lr,
                     lr_schedule="step", checkpoint_every=500, val_every=300, device="cpu",
                     workers=1, seed=1, amp="bf16", val_scales=[4], init="runs/phase2.pth")
run_training(config, line_progress(lambda line: print(line, flush=True), every_s=60))
