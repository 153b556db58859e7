#!/usr/bin/env bash
# One-shot training of the bundled default on one GPU (H100/H200 class), about 10 minutes in all:
# copies the pristine photos into data/pristine (ignored by git), fine-tunes checkpoints/default with
# `train-rank` on the online stream of ranked series (the diffusion states are made by CPU workers),
# runs the levels test on the test photos (plain kinds, beside BRISQUE and NIQE) and bundles the result
# with that test in its card. Everything it needs is in the repository; it resumes when run again.
#   PHOTOS=../shared/pristine bash scripts/train_default_gpu.sh
# Settings (environment): MINUTES of training (7), STEPS, SERIES per batch (12), WORKERS (CPU cores - 2),
# DEVICE (cuda), KINDS of the levels test (plain), LIMIT photos of it (0: all), OUT (runs/gpu),
# BUNDLE (checkpoints/default; "none" skips bundling), COPY (where the photos go: data/pristine), RECIPE. The test suite runs it on the CPU with tiny settings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PHOTOS=${PHOTOS:-../shared/pristine}
OUT=${OUT:-runs/gpu}
INIT=${INIT:-checkpoints/default}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-7}
STEPS=${STEPS:-100000}
SERIES=${SERIES:-12}
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
KINDS=${KINDS:-plain}
LIMIT=${LIMIT:-0}
BUNDLE=${BUNDLE:-checkpoints/default}
COPY=${COPY:-data/pristine}
# The bundled default's recipe (README, "Results of the bundled default"); its init already has the revived
# VCG head with the local skip, so --revive-vcg is not repeated.
RECIPE=(${RECIPE:---plain-share 0.5 --region-share 0.5 --local-weight 0.5 --lr-backbone 5e-5 --lr-heads 5e-4 --lr-patch-head 5e-3})
EXTRA=(${EXTRA:-})  # more train-rank options (they win over RECIPE), e.g. EXTRA="--crop 64 --kinds blur noise"

mkdir -p "$COPY"
cp -n "$PHOTOS"/* "$COPY"/
$PY -m iqa train-rank --photos "$COPY" --init "$INIT" --out "$OUT/rank" --device "$DEVICE" \
    --steps "$STEPS" --max-minutes "$MINUTES" --series-per-batch "$SERIES" --workers "$WORKERS" \
    --threads 2 --buffer 256 --save-every-min 2 --snapshot-every-min 60 "${RECIPE[@]}" "${EXTRA[@]}"
$PY -m iqa levels --photos "$COPY" --kinds "$KINDS" --limit "$LIMIT" --device "$DEVICE" \
    --checkpoint "DiffV2IQA lite (train-rank)=$OUT/rank/last" --out "$OUT/levels"
if [ "$BUNDLE" != none ]; then
    $PY -m iqa bundle "$OUT/rank/last" --levels "$OUT/levels/levels.json" --out "$BUNDLE"
fi
