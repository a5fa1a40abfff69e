#!/usr/bin/env bash
# The test command (README, .ci/run). From a fresh machine: installs what it needs,
# builds the wasm plugins and fixtures once, then format check, clippy and every test,
# all in the release profile so wasmtime and Cranelift are compiled exactly once.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

echo "==> cargo fmt --check"
cargo fmt --all -- --check

./scripts/build-plugins.sh

echo "==> clippy"
cargo clippy --release --workspace --all-targets -- -D warnings

echo "==> tests"
cargo test --release --workspace
