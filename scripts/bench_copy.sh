#!/usr/bin/env bash
# Measures the initial copy (see scripts/bench_copy.py). Usage: scripts/bench_copy.sh [DOCS] [DOC_BYTES]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/testbed.sh install
cargo build --quiet --bin clustersync
exec .venv/bin/python scripts/bench_copy.py "$@"
