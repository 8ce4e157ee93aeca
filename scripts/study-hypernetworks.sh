#!/usr/bin/env bash
# The sanity comparison of docs/hypernetworks.md: the hypernetwork rate policy, pFedHN
# and FedL2P against the tuned uniform rate on Synthetic(1,1) (logistic regression and a
# one-hidden-layer MLP), every variant's client rate tuned by the same grid at the same
# budget, 10 paired seeds; then the same pair uniform / hypernetwork policy with
# normalisation off. Writes the two studies under $OUT (default runs/study-hypernetworks)
# and $OUT-normalize-off: results.md (the tables quoted in the docs), differences.csv,
# summary.json, plot.svg and every run's metrics.jsonl (the learned rates per client and
# group); then prints the spread of the learned rates (scripts/hypernetworks_rates.py).
#
# Usage: scripts/study-hypernetworks.sh [OUT]
# Needs the release binary (cargo build --release -p fedpace); no data to fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/study-hypernetworks}
BIN=${FEDPACE_BIN:-${CARGO_TARGET_DIR:-target}/release/fedpace}
"$BIN" study examples/tune/study-hypernetworks.toml --out "$OUT" --force
"$BIN" study examples/tune/study-hypernetworks-normalize-off.toml --out "$OUT-normalize-off" --force
python3 scripts/hypernetworks_rates.py "$OUT"
python3 scripts/hypernetworks_rates.py "$OUT-normalize-off"
echo "tables: $OUT/results.md $OUT-normalize-off/results.md"
