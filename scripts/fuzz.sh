#!/usr/bin/env bash
# Coverage-guided fuzzing of Apiary's untrusted inputs with cargo-fuzz (libFuzzer), on
# stable Rust (no sanitizer). The targets are the functions of fuzz/src/lib.rs.
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS] [-- LIBFUZZER-ARGS...]
#
# TARGET is one of the targets below, or `all` (the default) for each in turn; SECONDS
# (default 60) is each one's wall-clock budget. Extra libFuzzer arguments go after `--`,
# e.g. `-- -fork=2 -ignore_crashes=1` to keep going past crashes.
#
# New inputs that reach new code land in fuzz/corpus/TARGET (cargo fuzz's default);
# crashes in fuzz/artifacts/TARGET. Builds are instrumented (and built with debug
# assertions and overflow checks), so they go to their own target folder, target/fuzz.
# The plain test suite replays the committed corpora without libFuzzer
# (fuzz/tests/replay.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(gguf safetensors arith manifest wire transcript chat_request tensor_ops)
# These need only the weights parsers and the arith plugin: built without the node
# runtime (wasmtime, libp2p, wgpu), which makes their instrumented build much shorter.
LIGHT=" gguf safetensors arith "

target=all
seconds=60
if [ $# -gt 0 ] && [ "$1" != "--" ]; then target="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then seconds="$1"; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi
extra=("$@")

case "$target" in
  all) targets=("${ALL[@]}") ;;
  *)
    if [[ " ${ALL[*]} " != *" $target "* ]]; then
      echo "unknown target $target (one of: ${ALL[*]}, all)" >&2
      exit 2
    fi
    targets=("$target")
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

for t in "${targets[@]}"; do
  flags=(--fuzz-dir fuzz --sanitizer none --release --debug-assertions --target-dir target/fuzz)
  if [[ "$LIGHT" == *" $t "* ]]; then
    flags+=(--no-default-features)
  fi
  flags+=(--features libfuzzer)
  mkdir -p "fuzz/corpus/$t"
  echo "==> fuzzing $t for ${seconds}s"
  cargo fuzz run "$t" "${flags[@]}" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 "${extra[@]}"
done

cat <<'EOF'
==> done. Before committing new corpus entries, minimize them, e.g.
      cargo fuzz cmin TARGET fuzz/corpus/TARGET --fuzz-dir fuzz --sanitizer none \
        --release --debug-assertions --target-dir target/fuzz --features libfuzzer
    (add --no-default-features for gguf, safetensors and arith), and keep the committed
    corpora small: a handful of inputs per target, each under 10 KiB. A crash input goes,
    minimized (`cargo fuzz tmin`), into fuzz/regressions/TARGET once its bug is fixed.
EOF
