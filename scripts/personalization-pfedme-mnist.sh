#!/usr/bin/env bash
# Reproduces docs/algorithms.md Appendix Z #4 (pFedMe MNIST, logistic regression): pFedMe,
# Per-FedAvg (FO and HF) and FedAvg, 3 seeds each, one run at a time. Prints final and
# best (max over evaluated rounds, as the pFedMe code reports) personalised accuracy.
# Usage: FEDPACE_DATA_DIR=/path/to/data scripts/personalization-pfedme-mnist.sh [rounds] [outdir] [seeds...]
# (seeds default to 0 1 2; runs already in outdir are kept, so seeds can be added later)
set -euo pipefail
ROUNDS=${1:-800}
OUT=${2:-runs/pfedme-mnist}
BIN=${FEDPACE_BIN:-${CARGO_TARGET_DIR:-target}/release/fedpace}
if [ ! -x "$BIN" ]; then
  echo "error: no fedpace binary at $BIN: run \`cargo build --release\` first, or set FEDPACE_BIN" >&2
  exit 2
fi
shift $(( $# < 2 ? $# : 2 ))
SEEDS=${*:-0 1 2}
for cfg in pfedme-mnist perfedavg-mnist perfedavg-hf-mnist fedavg-mnist-pfedme-setting; do
  for seed in $SEEDS; do
    [ -f "$OUT/$cfg-s$seed/summary.json" ] && continue
    "$BIN" run "examples/$cfg.toml" --seed "$seed" --set rounds="$ROUNDS" --out "$OUT/$cfg-s$seed" >/dev/null ||
      { echo "error: $cfg seed $seed failed (fedpace's message above)" >&2; exit 1; }
  done
done
python3 scripts/personalization-table.py "$OUT"
python3 scripts/personalization-table.py "$OUT" --paired pfedme-mnist perfedavg-mnist fedavg-mnist-pfedme-setting
python3 scripts/personalization-table.py "$OUT" --paired perfedavg-hf-mnist fedavg-mnist-pfedme-setting
