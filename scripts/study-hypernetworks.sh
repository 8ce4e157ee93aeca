#!/usr/bin/env bash
# The sanity comparison of docs/hypernetworks.md: the hypernetwork rate policy, pFedHN
# and FedL2P against the tuned uniform rate on Synthetic(1,1) (logistic regression and a
# one-hidden-layer MLP), every variant's client rate tuned by the same grid at the same
# budget, 10 paired seeds. Writes the study under $OUT (default runs/study-hypernetworks):
# results.md (the tables quoted in the docs), differences.csv, summary.json, plot.svg and
# every run's metrics.jsonl (the learned rates per client and group).
#
# Usage: scripts/study-hypernetworks.sh [OUT]
# Needs the release binary (cargo build --release -p fedpace); no data to fetch.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/study-hypernetworks}
BIN=${FEDPACE_BIN:-${CARGO_TARGET_DIR:-target}/release/fedpace}
"$BIN" study examples/tune/study-hypernetworks.toml --out "$OUT" --force
echo "tables: $OUT/results.md"
