#!/usr/bin/env bash
# FedAsync and FedBuff with and without staleness-decayed client rates (docs/drift-and-systems.md).
# Synthetic(1,1), log-normal device speeds (examples/fedasync.toml, examples/fedbuff.toml), 3 seeds.
set -euo pipefail
BIN=${BIN:-target/release/fedpace}
OUT=${OUT:-runs/drift}
SEEDS=${SEEDS:-"0 1 2"}
mkdir -p "$OUT"
for seed in $SEEDS; do
  for algo in fedasync fedbuff; do
    for decay in true false; do
      name="async-$algo-decay$decay-seed$seed"
      [ -f "$OUT/$name/summary.json" ] && continue
      # 10x the examples' budgets: 3000 FedAsync versions, 600 FedBuff versions.
      if [ $algo = fedasync ]; then len="--set rounds=3000 --set eval.every=300"; else len="--set rounds=600 --set eval.every=60"; fi
      "$BIN" run "examples/$algo.toml" --out "$OUT/$name" --threads 1 --seed "$seed" $len \
        --set strategy.rate_decay=$decay > "$OUT/$name.log" 2>&1
    done
  done
done
echo done
