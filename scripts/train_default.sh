#!/usr/bin/env bash
# Rebuilds the bundled default checkpoint (checkpoints/default) and docs/RESULTS.md from the 43
# pristine photos: synthetic set (224 x 224, two crops per photo) -> content-disjoint 7:1:2 split by
# photo -> diffusion network (training photos' pairs) -> IQA heads on frozen backbones for the full
# model and three ablations (both crops of the training photos) -> held-out report (both crops of the
# test photos) -> `python -m iqa bundle`, which copies the full model to checkpoints/default with the
# report in its model card (marked provisional there when it fails the report's acceptance checks).
# CPU only; every step resumes where it stopped when the script is run again (re-run the same command
# after an interruption).
#   PRISTINE=../shared/pristine LANES=2 bash scripts/train_default.sh
# Run times on the 2-core CPU machine are in the README (Results of the latest default-checkpoint run).
# LANES=2 runs each training as two torchrun processes of one thread each (on 2 cores: faster than one
# process with two threads); they share the cache filling and each takes half of every batch of 16.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PRISTINE=${PRISTINE:-../shared/pristine}
LANES=${LANES:-1}
DATA=data/synth
SPLIT=data/synth_split.json  # by photo: every crop of a photo is in the same part
COMMON=(--data "$DATA" --format generic --split-file "$SPLIT" --freeze-backbones --no-flip-features --crops 1
        --epochs 2 --lr 1e-4 --workers 0 --cache data/cache)

$PY -m iqa synth --pristine "$PRISTINE" --out "$DATA" --size 224x224 --crops-per-image 2 --levels 5 --seed 0 --workers 2
[ -f "$SPLIT" ] || $PY -m iqa splits --data "$DATA" --format generic --ratios 7:1:2 --count 1 --seed 0 --out "$SPLIT"
$PY -m iqa train-diffusion --data "$DATA" --split-file "$SPLIT" --preset lite --steps 4000 --batch 16 --crop 64 \
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
    --checkpoint runs/lite/best --cache data/cache --crops 1 --out docs/RESULTS.md --json docs/results.json
$PY -m iqa bundle runs/lite/best --report docs/results.json --out checkpoints/default
