#!/usr/bin/env bash
# The measurements behind the fast models' model cards and README tables, on an idle machine,
# from the repository root after the runs ended (fast-real: train.py; fast: train.py, then
# stage3.py from its weights):
#     bash weights/training/liif-edsr-baseline-fast/bench.sh
# It exports both runs' weights into weights/ (the moving average their checkpoints hold),
# then benchmarks quality (fp32) and whole-process speed into this folder's bench/.
set -euo pipefail
here=weights/training/liif-edsr-baseline-fast
data=../shared/data/bench
mkdir -p "$here/bench"
liif export runs/fast3/last.pth weights/liif-edsr-baseline-fast.pth --overwrite
liif export runs/fast-real/last.pth weights/liif-edsr-baseline-fast-real.pth --overwrite
for w in fast fast-real; do
  liif bench --data-root $data --sets Set5,Set14 --scales 2,3,4,6,8,12 --weights $w \
    --precision fp32 --json "$here/bench/${w}_clean.json"
done
for spec in jpeg:75 jpeg:90 jpeg:95 webp:80 noise:5; do
  for w in fast fast-real; do
    liif bench --data-root $data --sets Set5,Set14 --scales 4 --weights $w --precision fp32 \
      --degrade $spec --json "$here/bench/${w}_${spec/:/}.json"
  done
done
# Whole-process speed: a 512x384 crop of Kodak photo kodim01 (the validation set), x4 and x12.5.
python -c "from PIL import Image as I; I.open('../shared/data/val/Kodak24/kodak_kodim01.png').crop((0,0,512,384)).save('runs/in512.png')"
python examples/fast_speed.py runs/in512.png --scales 4,12.5 --precisions fp32,bf16 \
  --json "$here/bench/process_speed.json"
liif bench --speed --weights fast --size 512x384 --scales 4,12.5 --precision fp32 \
  --json "$here/bench/engine_speed_fp32.json"
