#!/usr/bin/env bash
# Rebuilds the bundled default checkpoint (checkpoints/default) and docs/RESULTS.md from the 43
# pristine photos: synthetic set (224 x 224, two crops per photo) -> content-disjoint 7:1:2 split by
# photo -> diffusion network (on the training photos' pairs, both crops) -> IQA heads on frozen
# backbones for the full model and three ablations (first crop of each photo) -> held-out report.
# CPU only; every step resumes where it stopped when the script is run again (re-run the same command
# after an interruption).
#   PRISTINE=../shared/pristine LANES=2 bash scripts/train_default.sh
# Run times on the 2-core CPU machine are in docs/RESULTS.md's header and the README. The checkpoint
# is copied to checkpoints/default only when every acceptance check of the report passes.
# LANES=2 runs each training as two torchrun processes of one thread each (on 2 cores: faster than one
# process with two threads); they share the cache filling and each takes half of every batch of 16.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PRISTINE=${PRISTINE:-../shared/pristine}
LANES=${LANES:-1}
DATA=data/synth
PAIRS_SPLIT=data/synth_split.json   # all crops: the diffusion network's training pairs
SPLIT=data/synth_c0_split.json      # first crop of each photo: IQA training and the report
COMMON=(--data "$DATA" --format generic --split-file "$SPLIT" --freeze-backbones --no-flip-features --crops 1
        --epochs 4 --lr 1e-4 --workers 0 --cache data/cache)

$PY -m iqa synth --pristine "$PRISTINE" --out "$DATA" --size 224x224 --crops-per-image 2 --levels 5 --seed 0 --workers 2
awk -F, 'NR == 1 || $2 ~ /_c0\.png$/' "$DATA/meta.csv" > "$DATA/meta_c0.csv"  # column 2 = ref
[ -f "$PAIRS_SPLIT" ] || $PY -m iqa splits --data "$DATA" --format generic --ratios 7:1:2 --count 1 --seed 0 --out "$PAIRS_SPLIT"
[ -f "$SPLIT" ] || $PY -m iqa splits --data "$DATA" --format generic --csv "$DATA/meta_c0.csv" --ratios 7:1:2 \
    --count 1 --seed 0 --out "$SPLIT"
$PY -m iqa train-diffusion --data "$DATA" --split-file "$PAIRS_SPLIT" --preset lite --steps 4000 --batch 16 --crop 64 \
    --lr 3e-4 --ema 0.999 --sample-every 1000 --out runs/diffusion

if [ "$LANES" -gt 1 ]; then  # one thread per process; --batch is per process
    export OMP_NUM_THREADS=1
    train() { $PY -m torch.distributed.run --standalone --nproc_per_node "$LANES" -m iqa train "${COMMON[@]}" \
        --batch $((16 / LANES)) "$@"; }
else
    train() { $PY -m iqa train "${COMMON[@]}" --batch 16 "$@"; }
fi
train --preset lite --diffusion runs/diffusion/last --out runs/lite
train --preset lite:vda-only --diffusion runs/diffusion/last --out runs/lite-vda-only
train --preset lite:no-diffusion --out runs/lite-no-diffusion
train --preset lite:vcg-only --diffusion runs/diffusion/last --out runs/lite-vcg-only
$PY -m iqa report --split-file "$SPLIT" --split-index 0 \
    --method "DiffV2IQA lite"=runs/lite --method "VCG only"=runs/lite-vcg-only \
    --method "VDA only"=runs/lite-vda-only --method "no diffusion (MANIQA-like)"=runs/lite-no-diffusion \
    --checkpoint runs/lite/best --cache data/cache --crops 1 --out docs/RESULTS.md --json docs/results.json \
    --require-checks || { echo "checkpoints/default left as it is (see docs/RESULTS.md)" >&2; exit 1; }
mkdir -p checkpoints/default
cp runs/lite/best/model.safetensors runs/lite/best/config.json runs/lite/best/card.json checkpoints/default/
