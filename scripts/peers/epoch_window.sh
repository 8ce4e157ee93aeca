#!/bin/bash
# One interleaved measurement window for docs/benchmarks.md, "One client epoch against
# PyTorch": for each repetition and model, `fedpace bench --workload W` (one client epoch
# or char-LSTM step on one thread, in-run sgemm) then scripts/peers/torch_epoch.py on the
# same workload, alternating, with the UTC time and /proc/loadavg before every run.
# `--threads 1` throughout, so that the Shakespeare round runs its clients one after
# another on one thread, as the PyTorch round does.
#
#   scripts/peers/epoch_window.sh OUTDIR [REPS] [MODELS]
#
# FP (default target/release/fedpace) is the fedpace binary, PY (default python3) a
# Python with torch and numpy (PyPI); FEDPACE_DATA_DIR should hold the Shakespeare data
# (`fedpace datasets fetch shakespeare`) for the example's round. Summarise with
# scripts/peers/epoch_table.py OUTDIR [--write docs/benchmarks.md].
set -u
OUT=$1
REPS=${2:-3}
MODELS=${3:-"lr mlp cnn lstm"}
FP=${FP:-target/release/fedpace}
PY=${PY:-python3}
HERE=$(dirname "$0")
mkdir -p "$OUT"
log() { echo "$(date -u +%FT%TZ) $(cat /proc/loadavg) $*" >> "$OUT/runlog.txt"; }
for r in $(seq 1 "$REPS"); do
  for w in $MODELS; do
    log "rep $r fedpace $w"
    "$FP" bench --workload "$w" --threads 1 > "$OUT/fedpace-$w-$r.txt" 2>&1
    log "rep $r torch $w"
    case $w in
      lr) "$PY" "$HERE/torch_epoch.py" --model lr --reps 50 --out "$OUT/torch.jsonl" > /dev/null ;;
      mlp) "$PY" "$HERE/torch_epoch.py" --model mlp --reps 20 --out "$OUT/torch.jsonl" > /dev/null ;;
      cnn) "$PY" "$HERE/torch_epoch.py" --model cnn --reps 5 --warmup 1 --out "$OUT/torch.jsonl" > /dev/null ;;
      lstm)
        "$PY" "$HERE/torch_epoch.py" --model lstm --reps 40 --warmup 5 --out "$OUT/torch.jsonl" > /dev/null
        "$PY" "$HERE/torch_epoch.py" --model round --reps 3 --warmup 1 --out "$OUT/torch.jsonl" > /dev/null ;;
    esac
  done
done
log done
