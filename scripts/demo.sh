#!/usr/bin/env bash
# The demo command (README). From a fresh machine: builds `apiary` (release) at
# target/release/apiary and the example plugins at target/plugins/, then asks real
# questions: each is a local round where the plugins that have the expertise answer,
# the others judge, and a Bradley-Terry fit over the verdicts picks the answer. The
# SmolLM2 language model (fetched from PyPI) answers general questions and judges by
# likelihood.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
./scripts/build-plugins.sh
echo "==> building apiary (release)"
cargo build --release -p apiary

APIARY=target/release/apiary
echo
echo "==> plugins"
$APIARY plugins list target/plugins
for q in "What is 17 * 23?" "Solve 3x + 5 = 20" "What is the capital of Australia?" "Convert 26.2 miles to km" "What is the capital of France?"; do
  echo
  echo "==> apiary ask \"$q\" --explain"
  $APIARY ask "$q" --plugins target/plugins --explain
done
