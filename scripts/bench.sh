#!/usr/bin/env bash
# Criterion benches (figures in README.md and the issue notes).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-plugins.sh
cargo bench -p apiary-benches "$@"
