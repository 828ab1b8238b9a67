#!/usr/bin/env bash
# The GPU checks and a short training run, for a GPU machine that takes uploads of at most
# 64 MiB (the repository included) and is held for about 15 minutes, start included. Run
# from the repository root there; results go to $OUT (default runs/gpu-out):
#   1. the GPU tests and `liif bench --speed --device cuda` in fp32, bf16 and fp16 (skipped
#      with CHECKS=0);
#   2. with TRAIN_S > 0 and runs/gpu-data/part* uploaded (weights/training/gpu_data.py),
#      phase 5 of the default model's recipe for TRAIN_S seconds; its weights are exported
#      to $OUT/phase5.pth (a checkpoint with training state is over the 16 MiB a file may
#      have on the way back).
# The machine's own python3 holds torch, typer, rich, pillow, numpy and imageio: nothing is
# installed. For example, in two runs on the same machine:
#   run 1, uploading runs/gpu-data/part1: CHECKS=1 TRAIN_S=0    (checks; data arrives)
#   run 2, uploading runs/gpu-data/part2: CHECKS=0 TRAIN_S=240  (trains on both parts)
# Then benchmark $OUT/phase5.pth on the development machine before anything ships.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
out="${OUT:-runs/gpu-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    2>&1 | tee -a "$out/gpu.txt"
if [ "${CHECKS:-1}" = 1 ]; then
    timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 \
        | tee "$out/gpu_tests.log"
    for precision in fp32 bf16 fp16; do
        timeout 120 python3 -m liif_cli bench --speed --device cuda --precision "$precision" \
            --json "$out/speed_$precision.json" 2>&1 | tee -a "$out/speed.log"
    done
fi
if [ "${TRAIN_S:-0}" -gt 0 ] && compgen -G "runs/gpu-data/part*" > /dev/null; then
    du -sh runs/gpu-data/part* | tee "$out/phase5.log"
    PHASE=5 TIME_BUDGET="$TRAIN_S" python3 weights/training/liif-edsr-baseline/train.py 2>&1 \
        | tee -a "$out/phase5.log"
    python3 -m liif_cli export runs/phase5/last.pth "$out/phase5.pth" --overwrite
    cp runs/phase5/config.json "$out/phase5_config.json"
fi
