#!/usr/bin/env bash
# The swarm's accuracy figures (issue 13): `apiary eval --nodes 6`, the networked round
# protocol with one plugin per node, on the held-out seed, one benchmark at a time, each
# plugin alone, majority vote, the swarm, the swarm with 30 % adversarial judges, the
# oracle, and what decided the rounds with two or more different answers.
#
#   scripts/eval-figures.sh [ITEMS] [SETS...]   (default 200 items; all five sets)
#
# Each set's table and JSON report land in target/eval/, so a run cut short keeps what it
# finished. The plugins run from a copy whose call budgets are tripled: the figures are
# about accuracy, and a language model that overruns its budget on a busy 2-core machine
# faults and is quarantined, which would measure the machine instead. A bench, not CI:
# at a few rounds a minute with three language models, 200 items take about an hour.
set -euo pipefail
cd "$(dirname "$0")/.."

ITEMS=${1:-200}
shift || true
SETS=("$@")
if [ ${#SETS[@]} -eq 0 ]; then SETS=(mixed arc_easy boolq arc_challenge mmlu); fi
SEED=${SEED:-2}
CALIBRATE=${CALIBRATE:-40}
APIARY=${APIARY:-"${CARGO_TARGET_DIR:-$PWD/target}/release/apiary"}
OUT=target/eval
PLUGINS=$OUT/plugins

[ -x "$APIARY" ] || cargo build --release -p apiary
[ -d target/plugins/qwen ] || ./scripts/build-plugins.sh
[ -s target/datasets/mmlu.jsonl ] || PYTHONPATH=target/pydeps:target/pydeps-gym python3 scripts/fetch-datasets.py

rm -rf "$PLUGINS" && mkdir -p "$OUT" && cp -R target/plugins "$PLUGINS"
for toml in "$PLUGINS"/*/plugin.toml; do
  perl -pi -e 's/^((?:answer|compare|assess)-ms) = (\d+)/"$1 = ".($2*3)/e' "$toml"
done

for set in "${SETS[@]}"; do
  echo "==> $set: $ITEMS items, seed $SEED, 6 nodes" >&2
  # The mixed set has no items to spare: its known-answer rounds are ARC-Easy items
  # (its multiple-choice half), none of them among the scored questions.
  known=()
  if [ "$set" = mixed ]; then known=(--known-answers target/datasets/arc_easy.jsonl); fi
  "$APIARY" eval "target/datasets/$set.jsonl" --plugins "$PLUGINS" --nodes 6 \
    --limit "$ITEMS" --calibrate "$CALIBRATE" "${known[@]}" --seed "$SEED" --byzantine 0.3 \
    --answer-ms 420000 --judge-ms 420000 \
    --max-answer-ms 360000 --max-compare-ms 60000 --max-assess-ms 6000 \
    --json >"$OUT/$set-$ITEMS.json" 2>"$OUT/$set-$ITEMS.txt"
  tail -n +2 "$OUT/$set-$ITEMS.txt" | tr '\r' '\n' | grep -v '^[0-9]*/[0-9]* ' >&2 || true
done
