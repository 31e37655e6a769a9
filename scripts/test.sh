#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the testbed (a git-ignored venv with
# SecantusDB), then runs formatting, lints and every test. Tests start their own servers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/testbed.sh install
# The operator's tests run on a real control plane (kube-apiserver, etcd,
# kube-controller-manager) and Helm, built once from Go modules into the git-ignored .k8s/.
# The Go build runs beside the Rust build: each leaves a core idle part of the time.
mkdir -p .k8s
k8s_start=$SECONDS
scripts/k8s.sh build >.k8s/build.log 2>&1 &
K8S_BUILD=$!
# The install-path tests render deploy/ with `kubectl kustomize`.
if ! command -v kubectl >/dev/null 2>&1; then
    echo "test.sh: installing kubectl (Debian's kubernetes-client)" >&2
    SUDO=""
    [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq kubernetes-client >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets --no-run --quiet
if ! wait "$K8S_BUILD"; then
    echo "test.sh: building the Kubernetes control plane failed (scripts/k8s.sh build):" >&2
    tail -n 40 .k8s/build.log >&2
    exit 1
fi
echo "test.sh: Kubernetes control plane and Helm ready (after $((SECONDS - k8s_start)) s)" >&2
cargo test --all-targets -- --test-threads "${TEST_THREADS:-2}"
