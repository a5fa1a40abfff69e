"""Independent reference for the qwen plugin: llama.cpp itself, through llama-cpp-python.

llama.cpp tokenizes (its own Qwen2 pre-tokenizer and BPE, special tokens parsed) and runs
the model on the same GGUF file; the chat prompts are rendered from the file's own
`tokenizer.chat_template` with Jinja2. Nothing here shares code with the Rust plugin.
Writes plugins/qwen/tests/fixtures/greedy.json:
- `texts`: token ids of fixed texts (digits, code, Unicode, newlines, contractions,
  special tokens);
- `cases`: for fixed conversations, the templated prompt's ids, the greedy reply
  (`steps` tokens at most, stopping at <|im_end|> or <|endoftext|>) and the top
  log-probabilities of the first reply token.

llama-cpp-python is built from its sdist (no wheel for this machine):

    pip download --no-deps --no-binary llama-cpp-python llama-cpp-python
    CMAKE_ARGS="-DGGML_NATIVE=off" pip install --target /tmp/llamapy llama-cpp-python-*.tar.gz
    PYTHONPATH=/tmp/llamapy python3 scripts/reference/qwen_reference.py \
        target/plugins/qwen/weights/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf

The key/value cache is kept in f32 (llama.cpp's default is f16) so that the remaining
differences are those of the matrix products, where llama.cpp quantizes activations to
8 bits as the plugin's default kernels do.
"""
import json
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment
import llama_cpp
import numpy as np
from llama_cpp import Llama

TEXTS = [
    "Hello, world! I'm testing: don't, won't, they'll, we've, she'd, it's, I'M, YOU'RE, We'Ll.",
    "12345 + 678 = 13023; pi is 3.14159, 1,000,000 and ½, ² and ٣٤ and Ⅻ",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n"
    "print([fib(i) for i in range(10)])\n",
    'fn main() {\n\tlet v: Vec<u32> = (0..10).collect();\n\tprintln!("{:?}", v);\r\n}\n',
    "Héllo wörld — naïve café; 日本語のテキスト, 中文, 한국어, Ελληνικά, русский, "
    "emoji 😀👍🏽, e\u0301 combining, हिन्दी, ﬁ ligature",
    "line one\n\n\nline two   \n  \t indented\r\n\r\nend   ",
    '<|im_start|>user\nHi<|im_end|>\n<|endoftext|><tool_call>{"a": 1}</tool_call>'
    "<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>",
    "<|im_start| not special <|im_end and <|im_start|><|im_start|>",
    "   leading spaces and trailing tabs\t\t",
    "URL: https://example.com/path?q=1&b=2#frag, mail a.b@c.io, $100.50, 50%, C++ & C#...",
    "rock'n'roll 'quoted' ''double'' O'Neil's can't'nt",
    " ",
    "\n",
    "    ",
]

CASES = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a Python function that returns the square of a number."}],
    [{"role": "user", "content": "Explain what a hash map is in one sentence."}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one?"},
    ],
]
STEPS = 16
TOP = 10

path = sys.argv[1]
llm = Llama(
    model_path=path,
    n_ctx=512,
    logits_all=True,
    n_batch=512,
    n_threads=2,
    type_k=llama_cpp.GGML_TYPE_F32,
    type_v=llama_cpp.GGML_TYPE_F32,
    seed=0,
    verbose=False,
)
meta = llm.metadata
# As Hugging Face renders chat templates.
template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
    meta["tokenizer.chat_template"]
)
stops = {int(meta["tokenizer.ggml.eos_token_id"]), llm.tokenize(b"<|endoftext|>", add_bos=False, special=True)[0]}


def tokenize(text):
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def detok(ids):
    return llm.detokenize(ids).decode("utf-8", "replace")


texts = []
for t in TEXTS:
    ids = tokenize(t)
    texts.append({"text": t, "ids": ids})
    print(repr(t[:40]), len(ids), "tokens", file=sys.stderr)


def logprobs(row):
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


cases = []
for messages in CASES:
    prompt = template.render(messages=messages, add_generation_prompt=True, tools=None)
    ids = tokenize(prompt)
    llm.reset()
    llm.eval(ids)
    first = logprobs(llm.scores[llm.n_tokens - 1])
    top = [[int(i), float(first[i])] for i in np.argsort(-first)[:TOP]]
    out = []
    for _ in range(STEPS):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if nxt in stops:
            break
        out.append(nxt)
        llm.eval([nxt])
    cases.append(
        {
            "messages": messages,
            "prompt": prompt,
            "prompt_ids": ids,
            "output_ids": out,
            "text": detok(out),
            "first_top_logprobs": top,
        }
    )
    print(messages[-1]["content"], "->", repr(detok(out)), file=sys.stderr)

json.dump(
    {
        "model": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "reference": f"llama-cpp-python {llama_cpp.__version__}, f32 KV cache, greedy",
        "steps": STEPS,
        "texts": texts,
        "cases": cases,
    },
    open("plugins/qwen/tests/fixtures/greedy.json", "w", encoding="utf-8"),
    indent=1,
    ensure_ascii=False,
)
