#!/usr/bin/env bash
# Reproductions for docs/drift-and-systems.md (ALGORITHMS.md Appendix Z #2 and #3).
# Runs one experiment at a time; outputs under runs/drift/. Then: python3 scripts/drift_tables.py
set -euo pipefail
BIN=${BIN:-target/release/fedpace}
OUT=${OUT:-runs/drift}
SEEDS=${SEEDS:-"0 1 2"}
mkdir -p "$OUT"
# FedAvg runs use fedprox.toml without its `mu` (a [strategy] key fedavg does not use is an error).
sed '/^mu = /d' examples/fedprox.toml > "$OUT/fedavg-base.toml"
run() { # name, extra --set args...  (BASE=config, default examples/fedprox.toml)
  local name=$1; shift
  if [ -f "$OUT/$name/summary.json" ]; then return; fi
  "$BIN" run "${BASE:-examples/fedprox.toml}" --out "$OUT/$name" --threads 1 \
    --set rounds=200 --set eval.every=10 "$@" > "$OUT/$name.log" 2>&1
}
# Z #2: FedProx systems heterogeneity on Synthetic(1,1): 30 devices, 10/round, E=20, B=10, lr 0.01.
# z2-*: the paper's plain n_k-weighted mean (normalize=off); z2auto-*: fedpace's default
# (normalize=auto: FedNova-style normalisation whenever clients' rate sums differ).
for seed in $SEEDS; do
  for s in 0 0.5 0.9; do
    for n in off auto; do
      p=z2; [ $n = auto ] && p=z2auto
      BASE=$OUT/fedavg-base.toml run "$p-fedavg-drop-s$s-seed$seed" --seed "$seed" --set strategy.name=fedavg --set strategy.normalize=$n \
        --set devices.stragglers=$s --set devices.late=drop
      run "$p-fedprox-mu0-s$s-seed$seed" --seed "$seed" --set strategy.name=fedprox --set strategy.mu=0.0 \
        --set strategy.normalize=$n --set devices.stragglers=$s --set devices.late=partial
      run "$p-fedprox-mu1-s$s-seed$seed" --seed "$seed" --set strategy.name=fedprox --set strategy.mu=1.0 \
        --set strategy.normalize=$n --set devices.stragglers=$s --set devices.late=partial
    done
  done
done
# Z #3: FedNova (normalised) vs FedAvg with random local epochs: every selected client is a
# "straggler" with E=6, so each runs U{1..5} epochs; with and without per-client rates.
for seed in $SEEDS; do
  for norm in off on; do
    BASE=$OUT/fedavg-base.toml run "z3-constant-norm$norm-seed$seed" --seed "$seed" --set strategy.name=fedavg \
      --set strategy.normalize=$norm --set client.epochs=6 \
      --set devices.stragglers=1.0 --set devices.late=partial
    BASE=$OUT/fedavg-base.toml run "z3-bydatasize-norm$norm-seed$seed" --seed "$seed" --set strategy.name=fedavg \
      --set strategy.normalize=$norm --set client.epochs=6 \
      --set devices.stragglers=1.0 --set devices.late=partial \
      --set policy.name=by-data-size --set policy.gamma=-0.5
  done
done
echo done
