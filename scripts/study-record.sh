#!/usr/bin/env bash
# The study of record (docs/study-rates.md), end to end: for each benchmark and model,
# writes one `fedpace study` file (scripts/study_record.py: every variant, the tuned
# uniform rate the baseline), runs it with --resume (runs already finished with the same
# configuration are kept and read back, so an interrupted study continues where it
# stopped), then prints every table and the verdict (scripts/study_record_table.py) to
# $OUT/tables.md.
#
# Usage: FEDPACE_DATA_DIR=data scripts/study-record.sh [OUT]
# Environment:
#   STUDIES  "bench:model:tier …" in the order run (default: the three benchmarks with
#            logistic regression, then MNIST with the 2NN MLP)
#   SEEDS    report seeds (default 0-9; selection seeds are 100–101)
#   PARALLEL runs at once (default 2)
#   ONLY     a comma list of variants to keep (to tabulate a study cut short: with
#            --resume the finished variants are read back and nothing trains)
#   FEDPACE_BIN (default target/release/fedpace)
# Needs the release binary (cargo build --release -p fedpace) and MNIST and Fashion-MNIST
# in the data directory (fedpace datasets fetch mnist fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/study-record}
BIN=${FEDPACE_BIN:-${CARGO_TARGET_DIR:-target}/release/fedpace}
STUDIES=${STUDIES:-synthetic:lr:core mnist:lr:core fmnist:lr:core mnist:mlp:min}
SEEDS=${SEEDS:-0-9}
PARALLEL=${PARALLEL:-2}
ONLY=${ONLY:-}
mkdir -p "$OUT/studies"
for s in $STUDIES; do
  IFS=: read -r bench model tier <<<"$s"
  file=$(python3 scripts/study_record.py "$OUT/studies" "$bench" "$model" "$tier" "$SEEDS" "$ONLY")
  echo "== $bench $model ($tier): $(date -u +%H:%M:%S)"
  "$BIN" study "$file" --out "$OUT/$bench-$model" --resume --parallel "$PARALLEL" \
    >"$OUT/$bench-$model.log" 2>&1 || { echo "FAILED $bench $model (see $OUT/$bench-$model.log)"; continue; }
  echo "   done $(date -u +%H:%M:%S)"
done
python3 scripts/study_record_table.py "$OUT" | tee "$OUT/tables.md"
