#!/usr/bin/env bash
# Every check a GPU machine can answer, in one run of about six minutes (results to $OUT,
# default runs/gpu-out). Run from the repository root with runs/gpu-data/part1 uploaded
# (python weights/training/gpu_data.py --parts 1 --part-mb 12):
#   1. the whole test suite, tests/test_gpu.py included;
#   2. `liif bench --speed --device cuda` in fp32, bf16 and fp16 (512x512, x4 and x12.5);
#   3. the engine's chunk size on CUDA, bf16, x12.5, around the default (2^18 queries);
#   4. whole-process `liif upscale` of the bundled sample, x4, on CUDA and on the CPU;
#   5. training steps per second on CUDA (batch 16, 48 px crops, bf16 autocast), and two
#      steps under torchrun (one rank, NCCL).
# The machine's own python3 holds torch, typer, rich, pillow, numpy and imageio.
# Results of an H100 are in weights/training/gpu-h100/.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
out="${OUT:-runs/gpu-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    2>&1 | tee -a "$out/gpu.txt"

echo "== tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider -rs tests 2>&1 | tee "$out/tests.log" \
    | tail -25

echo "== speed"
for precision in fp32 bf16 fp16; do
    timeout 100 python3 -m liif_cli bench --speed --device cuda --precision "$precision" \
        --json "$out/speed_$precision.json" 2>&1 | tee -a "$out/speed.log"
done

echo "== chunk sweep (bf16, x12.5, no reference)"
for chunk in 65536 262144 1048576 4194304; do
    echo "chunk $chunk"
    timeout 60 python3 -m liif_cli bench --speed --device cuda --precision bf16 \
        --scales 12.5 --no-reference --chunk "$chunk" 2>&1 | tee -a "$out/chunks.log" \
        | grep -E "MP/s|12.5"
done

echo "== whole process, x4 of examples/sample.png"
for device in cuda cpu; do
    echo "$device" | tee -a "$out/process.txt"
    { time python3 -m liif_cli upscale examples/sample.png --scale 4 \
        -o "/tmp/sample_$device.png" --overwrite --device "$device" > /dev/null; } 2>&1 \
        | tee -a "$out/process.txt"
done

echo "== training on CUDA"
rm -rf /tmp/train-cuda /tmp/train-ddp
timeout 90 python3 -m liif_cli train --out /tmp/train-cuda --data runs/gpu-data/part1 \
    --device cuda --batch-size 16 --steps 100000 --time-budget 45 \
    --checkpoint-every 100000 2>&1 | tail -4 | tee "$out/train.log"
timeout 90 torchrun --standalone --nproc_per_node 1 -m liif_cli train --out /tmp/train-ddp \
    --data runs/gpu-data/part1 --device cuda --batch-size 16 --steps 2 2>&1 \
    | tail -5 | tee "$out/torchrun.log"
