#!/usr/bin/env bash
# A short fine-tuning run of the default model on a GPU machine that takes uploads of at
# most 64 MiB (the repository included) and is held for about 15 minutes, start included
# (the checks are weights/training/gpu_checks.sh). Run from the repository root there with
# runs/gpu-data/part* uploaded (weights/training/gpu_data.py); results go to $OUT (default
# runs/gpu-out): phase 5 of the default model's recipe for TRAIN_S seconds, its weights
# exported to $OUT/phase5.pth (a checkpoint with training state is over the 16 MiB a file
# may have on the way back). On an H100 it trains about 30 steps/s at batch 16.
# The machine's own python3 holds torch, typer, rich, pillow, numpy and imageio: nothing is
# installed. For example, in two runs on the same machine:
#   run 1, uploading runs/gpu-data/part1: TRAIN_S=0    (data arrives)
#   run 2, uploading runs/gpu-data/part2: TRAIN_S=240  (trains on both parts)
# Then benchmark $OUT/phase5.pth on the development machine before anything ships.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
out="${OUT:-runs/gpu-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    2>&1 | tee -a "$out/gpu.txt"
if [ "${TRAIN_S:-0}" -gt 0 ] && compgen -G "runs/gpu-data/part*" > /dev/null; then
    du -sh runs/gpu-data/part* | tee "$out/phase5.log"
    PHASE=5 TIME_BUDGET="$TRAIN_S" python3 weights/training/liif-edsr-baseline/train.py 2>&1 \
        | tee -a "$out/phase5.log"
    python3 -m liif_cli export runs/phase5/last.pth "$out/phase5.pth" --overwrite
    cp runs/phase5/config.json "$out/phase5_config.json"
fi
