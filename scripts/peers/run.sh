#!/usr/bin/env bash
# Side-by-side speed comparison of fedpace with Flower and a plain PyTorch loop, interleaved
# in one window, written as a dated table (docs/benchmarks.md quotes only such tables).
#
#   scripts/peers/run.sh                 # 5 repetitions, everything (≈ 20 min on 2 cores)
#   REPS=3 PARTS="whole epoch" scripts/peers/run.sh
#
# Per repetition, in this order:
#   whole  W-LR, W-MLP, W-CNN, each: `fedpace run examples/bench-<w>.toml` → Flower
#          (`run_simulation`, 2 actors of 1 CPU) → the PyTorch loop on 1 thread (W-CNN also
#          on 2 threads, see TORCH2); whole process, start to exit, under monitor.py.
#   epoch  one client epoch (600 samples, batch 32), 1 thread, LR / MLP / CNN:
#          `fedpace bench --workload <m>` (its median) → PyTorch (median of 10).
#   lstm   one training step of the LEAF char-LSTM (batch 10, 80 characters), 1 thread:
#          fedpace = (wall of a 60-step run − wall of a 10-step run) / 50 on Shakespeare
#          (fetched with `fedpace datasets fetch shakespeare` if absent) → PyTorch
#          `nn.LSTM` of the same shapes (median of 200 steps after 20 warm-up steps).
# Before every run the UTC time and the 1-minute load average go to runlog.jsonl.
#
# Environment: REPS (5), PARTS ("whole epoch lstm"), WORKLOADS ("lr mlp cnn": those of the
# whole part), OUT (target/peers/<UTC time>),
# VENV (target/peers-venv: created with the pinned requirements.txt if missing),
# FEDPACE_BIN (default: `cargo build --release -p fedpace`, then target/release/fedpace),
# BENCH_MAX_WAIT (30: seconds each run may wait for the machine to go quiet),
# TORCH2 (auto: the 2-thread PyTorch W-CNN loop only while the load average is below 1.5 —
# under contention its OpenMP threads spin-wait and one run takes 10–20 minutes; 1: always;
# 0: never),
# FEDPACE_DATA_DIR (data). Run it under `nice` on a shared machine; the table records
# the load, read it before the ratios.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
REPS="${REPS:-5}"
PARTS="${PARTS:-whole epoch lstm}"
WORKLOADS="${WORKLOADS:-lr mlp cnn}"
OUT="${OUT:-target/peers/$(date -u +%Y%m%d-%H%M%S)}"
VENV="${VENV:-target/peers-venv}"
export BENCH_MAX_WAIT="${BENCH_MAX_WAIT:-30}"
export FEDPACE_DATA_DIR="${FEDPACE_DATA_DIR:-data}"
TORCH2="${TORCH2:-auto}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV (torch, flwr, ray, numpy from PyPI; ≈ 6 GB)" >&2
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r "$here/requirements.txt"
PY="$VENV/bin/python"
if [[ -z "${FEDPACE_BIN:-}" ]]; then
  cargo build --release -p fedpace >&2
  FEDPACE_BIN=target/release/fedpace
fi
mkdir -p "$OUT/runs" "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
echo "writing to $OUT" >&2

"$PY" - "$OUT/env.json" "$FEDPACE_BIN" <<'PYEOF'
import json, os, platform, subprocess, sys, time
import flwr, numpy, ray, torch
def sh(*c):
    try:
        return subprocess.run(c, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20
json.dump(dict(
    started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    cores=os.cpu_count(), cpu=cpu, mem_gib=round(mem, 1), kernel=platform.release(),
    fedpace_commit=sh("git", "rev-parse", "--short", "HEAD"),
    fedpace_dirty=bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
    fedpace=sh(sys.argv[2], "--version"), fedpace_bin=sys.argv[2],
    python=platform.python_version(), torch=torch.__version__, flwr=flwr.__version__,
    ray=ray.__version__, numpy=numpy.__version__,
), open(sys.argv[1], "w"), indent=1)
PYEOF

stamp() { # label
  printf '{"label": "%s", "utc": "%s", "loadavg": %s}\n' "$1" "$(date -u +%H:%M:%S)" \
    "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/runlog.jsonl"
}
monitored() { # label command...
  local label="$1"; shift
  stamp "$label"
  BENCH_LABEL="$label" \
    "$PY" "$here/monitor.py" "--out=$OUT/monitor.jsonl" "$@" >/dev/null
}
peer() { # label threads flower_bench arguments...
  local label="$1" threads="$2"; shift 2
  stamp "$label"
  BENCH_LABEL="$label" BENCH_TORCH_THREADS="$threads" \
    "$PY" "$here/flower_bench.py" --out "$OUT/results.jsonl" --monitor-out "$OUT/monitor.jsonl" "$@" \
    >"$OUT/logs/${label// /_}.txt" 2>&1 || { echo "failed: $label (see $OUT/logs)" >&2; exit 1; }
}

lstm_args=(--threads 1 --set client_threads=1 --set data.max_clients=1
  --set strategy.clients_per_round=1 --set rounds=1 --set eval.every=0
  --set eval.max_test_samples=10)
if [[ " $PARTS " == *" lstm "* ]] && ! "$FEDPACE_BIN" datasets | grep -q '^shakespeare  *yes'; then
  "$FEDPACE_BIN" datasets fetch shakespeare >&2 || {
    echo "no Shakespeare data: the lstm part is skipped" >&2
    PARTS="${PARTS/lstm/}"
  }
fi

for rep in $(seq 1 "$REPS"); do
  echo "repetition $rep of $REPS ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))" >&2
  if [[ " $PARTS " == *" whole "* ]]; then
    for w in $WORKLOADS; do
      monitored "r$rep fedpace $w" "$FEDPACE_BIN" run "examples/bench-$w.toml" --out "$OUT/runs/r$rep-$w"
      peer "r$rep flower $w" 1 --measure --mode flower --model "$w" --client-cpus 1
      peer "r$rep torch1 $w" 1 --measure --mode torch --model "$w"
      if [[ $w == cnn ]] && { [[ $TORCH2 == 1 ]] ||
        { [[ $TORCH2 == auto ]] && awk '{exit !($1 < 1.5)}' /proc/loadavg; }; }; then
        peer "r$rep torch2 $w" 2 --measure --mode torch --model "$w"
      fi
    done
  fi
  if [[ " $PARTS " == *" epoch "* ]]; then
    for m in lr mlp cnn; do
      stamp "r$rep fedpace-epoch $m"
      "$FEDPACE_BIN" bench --workload "$m" >"$OUT/logs/r${rep}_fedpace-epoch_$m.txt"
      peer "r$rep torch-epoch $m" 1 --mode epoch --model "$m" --reps 10
    done
  fi
  if [[ " $PARTS " == *" lstm "* ]]; then
    for steps in 10 60; do
      monitored "r$rep fedpace-lstm $steps" "$FEDPACE_BIN" run examples/shakespeare.toml \
        "${lstm_args[@]}" --set client.steps=$steps --out "$OUT/runs/r$rep-lstm-$steps"
    done
    peer "r$rep torch-lstm step" 1 --mode lstm --reps 200
  fi
done
rm -rf "$OUT/runs"
"$PY" "$here/table.py" "$OUT" | tee "$OUT/table.md"
