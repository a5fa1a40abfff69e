"""Score mc_scores.rs's token ids with llama.cpp: the independent check of the plugin's
option scores (and of how far its 8-bit activations move them).

    target/anchor/venv/bin/python scripts/reference/llama_scores.py GGUF IN.jsonl > OUT.jsonl

IN is what `cargo run --release -p gemma --example mc_scores -- ... q8` wrote. Each option
is scored over the same ids the plugin used: the sum of its tokens' log-probabilities
after the context, minus the same after the neutral prompt for PMI (the yes/no items),
the end of the answer included. llama-cpp-python is what scripts/bench-anchor.sh builds.
Compare with scripts/reference/compare_scores.py.
"""
import json
import sys

import numpy as np
from llama_cpp import Llama

llm = Llama(model_path=sys.argv[1], n_ctx=2048, logits_all=True, verbose=False, n_threads=2)


def logprobs(context, continuation):
    llm.reset()
    llm.eval(context + continuation[:-1])
    n = len(context)
    rows = np.array(llm.scores[n - 1 : n - 1 + len(continuation)], dtype=np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return float(sum(rows[i, t] for i, t in enumerate(continuation)))


for line in open(sys.argv[2]):
    item = json.loads(line)
    if item["rule"] != "pmi":
        sys.exit(f"{item['id']}: only PMI items are scored here, not {item['rule']}")
    scores = [
        logprobs(item["context"], ids) - logprobs(item["neutral"], ids) for ids in item["options"]
    ]
    print(json.dumps({"id": item["id"], "scores": scores, "gold": item["gold"]}), flush=True)
