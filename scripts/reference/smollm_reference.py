"""Independent reference for the smollm plugin's greedy output.

Tokenizes with Hugging Face `tokenizers` (BPE built from the GGUF vocabulary and merges,
SmolLM2's pre-tokenizer: individual digits, then byte-level) and runs the llama forward
pass in numpy on weights dequantized by llama.cpp's `gguf` package. Nothing here shares
code with the Rust plugin. Writes plugins/smollm/tests/fixtures/greedy.json.

    pip install numpy gguf tokenizers
    python3 scripts/reference/smollm_reference.py target/plugins/smollm/weights/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

PROMPTS = ["What is the capital of France?", "Name a large animal that lives in the ocean."]
STEPS = 16

r = GGUFReader(sys.argv[1])
field = lambda k: r.fields[k]
def text_list(k):
    f = field(k)
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
def scalar(k):
    return field(k).contents()

tokens = text_list("tokenizer.ggml.tokens")
merges = [tuple(m.split(" ", 1)) for m in text_list("tokenizer.ggml.merges")]
vocab = {t: i for i, t in enumerate(tokens)}
tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
tok.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
)
tok.decoder = decoders.ByteLevel()
im_start, im_end = vocab["<|im_start|>"], vocab["<|im_end|>"]
enc = lambda s: tok.encode(s, add_special_tokens=False).ids

W = {}
for t in r.tensors:
    a = dequantize(t.data, t.tensor_type).astype(np.float32)
    W[t.name] = a.reshape([int(d) for d in reversed(t.shape)]) if a.ndim == 1 and len(t.shape) > 1 else a

n_layers = int(scalar("llama.block_count"))
dim = int(scalar("llama.embedding_length"))
n_heads = int(scalar("llama.attention.head_count"))
n_kv = int(scalar("llama.attention.head_count_kv"))
hd = dim // n_heads
base = float(scalar("llama.rope.freq_base"))
eps = float(scalar("llama.attention.layer_norm_rms_epsilon"))
emb = W["token_embd.weight"]
out_w = W.get("output.weight", emb)

def rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

def rope(x, n_h):
    # llama.cpp "normal" rope: rotate adjacent pairs (2j, 2j+1).
    T = x.shape[0]
    x = x.reshape(T, n_h, hd // 2, 2)
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :].astype(np.float32), np.sin(ang)[:, None, :].astype(np.float32)
    a, b = x[..., 0], x[..., 1]
    return np.stack([a * c - b * s, a * s + b * c], -1).reshape(T, n_h * hd)

def forward(ids):
    x = emb[ids]
    T = len(ids)
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for l in range(n_layers):
        p = f"blk.{l}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope(h @ W[p + "attn_q.weight"].T, n_heads).reshape(T, n_heads, hd)
        k = rope(h @ W[p + "attn_k.weight"].T, n_kv).reshape(T, n_kv, hd)
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, n_kv, hd)
        g = n_heads // n_kv
        o = np.zeros((T, n_heads, hd), dtype=np.float32)
        for hh in range(n_heads):
            s = q[:, hh] @ k[:, hh // g].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o[:, hh] = s @ v[:, hh // g]
        x = x + o.reshape(T, dim) @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        gate = h @ W[p + "ffn_gate.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    return rms(x[-1], W["output_norm.weight"]) @ out_w.T

cases = []
for prompt in PROMPTS:
    ids = [im_start] + enc("user\n" + prompt) + [im_end] + enc("\n") + [im_start] + enc("assistant\n")
    seq, out = list(ids), []
    for _ in range(STEPS):
        nxt = int(np.argmax(forward(seq)))
        if nxt == im_end:
            break
        out.append(nxt)
        seq.append(nxt)
    cases.append({"prompt": prompt, "prompt_ids": ids, "output_ids": out, "text": tok.decode(out)})
    print(prompt, "->", repr(tok.decode(out)), file=sys.stderr)

json.dump({"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "steps": STEPS, "cases": cases}, open("plugins/smollm/tests/fixtures/greedy.json", "w"), indent=1)
