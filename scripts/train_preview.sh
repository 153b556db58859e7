#!/usr/bin/env bash
# A reduced version of scripts/train_default.sh that fits a CPU session (about 40 minutes on 2 cores):
# the synthetic set of the first 10 pristine photos (sorted by name), split 7:1:2 by photo, fewer
# diffusion steps and 2 head epochs. It produced the preliminary checkpoints/default.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PRISTINE=${PRISTINE:-../shared/pristine}
DATA=data/synth
SPLIT=data/preview_split.json
$PY -m iqa synth --pristine "$PRISTINE" --out "$DATA" --size 256x256 --crops-per-image 1 --levels 5 --seed 0 --workers 2
$PY - <<'PYEOF'
import csv
rows = list(csv.DictReader(open("data/synth/meta.csv")))
keep = sorted({r["group"] for r in rows})[:10]
with open("data/synth/meta_preview.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(r for r in rows if r["group"] in keep)
PYEOF
[ -f "$SPLIT" ] || $PY -m iqa splits --data "$DATA" --format generic --csv meta_preview.csv --ratios 7:1:2 --count 1 --seed 0 --out "$SPLIT"
$PY -m iqa train-diffusion --data "$DATA" --split-file "$SPLIT" --preset lite --steps 400 --batch 16 --crop 64 \
    --lr 2e-4 --ema 0.99 --save-every 100 --sample-every 200 --out runs/preview-diffusion
$PY -m iqa train --data "$DATA" --format generic --csv meta_preview.csv --split-file "$SPLIT" --preset lite \
    --diffusion runs/preview-diffusion/last --freeze-backbones --crops 1 --epochs 2 --batch 16 --lr 2e-4 \
    --cache data/cache --out runs/preview
