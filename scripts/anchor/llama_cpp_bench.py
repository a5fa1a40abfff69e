"""llama.cpp on the same tokens as our bench: read benches/examples/decode.rs's JSON lines
(one per model: its GGUF, prompt token ids, token count and our figures), run llama.cpp
(llama-cpp-python, built by scripts/bench-anchor.sh) on exactly those ids with as many
threads as our kernels use, greedily for the same number of tokens, and print both side
by side with the ratios and each figure's share of the bandwidth limit.

Timing is llama.cpp's own (llama_perf_context: prompt eval and eval), best of REPS runs,
so Python's loop is not counted against it; ours is best of our own runs."""

import ctypes
import json
import os
import sys

import llama_cpp

REPS = int(os.environ.get("ANCHOR_REPS", "3"))
THREADS = int(os.environ.get("ANCHOR_THREADS", str(os.cpu_count() or 1)))
PLUGINS = os.path.join(os.path.dirname(__file__), "..", "..", "target", "plugins")


def gguf_of(model):
    folder = os.path.join(PLUGINS, model, "weights")
    return os.path.join(folder, next(f for f in sorted(os.listdir(folder)) if f.endswith(".gguf")))


def argmax_last(llm):
    logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    n = llm.n_vocab()
    best, best_v = 0, -float("inf")
    # A Python loop over the vocabulary would dominate the step: numpy does it in µs.
    import numpy as np

    arr = np.ctypeslib.as_array(ctypes.cast(logits, ctypes.POINTER(ctypes.c_float)), shape=(n,))
    best = int(arr.argmax())
    return best


def run_once(llm, ids, tokens):
    llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), True)
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    llm.eval(ids)
    for _ in range(tokens):
        llm.eval([argmax_last(llm)])
    p = llama_cpp.llama_perf_context(llm._ctx.ctx)
    prefill = p.n_p_eval / (p.t_p_eval_ms / 1e3) if p.t_p_eval_ms > 0 else float("nan")
    decode = p.n_eval / (p.t_eval_ms / 1e3) if p.t_eval_ms > 0 else float("nan")
    return prefill, decode


def bench(row):
    ids, tokens = row["prompt_ids"], row["tokens"]
    llm = llama_cpp.Llama(
        model_path=gguf_of(row["model"]),
        n_ctx=len(ids) + tokens + 8,
        n_batch=max(512, len(ids)),
        n_threads=THREADS,
        n_threads_batch=THREADS,
        verbose=False,
    )
    runs = [run_once(llm, ids, tokens) for _ in range(REPS)]
    return max(r[0] for r in runs), max(r[1] for r in runs)


def bandwidth():
    exe = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "examples", "bandwidth")
    out = os.popen(f"{exe} --json").read()
    return json.loads(out)["read_gb_s"] * 1e9


def main(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    bw = bandwidth()
    print(f"memory bandwidth (read): {bw / 1e9:.1f} GB/s; llama.cpp {llama_cpp.__version__}, "
          f"{THREADS} threads, system info: {llama_cpp.llama_print_system_info().decode().strip()}")
    lines = []
    for row in rows:
        lp, ld = bench(row)
        limit = bw / row["bytes_per_token"]
        nat, sbx = row["native"], row["sandbox"]
        print(f"\n{row['model']}: prompt {len(row['prompt_ids'])} tokens, {row['tokens']} generated, "
              f"{row['bytes_per_token'] / 1e6:.1f} MB read per token, limit {limit:.0f} tok/s")
        print(f"  {'':10} {'prefill tok/s':>14} {'decode tok/s':>13} {'of limit':>9}")
        for name, p, d in [("llama.cpp", lp, ld),
                           ("native", nat["prefill_tok_s"], nat["decode_tok_s"]),
                           ("sandbox", sbx["prefill_tok_s"], sbx["decode_tok_s"])]:
            print(f"  {name:10} {p:14.1f} {d:13.1f} {d / limit:8.0%}")
        lines.append(f"{row['model']} decode {sbx['decode_tok_s'] / ld:.2f}x prefill {sbx['prefill_tok_s'] / lp:.2f}x")
    print()
    for l in lines:
        print(l)


if __name__ == "__main__":
    main(sys.argv[1])
