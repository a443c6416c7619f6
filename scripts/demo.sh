#!/usr/bin/env bash
# The README's demo, the whole system end to end on the generated demo world: install, make the
# world with audio, embed the audio, index it, train the ranker with the audio feature, recommend
# for one demo user, evaluate. Outputs go to demo/ (git-ignored; a rerun regenerates them).
# Usage: bash scripts/demo.sh   (DEMO_OUT and DEMO_SEED override the folder and the world seed)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="${DEMO_OUT:-demo}"
SEED="${DEMO_SEED:-0}"
bin=.venv/bin

# the world: KKBox-format CSVs, the true replay probabilities, one 3 s clip per song
rm -rf "$OUT"
"$bin/python" scripts/make_demo_world.py --out "$OUT" --scale demo --seed "$SEED" --audio

# song vectors with the bundled offline encoder (its mid-end channels averaged over time, which
# keep tempo and rhythm that the tag layer drops), then a cosine index over them
"$bin/embed-audio" --manifest "$OUT/audio/manifest.csv" --out "$OUT/embeddings" --encoder musicnn \
  --layer mean_pool
"$bin/build-index" "$OUT/embeddings" --out "$OUT/index"

# the ranker, validated on the last 20 % of train.csv, with and without the audio features
"$bin/train-ranker" "$OUT/data" --index "$OUT/index" --out "$OUT/model"

# a top 10 for the demo user with the most plays, then the evaluation report
user=$("$bin/python" -c "import pandas as pd, sys; \
print(pd.read_csv(sys.argv[1], usecols=['msno'])['msno'].value_counts().index[0])" \
    "$OUT/data/train.csv")
"$bin/rank" --model "$OUT/model" --user "$user" -k 10
"$bin/rank" --model "$OUT/model" --evaluate --report "$OUT/report"

# the Kaggle-format predictions of test.csv
"$bin/rank" --model "$OUT/model" --submission "$OUT/submission.csv"
