"""Compare runs of plugins/gemma/examples/mc_scores.rs item by item.

    python3 scripts/reference/compare_scores.py A.jsonl B.jsonl [C.jsonl ...]

For each run: accuracy and how often it picks the first option; for each pair: the
median of the largest score change per item, and how many answers flipped. Shows
whether a change in accuracy is a kernel moving scores across near-ties or a bug.
"""
import itertools
import json
import statistics
import sys


def load(path):
    return {r["id"]: r for r in map(json.loads, open(path))}


def pick(scores):
    return max(range(len(scores)), key=lambda i: scores[i])


runs = {p: load(p) for p in sys.argv[1:]}
for path, run in runs.items():
    right = sum(pick(r["scores"]) == ord(r["gold"]) - ord("A") for r in run.values())
    first = sum(pick(r["scores"]) == 0 for r in run.values())
    print(f"{path}: {right}/{len(run)} right, first option picked {first} times")
for (pa, a), (pb, b) in itertools.combinations(runs.items(), 2):
    ids = a.keys() & b.keys()
    moved = statistics.median(
        max(abs(x - y) for x, y in zip(a[i]["scores"], b[i]["scores"])) for i in ids
    )
    flips = sum(pick(a[i]["scores"]) != pick(b[i]["scores"]) for i in ids)
    print(f"{pa} vs {pb}: median largest score change {moved:.3f}, {flips}/{len(ids)} answers flipped")
