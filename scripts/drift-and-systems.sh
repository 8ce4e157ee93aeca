#!/usr/bin/env bash
# Reproductions for docs/drift-and-systems.md (docs/algorithms.md Appendix Z #2 and #3).
# Runs one experiment at a time; outputs under runs/drift/. Then: python3 scripts/drift_tables.py
set -euo pipefail
BIN=${BIN:-target/release/fedpace}
OUT=${OUT:-runs/drift}
SEEDS=${SEEDS:-"0 1 2"}
ONLY=${ONLY:-all}   # all, z2 or z3
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
[ "$ONLY" = z3 ] || for seed in $SEEDS; do
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
# Z #3: FedNova vs FedAvg with random local epochs E_k ~ U{2..5} per (round, client)
# ([devices] epochs, docs/algorithms.md §B.3 / Appendix Z #3), no stragglers. FedAvg = plain n_k-weighted
# mean (normalize=off); FedNova = strategy fednova (normalised by each client's rate sum).
# Three rate policies: one rate; by-data-size γ=-0.5 (η_kτ_k ∝ n_k^0.5: narrower spread);
# by-data-size γ=+0.5 (η_kτ_k ∝ n_k^1.5: wider spread).
[ "$ONLY" = z2 ] || for seed in $SEEDS; do
  for pol in constant dsneg dspos; do
    case $pol in
      constant) p=();;
      dsneg) p=(--set policy.name=by-data-size --set policy.gamma=-0.5);;
      dspos) p=(--set policy.name=by-data-size --set policy.gamma=0.5);;
    esac
    BASE=$OUT/fedavg-base.toml run "z3-$pol-fedavg-seed$seed" --seed "$seed" --set strategy.name=fedavg --set strategy.normalize=off \
      --set 'devices.epochs={min=2,max=5}' "${p[@]}"
    BASE=$OUT/fedavg-base.toml run "z3-$pol-fednova-seed$seed" --seed "$seed" --set strategy.name=fednova --set strategy.normalize=on \
      --set 'devices.epochs={min=2,max=5}' "${p[@]}"
  done
done
echo done
