#!/usr/bin/env bash
# The anchor: llama.cpp on the same machine, in the same run, on the same GGUF files,
# prompt tokens and token counts as our own decode bench (benches/examples/decode.rs).
#
#   scripts/bench-anchor.sh [TOKENS]          (default 64 generated tokens)
#   ANCHOR_ONLY=smollm scripts/bench-anchor.sh   (one model)
#
# llama.cpp comes from the llama-cpp-python sdist on PyPI, built once into target/anchor/
# (about 10 minutes on 2 cores) with the CPU features this machine reports: GGML_NATIVE=ON
# built a library that segfaulted at the first token on an AVX-512/AMX Xeon, so the flags
# are spelled out instead and AMX stays off. Tests, examples and the server are not built.
# The last lines, one per model, are `MODEL decode 0.35x prefill 0.34x`: our sandboxed
# plugin over llama.cpp. A bench, never part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

TOKENS=${1:-64}
VERSION=0.3.36
ANCHOR=target/anchor
VENV=$ANCHOR/venv

flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { [[ " $flags " == *" $1 "* ]]; }
onoff() { if has "$1"; then echo ON; else echo OFF; fi; }
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=$(onoff avx) -DGGML_AVX2=$(onoff avx2) -DGGML_FMA=$(onoff fma)"
CMAKE_ARGS+=" -DGGML_F16C=$(onoff f16c) -DGGML_BMI2=$(onoff bmi2)"
CMAKE_ARGS+=" -DGGML_AVX512=$(onoff avx512f) -DGGML_AVX512_VBMI=$(onoff avx512vbmi)"
CMAKE_ARGS+=" -DGGML_AVX512_VNNI=$(onoff avx512_vnni) -DGGML_AVX512_BF16=$(onoff avx512_bf16)"
CMAKE_ARGS+=" -DGGML_AVX_VNNI=$(onoff avx_vnni)"
CMAKE_ARGS+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=ON"
CMAKE_ARGS+=" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"
CMAKE_ARGS+=" -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF"
STAMP="$ANCHOR/built-$VERSION-$(echo "$CMAKE_ARGS" | sha256sum | cut -c1-12)"

if [ ! -e "$STAMP" ]; then
  echo "==> building llama.cpp (llama-cpp-python $VERSION sdist) into $VENV" >&2
  echo "    CMAKE_ARGS=$CMAKE_ARGS" >&2
  rm -rf "$VENV" "$ANCHOR"/built-*
  mkdir -p "$ANCHOR"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip numpy
  CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$VENV/bin/pip" install --disable-pip-version-check --no-binary llama-cpp-python \
    --no-cache-dir "llama-cpp-python==$VERSION" >"$ANCHOR/build.log" 2>&1 ||
    { tail -40 "$ANCHOR/build.log" >&2; exit 1; }
  touch "$STAMP"
fi
if [ "${ANCHOR_BUILD_ONLY:-}" = 1 ]; then exit 0; fi

# The plugins' code is not what is measured (the kernels are the host's): build them only
# when they are missing, or when asked (ANCHOR_REBUILD=1).
for m in smollm gemma qwen; do
  if [ "${ANCHOR_REBUILD:-}" = 1 ] || [ ! -s "target/plugins/$m/$m.wasm" ]; then
    ./scripts/build-plugins.sh >/dev/null
    break
  fi
done
cargo build --release -p apiary-benches --example decode -p apiary-tensor --example bandwidth \
  >/dev/null 2>&1 ||
  cargo build --release -p apiary-benches --example decode -p apiary-tensor --example bandwidth
OURS=$ANCHOR/ours.jsonl
"${CARGO_TARGET_DIR:-target}/release/examples/decode" --tokens "$TOKENS" --json \
  ${ANCHOR_ONLY:+--only "$ANCHOR_ONLY"} >"$OURS"
"$VENV/bin/python" scripts/anchor/llama_cpp_bench.py "$OURS"
