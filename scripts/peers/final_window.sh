#!/usr/bin/env bash
# Every ratio of issue 16 side by side in one window, written as one dated table into
# docs/benchmarks.md (the `final-window` block; scripts/peers/final_table.py):
#
#   scripts/peers/final_window.sh [OUTDIR]
#
# Parts, in this order; each interleaves fedpace and its peer run by run:
#   epoch       scripts/peers/epoch_window.sh: one client epoch of W-LR, W-MLP, W-CNN
#               (and the W-CNN epoch's share of the in-run sgemm rate), one char-LSTM step
#               and one Shakespeare FedAvg round, `fedpace bench --workload W --threads 1`
#               against scripts/peers/torch_epoch.py, REPS repetitions.
#   whole       scripts/peers/run.sh with PARTS=whole: W-MLP and W-CNN whole runs
#               (process start to exit) `fedpace run examples/bench-<w>.toml` → Flower
#               (`run_simulation`, 2 actors of 1 CPU) → the plain PyTorch loop, REPS
#               repetitions (WORKLOADS="lr mlp cnn" adds W-LR: ≈ +25 s a repetition).
#   throughput  `fedpace bench --workload throughput` REPS times: client-epochs per second
#               per core for W-LR and W-MLP at 10,000 registered clients, 1 and 2 threads
#               (each invocation alternates 5 pairs of 1- and 2-thread runs, ≈ 70 s).
#
# Expected duration on an idle 2-core machine with REPS=3: ≈ 12–14 min (epoch ≈ 6 min,
# whole ≈ 5 min, throughput ≈ 3.5 min); under a load average of 15–20 everything takes
# several times longer (wall clock) — read the load columns before the ratios.
#
# Environment: REPS (3), VENV (target/peers-venv; made by run.sh from
# requirements.txt if missing: torch, flwr, ray, numpy from PyPI, ≈ 6 GB), FEDPACE_BIN
# (default: `cargo build --release -p fedpace`, then target/release/fedpace),
# FEDPACE_DATA_DIR (data; the round needs `fedpace datasets fetch shakespeare`),
# WORKLOADS ("mlp cnn"), PARTS ("epoch whole throughput"), WRITE (docs/benchmarks.md;
# empty: print only), NOTE (a sentence before the table; default: the commit).
# Run it under `nice` only if other work must go first: nice lowers fedpace and the
# peers alike.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
OUT="${1:-target/final-window/$(date -u +%Y%m%d-%H%M%S)}"
REPS="${REPS:-3}"
VENV="${VENV:-target/peers-venv}"
PARTS="${PARTS:-epoch whole throughput}"
WORKLOADS="${WORKLOADS:-mlp cnn}"
WRITE="${WRITE-docs/benchmarks.md}"
export FEDPACE_DATA_DIR="${FEDPACE_DATA_DIR:-data}"
if [[ -z "${FEDPACE_BIN:-}" ]]; then
  cargo build --release -p fedpace >&2
  FEDPACE_BIN=target/release/fedpace
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV (torch, flwr, ray, numpy from PyPI; ≈ 6 GB)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$here/requirements.txt"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
VENV="$(cd "$VENV" && pwd)"
FEDPACE_BIN="$(cd "$(dirname "$FEDPACE_BIN")" && pwd)/$(basename "$FEDPACE_BIN")"
log() { echo "$(date -u +%FT%TZ) $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a "$OUT/runlog.txt" >&2; }
if ! "$FEDPACE_BIN" datasets | grep -q '^shakespeare  *yes'; then
  "$FEDPACE_BIN" datasets fetch shakespeare >&2 || echo "no Shakespeare data: the round is not measured" >&2
fi
log "start (REPS=$REPS, PARTS=$PARTS, $FEDPACE_BIN)"
if [[ " $PARTS " == *" epoch "* ]]; then
  log "epoch"
  FP="$FEDPACE_BIN" PY="$VENV/bin/python" "$here/epoch_window.sh" "$OUT/epoch" "$REPS" "lr mlp cnn lstm"
fi
if [[ " $PARTS " == *" whole "* ]]; then
  log "whole"
  # run.sh ends with its own table; keep it beside the raw files.
  OUT="$OUT/whole" REPS="$REPS" PARTS=whole WORKLOADS="$WORKLOADS" VENV="$VENV" TORCH2=0 \
    FEDPACE_BIN="$FEDPACE_BIN" "$here/run.sh" >/dev/null
fi
if [[ " $PARTS " == *" throughput "* ]]; then
  for r in $(seq 1 "$REPS"); do
    log "throughput $r"
    "$FEDPACE_BIN" bench --workload throughput >"$OUT/throughput-$r.txt" 2>&1
  done
fi
log "done"
note="${NOTE:-Build $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' with uncommitted changes').}"
python3 "$here/final_table.py" "$OUT" --note "$note" ${WRITE:+--write "$WRITE"} | tee "$OUT/table.md"
