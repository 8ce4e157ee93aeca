#!/usr/bin/env bash
# Δ-SGD in its paper's setting (docs/learned-rates.md, "Δ-SGD in its paper's setting"):
# untuned Δ-SGD against client SGD with its rate tuned by a grid of 5 on validation
# splits, MNIST and Fashion-MNIST, 100 clients, Dirichlet α = 0.1, paired seeds.
#
# Usage: scripts/study-delta-sgd.sh [OUT] [--set KEY=VALUE ...]
#   extra arguments go to `fedpace study` (e.g. `--parallel 2`, `--dry-run`).
# Needs the release binary (cargo build --release -p fedpace) and the data sets
# (fedpace datasets fetch mnist; fedpace datasets fetch fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/study-delta-sgd}
shift || true
BIN=${FEDPACE_BIN:-${CARGO_TARGET_DIR:-target}/release/fedpace}
"$BIN" study examples/tune/study-delta-sgd.toml --out "$OUT" --force "$@"
"$BIN" study examples/tune/study-delta-sgd-normalize-off.toml --out "$OUT-normalize-off" --force "$@"
echo "tables: $OUT/results.md $OUT-normalize-off/results.md"
