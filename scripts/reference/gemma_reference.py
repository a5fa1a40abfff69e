"""Independent reference for the gemma plugin's tokenizer and greedy output.

Tokenizes with Google's `sentencepiece` (a BPE model proto built from the GGUF vocabulary,
scores and token types) and runs the Gemma 3 forward pass in numpy on weights dequantized
by llama.cpp's `gguf` package. Nothing here shares code with the Rust plugin. Writes
plugins/gemma/tests/fixtures/greedy.json.

    pip install numpy gguf sentencepiece protobuf
    python3 scripts/reference/gemma_reference.py target/plugins/gemma/weights/gemma-3-270m-q4_k_m.gguf
"""
import json
import sys

import numpy as np
import sentencepiece as spm
from gguf import GGUFReader
from gguf.quants import dequantize
from sentencepiece import sentencepiece_model_pb2 as pb

PREAMBLE = ("Question: What is the capital of Italy?\nAnswer: Rome\n\n"
            "Question: Which gas do plants take in from the air to make food?\nAnswer: carbon dioxide\n\n")
QUESTIONS = ["What is the capital of France?", "Which planet is known as the Red Planet?"]
STEPS = 12

r = GGUFReader(sys.argv[1])
field = lambda k: r.fields[k]
scalar = lambda k: field(k).contents()
tokens = [bytes(field("tokenizer.ggml.tokens").parts[i]).decode("utf-8") for i in field("tokenizer.ggml.tokens").data]
scores = [float(field("tokenizer.ggml.scores").parts[i][0]) for i in field("tokenizer.ggml.scores").data]
types = [int(field("tokenizer.ggml.token_type").parts[i][0]) for i in field("tokenizer.ggml.token_type").data]

m = pb.ModelProto()
m.trainer_spec.model_type = pb.TrainerSpec.BPE
m.trainer_spec.byte_fallback = True
m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 3, 2, 1, 0
m.normalizer_spec.name = "identity"
m.normalizer_spec.add_dummy_prefix = False
m.normalizer_spec.remove_extra_whitespaces = False
m.normalizer_spec.escape_whitespaces = True
for t, s, ty in zip(tokens, scores, types):
    p = m.pieces.add()
    p.piece, p.score, p.type = t, s, ty
sp = spm.SentencePieceProcessor()
sp.LoadFromSerializedProto(m.SerializeToString())
BOS, EOS = int(scalar("tokenizer.ggml.bos_token_id")), int(scalar("tokenizer.ggml.eos_token_id"))

W = {}
for t in r.tensors:
    a = dequantize(t.data, t.tensor_type).astype(np.float32)
    W[t.name] = a.reshape([int(d) for d in reversed(t.shape)]) if a.ndim == 1 and len(t.shape) > 1 else a

A = "gemma3."
n_layers = int(scalar(A + "block_count"))
dim = int(scalar(A + "embedding_length"))
n_heads = int(scalar(A + "attention.head_count"))
n_kv = int(scalar(A + "attention.head_count_kv"))
hd = int(scalar(A + "attention.key_length"))
eps = float(scalar(A + "attention.layer_norm_rms_epsilon"))
global_base = float(scalar(A + "rope.freq_base"))
window = int(scalar(A + "attention.sliding_window"))
emb = W["token_embd.weight"]

def rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

def rope(x, base):
    # NEOX-style: rotate the two halves of each head (HF's rotate_half).
    T, H, D = x.shape
    inv = base ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    ang = np.arange(T)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :].astype(np.float32), np.sin(ang)[:, None, :].astype(np.float32)
    a, b = x[..., : D // 2], x[..., D // 2:]
    return np.concatenate([a * c - b * s, b * c + a * s], -1)

def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

def forward(ids):
    T = len(ids)
    x = emb[ids] * np.float32(np.sqrt(dim))
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    for l in range(n_layers):
        p = f"blk.{l}."
        is_global = (l + 1) % 6 == 0
        visible = (j <= i) if is_global else ((j <= i) & (i - j < window))
        mask = np.where(visible, 0, -np.inf).astype(np.float32)
        base = global_base if is_global else 10000.0
        h = rms(x, W[p + "attn_norm.weight"])
        q = rms((h @ W[p + "attn_q.weight"].T).reshape(T, n_heads, hd), W[p + "attn_q_norm.weight"])
        k = rms((h @ W[p + "attn_k.weight"].T).reshape(T, n_kv, hd), W[p + "attn_k_norm.weight"])
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, n_kv, hd)
        q, k = rope(q, base), rope(k, base)
        g = n_heads // n_kv
        o = np.zeros((T, n_heads, hd), dtype=np.float32)
        for hh in range(n_heads):
            s = q[:, hh] @ k[:, hh // g].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o[:, hh] = s @ v[:, hh // g]
        x = x + rms(o.reshape(T, n_heads * hd) @ W[p + "attn_output.weight"].T, W[p + "post_attention_norm.weight"])
        h = rms(x, W[p + "ffn_norm.weight"])
        f = (gelu(h @ W[p + "ffn_gate.weight"].T) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
        x = x + rms(f, W[p + "post_ffw_norm.weight"])
    return rms(x[-1], W["output_norm.weight"]) @ emb.T

cases = []
for q in QUESTIONS:
    ids = [BOS] + sp.encode(f"{PREAMBLE}Question: {q}\nAnswer:")
    seq, out = list(ids), []
    for _ in range(STEPS):
        nxt = int(np.argmax(forward(seq)))
        if nxt == EOS or "\n" in tokens[nxt]:
            break
        out.append(nxt)
        seq.append(nxt)
    cases.append({"question": q, "prompt_ids": ids, "output_ids": out, "text": sp.decode(out)})
    print(q, "->", repr(sp.decode(out)), file=sys.stderr)

# Tokenizer cases beyond the prompts: accents, digits, punctuation, byte fallback.
texts = ["Héllo, wörld! 1234 ok", "naïve café — 3.14159", "日本語のテキスト", "x^2 + y^2 = z^2?"]
json.dump({"model": "gemma-3-270m-q4_k_m.gguf", "steps": STEPS, "cases": cases,
           "tokenizer": [{"text": t, "ids": sp.encode(t)} for t in texts]},
          open("plugins/gemma/tests/fixtures/greedy.json", "w"), indent=1)
