#!/bin/bash
# `fedpace bench --quick` of two builds, alternating in one window, for the "before/after"
# note of a change (docs/benchmarks.md, "Before and after"): for each repetition, BEFORE
# then AFTER (then AFTER, BEFORE on the next repetition, so that neither side always
# runs second), with the UTC time and /proc/loadavg before every run.
#
#   scripts/bench_before_after.sh BEFORE_BIN AFTER_BIN OUTDIR [REPS] [BENCH ARGS...]
#
# e.g. build main's binary into one path and the branch's into another, then
#   scripts/bench_before_after.sh /tmp/fedpace-main target/release/fedpace /tmp/ba 3
# and summarise with `python3 scripts/bench_compare.py /tmp/ba`.
set -u
BEFORE=$1
AFTER=$2
OUT=$3
REPS=${4:-3}
shift $(($# < 4 ? $# : 4))
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--quick)
mkdir -p "$OUT"
log() { echo "$(date -u +%FT%TZ) $(cat /proc/loadavg) $*" >> "$OUT/runlog.txt"; }
for r in $(seq 1 "$REPS"); do
  order="before after"
  [ $((r % 2)) -eq 0 ] && order="after before"
  for side in $order; do
    bin=$BEFORE
    [ "$side" = after ] && bin=$AFTER
    log "rep $r $side bench ${ARGS[*]}"
    "$bin" bench "${ARGS[@]}" > "$OUT/$side-$r.txt" 2>&1
  done
done
log done
