#!/usr/bin/env bash
# Personalised accuracy of every personalised algorithm plus FedAvg + fine-tuning on
# MNIST Dirichlet(0.1), 20 clients, 5 per round, MLP 784-64-10 (examples/personal-*.toml),
# one run at a time. Usage:
#   FEDPACE_DATA_DIR=/path/to/data scripts/personalization-dirichlet.sh [rounds] [outdir] [seeds...]
set -euo pipefail
ROUNDS=${1:-100}
OUT=${2:-runs/personal-dirichlet}
shift 2 || true
SEEDS=${*:-0}
BIN=${FEDPACE_BIN:-${CARGO_TARGET_DIR:-target}/release/fedpace}
if [ ! -x "$BIN" ]; then
  echo "error: no fedpace binary at $BIN: run \`cargo build --release\` first, or set FEDPACE_BIN" >&2
  exit 2
fi
for cfg in fedavg-ft perfedavg pfedme ditto fedper lg-fedavg fedrep fedbabu apfl; do
  for seed in $SEEDS; do
    "$BIN" run "examples/personal-$cfg.toml" --seed "$seed" --set rounds="$ROUNDS" --out "$OUT/$cfg-s$seed" >/dev/null ||
      { echo "error: $cfg seed $seed failed (fedpace's message above)" >&2; exit 1; }
  done
done
python3 scripts/personalization-table.py "$OUT"
