#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the testbed (a git-ignored venv with
# SecantusDB), then runs formatting, lints and every test. Tests start their own servers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/testbed.sh install
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets -- --test-threads "${TEST_THREADS:-2}"
