#!/usr/bin/env bash
# Renders a `fedpace report` page in headless Chromium and saves a PNG, to check that the
# page (inline SVG) displays in a real browser.
#
# Usage: scripts/report-screenshot.sh REPORT.html [OUT.png] [WIDTH,HEIGHT]  (default 1200,2400)
# Needs Chromium (Debian/Ubuntu: apt-get install -y chromium). Runs it with a fresh
# profile and no background networking (the machines here have no network but the
# package registries).
# Example:
#   fedpace run examples/by-label-skew.toml --out /tmp/a && fedpace run examples/per-layer.toml --out /tmp/b
#   fedpace report /tmp/a /tmp/b --out /tmp/report.html
#   scripts/report-screenshot.sh /tmp/report.html /tmp/report.png
set -euo pipefail
html=$(realpath "$1")
png=${2:-${html%.html}.png}
size=${3:-1200,2400}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "no chromium found (apt-get install -y chromium)" >&2
  exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-quic --no-first-run --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars \
  --screenshot="$png" --window-size="$size" "file://$html" 2>/dev/null
test -s "$png"
echo "screenshot in $png"
