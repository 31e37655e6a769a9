#!/usr/bin/env bash
# The benchmark (tests/bench.rs) at full size, in release mode, on testbed servers it starts
# itself. Usage: scripts/bench.sh [DOCS] [DOC_BYTES]   (defaults 200000 and 500)
# Other knobs: BENCH_STREAMS (4), BENCH_LOAD_LEVEL (4), BENCH_CEA_SECONDS (15 per rate step).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/testbed.sh install >/dev/null
export BENCH_DOCS="${1:-200000}" BENCH_DOC_BYTES="${2:-500}"
exec cargo test --release --quiet --test bench
