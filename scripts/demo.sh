#!/usr/bin/env bash
# The README's demo: install, generate the demo world, train the ranker, print the results.
# Outputs go to demo/ (git-ignored); a second run regenerates them. Usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="${DEMO_OUT:-demo}"
SEED="${DEMO_SEED:-0}"
bin=.venv/bin

# the world: KKBox-format CSVs with the true replay probabilities
"$bin/python" scripts/make_demo_world.py --out "$OUT" --scale demo --seed "$SEED"

# the ranker, validated on the last 20 % of train.csv, refit on all of it
"$bin/train-ranker" "$OUT/data" --out "$OUT/model"

# the Kaggle-format predictions of test.csv
"$bin/rank" --model "$OUT/model" --submission "$OUT/submission.csv"
