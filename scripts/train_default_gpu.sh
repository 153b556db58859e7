#!/usr/bin/env bash
# One-shot training of the bundled default on one GPU (H100/H200 class), about 10 minutes in all:
# copies the training part of the pristine photos' split into data/pristine-train (ignored by git),
# fine-tunes checkpoints/default with `train-rank` on the online stream of ranked series (CPU workers
# distort and label, the GPU makes the diffusion states and trains), keeps a snapshot every SNAPSHOT
# minutes, runs the levels test on the test photos (plain kinds, beside BRISQUE and NIQE) and bundles
# the last checkpoint with that test in its card. Everything it needs is in the repository; run again,
# it resumes.
#   PHOTOS=../shared/pristine bash scripts/train_default_gpu.sh
# Where PHOTOS is not a folder (a GPU machine that holds only the copied training photos), it trains
# only; test and bundle on a machine with the photos, e.g. after choosing a snapshot on `levels --part val`.
# Settings (environment): MINUTES of training (7), STEPS, SERIES per batch (12), WORKERS (CPU cores - 2),
# DEVICE (cuda), DIFFUSION_IN (trainer; workers: the CPU workers make the states too), SNAPSHOT minutes (2),
# KINDS of the levels test (plain), LIMIT photos of it (0: all), OUT (runs/gpu), BUNDLE
# (checkpoints/default; "none" skips bundling), COPY (where the photos go: data/pristine-train), RECIPE,
# EXTRA. The test suite runs it on the CPU with tiny settings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PHOTOS=${PHOTOS:-../shared/pristine}
OUT=${OUT:-runs/gpu}
INIT=${INIT:-checkpoints/default}
DEVICE=${DEVICE:-cuda}
DIFFUSION_IN=${DIFFUSION_IN:-trainer}
MINUTES=${MINUTES:-7}
STEPS=${STEPS:-100000}
SERIES=${SERIES:-12}
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
SNAPSHOT=${SNAPSHOT:-2}
KINDS=${KINDS:-plain}
LIMIT=${LIMIT:-0}
BUNDLE=${BUNDLE:-checkpoints/default}
COPY=${COPY:-data/pristine-train}
# The bundled default's recipe (README, "Results of the bundled default"); its init already has the revived
# VCG head with the local skip, so --revive-vcg is not repeated.
RECIPE=(${RECIPE:---plain-share 0.5 --region-share 0.5 --local-weight 0.5 --lr-backbone 5e-5 --lr-heads 5e-4 --lr-patch-head 5e-3})
EXTRA=(${EXTRA:-})  # more train-rank options (they win over RECIPE), e.g. EXTRA="--crop 64 --kinds blur noise"

if [ -d "$PHOTOS" ]; then  # only the training part travels: the held-out photos stay where they are
    $PY - "$PHOTOS" "$COPY" <<'PYEOF'
import shutil, sys
from pathlib import Path
from iqa.data.stream import StreamConfig, training_photos
dst = Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for p in training_photos(StreamConfig(photos=sys.argv[1])):
    if not (dst / p.name).exists():
        shutil.copy2(p, dst / p.name)
PYEOF
fi
$PY -m iqa train-rank --photos "$COPY" --part all --init "$INIT" --out "$OUT/rank" --device "$DEVICE" \
    --diffusion-in "$DIFFUSION_IN" --steps "$STEPS" --max-minutes "$MINUTES" --series-per-batch "$SERIES" \
    --workers "$WORKERS" --threads 2 --buffer 256 --save-every-min 2 --snapshot-every-min "$SNAPSHOT" \
    "${RECIPE[@]}" "${EXTRA[@]}"
if [ ! -d "$PHOTOS" ]; then
    echo "no photo folder PHOTOS=$PHOTOS here: trained only; test with 'python -m iqa levels --photos DIR" \
         "--checkpoint NAME=$OUT/rank/last' and bundle with 'python -m iqa bundle' where the photos are"
    exit 0
fi
$PY -m iqa levels --photos "$PHOTOS" --kinds "$KINDS" --limit "$LIMIT" --device "$DEVICE" \
    --checkpoint "DiffV2IQA lite (train-rank)=$OUT/rank/last" --out "$OUT/levels"
if [ "$BUNDLE" != none ]; then
    $PY -m iqa bundle "$OUT/rank/last" --levels "$OUT/levels/levels.json" --out "$BUNDLE"
fi
