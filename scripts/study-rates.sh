#!/usr/bin/env bash
# The earlier rate-policy study (docs/study-rates.md, "Earlier study"): uniform rate vs every policy on
# Synthetic(1,1) and on MNIST Dirichlet(α=0.1), logistic regression.
#
# Selection and report use different seeds, so the base rate is not chosen on the numbers
# that are reported: for every (data set, variant) the base rate is picked from the same
# 4-rate grid by the mean personalised accuracy over the selection seeds (SELECT_SEEDS,
# default 100–104), then the variant runs at that rate on the report seeds (SEEDS,
# default 0–19), the same seeds for every variant, so differences are paired by seed.
# Writes runs under $OUT (default runs/study-rates) and the tables to $OUT/table.md
# (scripts/study_table.py).
#
# Usage: FEDPACE_DATA_DIR=/path/to/data scripts/study-rates.sh [OUT]
# Environment: SEEDS, SELECT_SEEDS, DATASETS ("synthetic mnist"), THREADS (2),
# FEDPACE_BIN. Needs the release binary (cargo build --release -p fedpace) and, for
# mnist, MNIST fetched (fedpace datasets fetch mnist). Finished runs are kept and
# skipped when the script is run again.
set -euo pipefail
OUT=${1:-runs/study-rates}
BIN=${FEDPACE_BIN:-${CARGO_TARGET_DIR:-target}/release/fedpace}
THREADS=${THREADS:-2}
SEEDS=${SEEDS:-$(seq -s ' ' 0 19)}
SELECT_SEEDS=${SELECT_SEEDS:-100 101 102 103 104}
DATASETS=${DATASETS:-synthetic mnist}
TABLE="$(dirname "$0")/study_table.py"
mkdir -p "$OUT/configs"

# Each variant: NAME|STRATEGY|POLICY (TOML lines of [policy], separated by ';')
VARIANTS=(
  "uniform|fedavg|name = \"constant\""
  "by-data-size|fedavg|name = \"by-data-size\""
  "by-label-skew|fedavg|name = \"by-label-skew\""
  "by-device|fedavg|name = \"by-device\";rates = { slow = 0.5, fast = 1.0 }"
  "grad-norm-ratio|fedavg|name = \"grad-norm-ratio\""
  "loss-based|fedavg|name = \"loss-based\""
  "curvature|fedavg|name = \"curvature\""
  "fedlalr|fedavg|name = \"fedlalr\""
  "per-layer|fedavg|name = \"per-layer\";multipliers = { head = 10.0 }"
  "trust-ratio|fedavg|name = \"trust-ratio\""
  "clip-updates|fedavg|name = \"clip-updates\""
  "inverse-variance|fedavg|name = \"inverse-variance\""
  "compose|fedavg|name = \"compose\";[[policy.policies]];name = \"by-label-skew\";[[policy.policies]];name = \"grad-norm-ratio\""
  "fednova+by-data-size|fednova|name = \"by-data-size\""
  "stragglers-uncompensated|fedavg|name = \"straggler-compensation\";speeds = { slow = 0.25 };max_boost = 1.0"
  "straggler-compensation|fedavg|name = \"straggler-compensation\";speeds = { slow = 0.25 };max_boost = 4.0"
)

dataset_block() {
  case $1 in
    synthetic) cat <<'T'
rounds = 50
[data]
source = "synthetic"
alpha = 1.0
beta = 1.0
num_clients = 30
[client]
batch_size = 10
epochs = 2
T
    ;;
    mnist) cat <<'T'
rounds = 50
[data]
source = "mnist"
num_clients = 100
partition = { kind = "dirichlet", alpha = 0.1 }
[client]
batch_size = 32
epochs = 1
T
    ;;
  esac
}

lrs_for() {
  case $1 in
    synthetic) echo "0.003 0.01 0.03 0.1" ;;
    mnist) echo "0.01 0.03 0.1 0.3" ;;
  esac
}

one_run() { # config run-dir seed lr
  [ -f "$2/summary.json" ] && return 0
  mkdir -p "$(dirname "$2")"
  "$BIN" run "$1" --seed "$3" --threads "$THREADS" --set "client.lr=$4" --out "$2" >/dev/null 2>"$2.err" \
    || echo "FAILED $2 (see $2.err)"
}

for ds in $DATASETS; do
  for v in "${VARIANTS[@]}"; do
    IFS='|' read -r name strategy policy <<<"$v"
    cfg="$OUT/configs/$ds-$name.toml"
    {
      echo "# study-rates: $name on $ds"
      echo "name = \"$ds-$name\""
      dataset_block "$ds"
      echo "[model]"
      echo "name = \"logistic-regression\""
      echo "[strategy]"
      echo "name = \"$strategy\""
      echo "clients_per_round = 10"
      echo "[eval]"
      echo "every = 50"
      echo "finetune_steps = 5"
      echo "[device_classes]"
      echo "slow = 0.3"
      echo "fast = 0.7"
      echo "[policy]"
      echo "$policy" | tr ';' '\n'
    } >"$cfg"
    for lr in $(lrs_for "$ds"); do
      for seed in $SELECT_SEEDS; do
        one_run "$cfg" "$OUT/$ds/$name/select/lr$lr-seed$seed" "$seed" "$lr"
      done
    done
    lr=$(python3 "$TABLE" --best "$OUT/$ds/$name/select")
    for seed in $SEEDS; do
      one_run "$cfg" "$OUT/$ds/$name/report/lr$lr-seed$seed" "$seed" "$lr"
    done
    echo "done $ds $name (base rate $lr)"
  done
done
python3 "$TABLE" "$OUT" | tee "$OUT/table.md"
