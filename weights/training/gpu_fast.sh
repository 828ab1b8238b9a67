#!/usr/bin/env bash
# The fast model's GPU checks and a training stage, in one run of about nine minutes on a
# GPU machine that takes uploads of at most 64 MiB and is held for about 15 minutes, start
# included. Run from the repository root there with runs/gpu-data/part1 uploaded
# (python weights/training/gpu_data.py --parts 1 --part-mb 22); results go to $OUT
# (default runs/gpu-out):
#   1. tests/test_gpu.py (both families on CUDA: CPU parity, tiling, half precisions, no
#      host synchronisation in the chunk loop);
#   2. `liif bench --speed --weights fast --device cuda` in fp32, bf16 and fp16 (the
#      README's GPU numbers for the fast model);
#   3. TRAIN_S seconds (default 300) of the fast model's training on CUDA: stage3.py's
#      recipe (the shipped fast weights, encoder frozen, distilled from the default model)
#      at batch 16, its moving average exported to $OUT/fast.pth.
# Benchmark $OUT/fast.pth on the development machine (Kodak24, then Set5/Set14) before
# anything ships. The machine's own python3 holds torch, typer, rich, pillow, numpy and
# imageio: nothing is installed.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
out="${OUT:-runs/gpu-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    2>&1 | tee -a "$out/gpu.txt"

echo "== GPU tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py 2>&1 \
    | tee "$out/tests.log" | tail -5

echo "== fast model speed"
for precision in fp32 bf16 fp16; do
    timeout 60 python3 -m liif_cli bench --speed --weights fast --device cuda \
        --precision "$precision" --size 512x384 --scales 4,12.5 \
        --json "$out/fast_speed_$precision.json" 2>&1 | tee -a "$out/fast_speed.log"
done

echo "== fast model training"
if [ "${TRAIN_S:-300}" -gt 0 ] && [ -d runs/gpu-data/part1 ]; then
    rm -rf runs/fast-gpu
    timeout $(( ${TRAIN_S:-300} + 120 )) python3 -m liif_cli train --out runs/fast-gpu \
        --data runs/gpu-data/part1 --decoder lmf --init weights/liif-edsr-baseline-fast.pth \
        --teacher default --distill 0.5 --freeze-encoder --batch-size 16 --lr 2e-4 \
        --lr-schedule cosine --ema 0.999 --amp bf16 --device cuda --seed 3 \
        --steps 1000000 --time-budget "${TRAIN_S:-300}" --checkpoint-every 2000 \
        2>&1 | tee "$out/fast_train.log" | grep -v "^step" | tail -5
    python3 -m liif_cli export runs/fast-gpu/last.pth "$out/fast.pth" --overwrite
    cp runs/fast-gpu/config.json "$out/fast_config.json"
fi
