#!/usr/bin/env bash
# A federation on this machine in one command (docs/network.md, "Commands"): a local CA,
# a key per client, a server and ten client processes talking TLS over 127.0.0.1.
#   scripts/local-federation.sh [CONFIG]      (default examples/federation.toml)
# Env: BIN (default target/release/fedpace, built if missing), OUT (default
# runs/local-federation), PORT (default 7150), CLIENTS (default 10: the config's clients).
set -euo pipefail
cd "$(dirname "$0")/.."
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
"$BIN" server "$CONFIG" --listen "127.0.0.1:$PORT" --keys "$OUT/keys/ring.toml" \
  --tls-cert "$OUT/keys/server.pem" --tls-key "$OUT/keys/server-key.pem" \
  --out "$OUT/run" --wait 120 > "$OUT/server.log" 2>&1 &
server=$!
pids=()
trap 'kill "${pids[@]}" "$server" 2>/dev/null || true' EXIT
for ((i = 0; i < CLIENTS; i++)); do
  "$BIN" client --data "$CONFIG" --id "$i" --server "127.0.0.1:$PORT" \
    --key "$OUT/keys/client-$i.key" --ca "$OUT/keys/ca.pem" \
    --state-dir "$OUT/state/client-$i" > "$OUT/client-$i.log" 2>&1 &
  pids+=($!)
done
if wait "$server"; then
  cat "$OUT/server.log" | tail -n 4
  echo "federation done: $OUT/run (metrics.jsonl, summary.json, traffic.csv); logs in $OUT"
else
  echo "server failed; its log:" >&2
  cat "$OUT/server.log" >&2
  exit 1
fi
