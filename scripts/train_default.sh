#!/usr/bin/env bash
# Rebuilds the bundled default checkpoint (checkpoints/default) and docs/RESULTS.md from the 43
# pristine photos: synthetic set -> content-disjoint 7:1:2 split -> diffusion network -> IQA heads on
# frozen backbones (full model and three ablations) -> held-out report. CPU only; every step
# resumes where it stopped when the script is run again (re-run the same command after an interruption).
#   PRISTINE=../shared/pristine bash scripts/train_default.sh
# On the 2-core CPU machine (no GPU) the steps after the synthetic set took about 2 h 15 min with
# LANES=2 (README, "Results of the first default-checkpoint run"). The checkpoint is copied to
# checkpoints/default only when every acceptance check in docs/RESULTS.md says yes.
# LANES=2 runs the ablations beside the main model, one thread each (on 2 cores: faster overall).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PRISTINE=${PRISTINE:-../shared/pristine}
LANES=${LANES:-1}
DATA=data/synth
SPLIT=data/synth_split.json
COMMON=(--data "$DATA" --format generic --split-file "$SPLIT" --freeze-backbones --no-flip-features --crops 1
        --epochs 3 --batch 16 --lr 3e-4 --cache data/cache)

$PY -m iqa synth --pristine "$PRISTINE" --out "$DATA" --size 256x256 --crops-per-image 1 --levels 5 --seed 0 --workers 2
[ -f "$SPLIT" ] || $PY -m iqa splits --data "$DATA" --format generic --ratios 7:1:2 --count 1 --seed 0 --out "$SPLIT"
$PY -m iqa train-diffusion --data "$DATA" --split-file "$SPLIT" --preset lite --steps 4000 --batch 16 --crop 64 \
    --lr 3e-4 --ema 0.999 --sample-every 1000 --out runs/diffusion

[ "$LANES" -gt 1 ] && export OMP_NUM_THREADS=1  # one thread per lane when lanes run side by side
train() { $PY -m iqa train "${COMMON[@]}" "$@"; }
if [ "$LANES" -gt 1 ]; then
    train --preset lite:no-diffusion --out runs/lite-no-diffusion &
    lane=$!
    train --preset lite --diffusion runs/diffusion/last --out runs/lite
    wait "$lane"
    train --preset lite:vda-only --diffusion runs/diffusion/last --out runs/lite-vda-only &
    lane=$!
    train --preset lite:vcg-only --diffusion runs/diffusion/last --out runs/lite-vcg-only
    wait "$lane"
else
    train --preset lite --diffusion runs/diffusion/last --out runs/lite
    train --preset lite:no-diffusion --out runs/lite-no-diffusion
    train --preset lite:vcg-only --diffusion runs/diffusion/last --out runs/lite-vcg-only
    train --preset lite:vda-only --diffusion runs/diffusion/last --out runs/lite-vda-only
fi
$PY -m iqa report --split-file "$SPLIT" --split-index 0 \
    --method "DiffV2IQA lite"=runs/lite --method "VCG only"=runs/lite-vcg-only \
    --method "VDA only"=runs/lite-vda-only --method "no diffusion (MANIQA-like)"=runs/lite-no-diffusion \
    --checkpoint runs/lite/best --cache data/cache --crops 1 --out docs/RESULTS.md --json docs/results.json \
    --require-checks || { echo "checkpoints/default left as it is (see docs/RESULTS.md)" >&2; exit 1; }
mkdir -p checkpoints/default
cp runs/lite/best/model.safetensors runs/lite/best/config.json runs/lite/best/card.json checkpoints/default/
