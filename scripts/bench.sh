#!/usr/bin/env bash
# The benchmarks, release build, on testbed servers they start themselves. Report; assert nothing.
#
#   scripts/bench.sh                  everything issue 16 measures, in one run:
#                                     end to end (scripts/bench_sync.py) for each shape in
#                                     BENCH_SHAPES, beside the destination's raw ingest and naive
#                                     scripts; then the copy and change-application benchmark
#                                     (tests/bench.rs) at BENCH_DOCS (50000) documents of 500
#                                     bytes, verifier on
#   scripts/bench.sh DOCS [BYTES]     only tests/bench.rs, at DOCS documents of BYTES (500)
#
# Knobs: BENCH_SHAPES (default below), BENCH_RUNS (bench_sync.py's runs), BENCH_STREAMS (4),
# BENCH_LOAD_LEVEL (4), BENCH_CEA_SECONDS (15 per rate step), BENCH_ENGINE_ARGS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/testbed.sh install >/dev/null
cargo build --release --quiet

if [[ $# -gt 0 ]]; then
    export BENCH_DOCS="$1" BENCH_DOC_BYTES="${2:-500}" BENCH_SYNC_SHAPE="${BENCH_SYNC_SHAPE:-none}"
    exec cargo test --release --quiet --test bench -- --nocapture
fi

SHAPES="${BENCH_SHAPES:-single:60000:330 single:200000:330 single:1000000:330@raw,naive,default,noverify many:1:10000:10 many:100:100:10}"
echo "== end to end: ${SHAPES}"
# shellcheck disable=SC2086
CLUSTERSYNC_BIN="$ROOT/target/release/clustersync" .venv/bin/python scripts/bench_sync.py $SHAPES
echo
echo "== copy and change application: ${BENCH_DOCS:-50000} documents of 500 bytes, verifier on"
BENCH_DOCS="${BENCH_DOCS:-50000}" BENCH_DOC_BYTES=500 BENCH_SYNC_SHAPE=none \
    BENCH_CEA_SECONDS="${BENCH_CEA_SECONDS:-10}" \
    cargo test --release --quiet --test bench -- --nocapture
