#!/usr/bin/env bash
# The attack table of docs/privacy.md ("Attacks"): final global accuracy of FedAvg on
# Synthetic(1,1) (30 devices, 15 a round, 20 rounds) when 20 % of the clients attack,
# for each defence, with one rate (policy constant) and with personalised rates
# (by-data-size, γ = −0.5), over paired seeds. One run at a time; outputs under
# runs/attack/. Then: python3 scripts/attack_table.py
set -euo pipefail
BIN=${BIN:-target/release/fedpace}
OUT=${OUT:-runs/attack}
SEEDS=${SEEDS:-"0 1 2 3 4"}
BASE=examples/privacy-attack.toml
mkdir -p "$OUT"
# The base file without its [attack] and [robust] tables (each run sets its own).
awk '/^\[attack\]|^\[robust\]/{skip=1; next} /^\[/{skip=0} !skip' "$BASE" > "$OUT/base.toml"
run() { # name, extra --set args...
  local name=$1; shift
  if [ -f "$OUT/$name/summary.json" ]; then return; fi
  "$BIN" run "$OUT/base.toml" --out "$OUT/$name" --force --threads 1 "$@" > "$OUT/$name.log" 2>&1
}
declare -A DEFENCE=(
  [mean]=""
  [median]="robust.rule=\"median\""
  [trimmed]="robust.rule=\"trimmed-mean\" robust.beta=0.2"
  [krum]="robust.rule=\"krum\" robust.byzantine=3"
  [multikrum]="robust.rule=\"multi-krum\" robust.byzantine=3"
  [bulyan]="robust.rule=\"bulyan\" robust.byzantine=3"
  [normbound]="robust.rule=\"norm-bound\" robust.max_norm=0.5"
)
for seed in $SEEDS; do
  for policy in constant by-data-size; do
    for attack in none sign-flip scale random label-flip; do
      for d in mean median trimmed krum multikrum bulyan normbound; do
        args=(--seed "$seed" --set "policy.name=\"$policy\"")
        [ "$attack" = none ] || args+=(--set "attack.kind=\"$attack\"" --set attack.fraction=0.2)
        for kv in ${DEFENCE[$d]}; do args+=(--set "$kv"); done
        run "$policy-$attack-$d-seed$seed" "${args[@]}"
      done
    done
  done
done
