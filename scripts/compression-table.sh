#!/usr/bin/env bash
# The compression table of docs/privacy.md ("Compression", accuracy cost): FedAvg on MNIST
# Dirichlet(0.5) (examples/compression-mnist.toml, logistic regression by default;
# MODEL=mlp for the 2NN) without compression and with QSGD 8-bit, QSGD 4-bit and top-k
# with error feedback (1 % and 10 % of the coordinates), over paired seeds. One run at a
# time; outputs under runs/compression-<model>/. Then:
# python3 scripts/compression_table.py runs/compression-<model>
set -euo pipefail
BIN=${BIN:-target/release/fedpace}
MODEL=${MODEL:-logistic-regression}
OUT=${OUT:-runs/compression-$MODEL}
SEEDS=${SEEDS:-"0 1 2 3 4"}
BASE=examples/compression-mnist.toml
mkdir -p "$OUT"
model_args=(--set "model.name=\"$MODEL\"")
[ "$MODEL" = mlp ] && model_args+=(--set "model.hidden=[200, 200]")
declare -A CODEC=(
  [none]=""
  [qsgd8]="compression.name=\"qsgd\" compression.bits=8"
  [qsgd4]="compression.name=\"qsgd\" compression.bits=4"
  [topk10]="compression.name=\"top-k\" compression.fraction=0.1"
  [topk1]="compression.name=\"top-k\" compression.fraction=0.01"
)
for seed in $SEEDS; do
  for c in none qsgd8 qsgd4 topk10 topk1; do
    name="$c-seed$seed"
    [ -f "$OUT/$name/summary.json" ] && continue
    args=(--seed "$seed" "${model_args[@]}")
    for kv in ${CODEC[$c]}; do args+=(--set "$kv"); done
    "$BIN" run "$BASE" --out "$OUT/$name" --force --threads "${THREADS:-1}" "${args[@]}" \
      > "$OUT/$name.log" 2>&1
  done
done
