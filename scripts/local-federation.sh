#!/usr/bin/env bash
# A federation on this machine in one command (docs/network.md, "Commands"): a local CA,
# a key per client, a server and ten client processes talking TLS over 127.0.0.1.
#   scripts/local-federation.sh [--own-data] [CONFIG]      (default examples/federation.toml)
# Each client takes its partition of the config's data set (`fedpace client
# --partition-of`); with --own-data the partitions are first written to one file per
# client (`fedpace datasets export`, OUT/data/client-K.npz) and each client brings its
# file (`fedpace client CONFIG --data FILE`): the server then reads no data.
# Env: BIN (default target/release/fedpace, built if missing), OUT (default
# runs/local-federation), PORT (default 7150), CLIENTS (default 10: the config's clients).
set -euo pipefail
cd "$(dirname "$0")/.."
OWN=0
if [ "${1:-}" = "--own-data" ]; then
  OWN=1
  shift
fi
CONFIG=${1:-examples/federation.toml}
BIN=${BIN:-target/release/fedpace}
OUT=${OUT:-runs/local-federation}
PORT=${PORT:-7150}
CLIENTS=${CLIENTS:-10}
[ -x "$BIN" ] || cargo build --release -p fedpace
rm -rf "$OUT" && mkdir -p "$OUT/keys"
"$BIN" keys ca --dir "$OUT/keys" >/dev/null
for ((i = 0; i < CLIENTS; i++)); do
  "$BIN" keys generate --ring "$OUT/keys/ring.toml" --name "client-$i" \
    --clients "$i..$((i + 1))" --out "$OUT/keys/client-$i.key" >/dev/null
done
if [ "$OWN" = 1 ]; then
  "$BIN" datasets export "$CONFIG" --out "$OUT/data" >/dev/null
  mapfile -t FILES < <(ls "$OUT"/data/client-*.npz)
fi
"$BIN" server "$CONFIG" --listen "127.0.0.1:$PORT" --keys "$OUT/keys/ring.toml" \
  --tls-cert "$OUT/keys/server.pem" --tls-key "$OUT/keys/server-key.pem" \
  --out "$OUT/run" --wait 120 > "$OUT/server.log" 2>&1 &
server=$!
pids=()
trap 'kill "${pids[@]}" "$server" 2>/dev/null || true' EXIT
for ((i = 0; i < CLIENTS; i++)); do
  if [ "$OWN" = 1 ]; then
    data=("$CONFIG" --data "${FILES[$i]}")
  else
    data=(--partition-of "$CONFIG")
  fi
  "$BIN" client "${data[@]}" --id "$i" --server "127.0.0.1:$PORT" \
    --key "$OUT/keys/client-$i.key" --ca "$OUT/keys/ca.pem" \
    --state-dir "$OUT/state/client-$i" > "$OUT/client-$i.log" 2>&1 &
  pids+=($!)
done
if wait "$server"; then
  tail -n 4 "$OUT/server.log"
  echo "federation done: $OUT/run (metrics.jsonl, summary.json, traffic.csv); logs in $OUT"
else
  echo "server failed; its log:" >&2
  cat "$OUT/server.log" >&2
  exit 1
fi
