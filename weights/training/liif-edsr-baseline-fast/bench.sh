#!/usr/bin/env bash
# The measurements behind the fast models' model cards and README tables, on an idle machine,
# from the repository root after the runs ended (each model: train.py, then stage3.py from
# its weights, once per ROUND):
#     bash weights/training/liif-edsr-baseline-fast/bench.sh [fast|fast-real ...]
# For each model named (both when none is), it exports the weights of its last round
# (runs/fast3, runs/fast4, ...: the highest number) into weights/
# (the moving average the checkpoint holds) and benchmarks quality (fp32) into this folder's
# bench/; with no model named, whole-process and engine speed too.
set -euo pipefail
here=weights/training/liif-edsr-baseline-fast
data=../shared/data/bench
mkdir -p "$here/bench"
for w in ${*:-fast fast-real}; do
  last_run=$(ls -d runs/"$w"[0-9]* 2>/dev/null | sort -V | tail -n 1)
  [ -f "$last_run/last.pth" ] || { echo "bench.sh: no run for model '$w' in runs/" >&2; exit 2; }
  liif export "$last_run/last.pth" "weights/liif-edsr-baseline-$w.pth" --overwrite
  liif bench --data-root $data --sets Set5,Set14 --scales 2,3,4,6,8,12 --weights "$w" \
    --precision fp32 --json "$here/bench/${w}_clean.json" --overwrite
  for spec in jpeg:75 jpeg:90 jpeg:95 webp:80 noise:5; do
    liif bench --data-root $data --sets Set5,Set14 --scales 4 --weights "$w" --precision fp32 \
      --degrade $spec --json "$here/bench/${w}_${spec/:/}.json" --overwrite
  done
done
[ $# -eq 0 ] || exit 0
# Whole-process speed: a 512x384 crop of Kodak photo kodim01 (the validation set), x4 and x12.5.
python -c "from PIL import Image as I; I.open('../shared/data/val/Kodak24/kodak_kodim01.png').crop((0,0,512,384)).save('runs/in512.png')"
python examples/fast_speed.py runs/in512.png --scales 4,12.5 --precisions fp32,bf16 \
  --json "$here/bench/process_speed.json"
liif bench --speed --weights fast --size 512x384 --scales 4,12.5 --precision fp32 \
  --json "$here/bench/engine_speed_fp32.json" --overwrite
