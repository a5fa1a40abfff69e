#!/usr/bin/env bash
# The node's own CPU share while a hog runs on every core (issue 14's bench; the goal is
# under 5 % of one core once paused), measured from /proc/PID/stat over SECONDS (60).
# Not part of CI: it loads the whole machine for a minute.
#   scripts/bench-governor.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bin=${APIARY:-${CARGO_TARGET_DIR:-target}/release/apiary}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/plugins"
cp -r target/plugins/arith "$tmp/plugins/"
"$bin" run --plugins "$tmp/plugins" --data-dir "$tmp/data" --listen /ip4/127.0.0.1/tcp/0 \
  --http 127.0.0.1:0 --no-mdns >"$tmp/out" 2>"$tmp/log" &
node=$!; pids+=("$node")
for _ in $(seq 1 600); do grep -q '^ready' "$tmp/out" && break; sleep 0.1; done
http=$(grep '^http ' "$tmp/out" | cut -d' ' -f2)
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$node/stat"; }
share() { # jiffies over seconds, as % of one core
  awk -v d="$1" -v s="$2" -v t="$ticks" 'BEGIN { printf "%.2f", 100 * d / t / s }'
}
state() { curl -s "$http/v1/node" | python3 -c 'import json,sys; print(json.load(sys.stdin)["governor"]["state"])'; }

a=$(cpu); sleep 10; b=$(cpu)
echo "idle, $(state): $(share $((b - a)) 10) % of one core over 10 s"
for _ in $(seq 1 "$(nproc)"); do sh -c 'while :; do :; done' & pids+=($!); done
for _ in $(seq 1 60); do [ "$(state)" = paused ] && break; sleep 0.5; done
echo "hog on $(nproc) cores: node $(state)"
a=$(cpu); sleep "$secs"; b=$(cpu)
echo "paused under the hog: $(share $((b - a)) "$secs") % of one core over $secs s (goal < 5 %)"
