#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, built from Go modules, for the operator's tests.
#
#   scripts/k8s.sh build              builds (once) kube-apiserver, kube-controller-manager,
#                                     kubectl, etcd and helm into .k8s/bin/<key>/ and prints
#                                     that folder; later calls reuse it
#   scripts/k8s.sh start DIR [--owner PID]
#                                     starts etcd, kube-apiserver (RBAC enforced, audit log)
#                                     and kube-controller-manager with state in DIR; prints
#                                     DIR/admin.kubeconfig. With --owner, everything stops
#                                     when process PID exits (tests use this)
#   scripts/k8s.sh stop DIR           stops what `start DIR` started
#   scripts/k8s.sh bin                prints the binaries' folder (building it if missing)
#
# The versions are the ones pinned in scripts/k8s/*/go.mod (Kubernetes v1.37.2, the newest
# that k8s-openapi's `latest` feature covers; etcd v3.6.16; Helm v3.22.0), so a cached folder
# is reused only while those files are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/scripts/k8s"
CACHE="${CLUSTERSYNC_K8S_CACHE:-$ROOT/.k8s}"
# -trimpath and stripped symbols: smaller binaries and faster links.
BUILD_FLAGS="-trimpath -ldflags=-s -w"
# Built from a module, the Kubernetes binaries would call themselves v0.0.0-master (kubectl
# cannot parse that, and Helm's kubeVersion checks fail); stamp the pinned version, as
# Kubernetes' own build does.
k8s_version() { awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$TOOLS/kubernetes/go.mod"; }
K8S_LDFLAGS() {
    local v major minor
    v="$(k8s_version)"
    major="${v#v}"; major="${major%%.*}"
    minor="${v#v*.}"; minor="${minor%%.*}"
    local x=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        x+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    echo "-s -w$x"
}
# Helm's own release build stamps its version and the Kubernetes version it renders for when
# no cluster is asked (`helm template`, `helm lint`); without them it says v3.22 and v1.20.
HELM_LDFLAGS() {
    local v k8s minor
    v="$(ver helm helm.sh/helm/v3)"
    k8s="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$TOOLS/helm/go.mod")"
    minor="${k8s#v0.}"; minor="${minor%%.*}"
    echo "-s -w -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
}

die() { echo "k8s.sh: $*" >&2; exit 1; }

key() {
    # The pinned versions and the build flags; not the rest of this script, so editing how
    # the control plane starts does not cost a rebuild.
    { cat "$TOOLS"/*/go.mod "$TOOLS"/*/go.sum; echo "$BUILD_FLAGS $(K8S_LDFLAGS) $(HELM_LDFLAGS)"; } | sha256sum | cut -c1-16
}

bin_dir() { echo "$CACHE/bin/$(key)"; }

build() {
    local out
    out="$(bin_dir)"
    if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kubectl" \
        && -x "$out/etcd" && -x "$out/helm" ]]; then
        echo "$out"
        return
    fi
    command -v go >/dev/null || die "go is not on PATH; install Go 1.26 or later"
    local tmp="$out.partial" start=$SECONDS
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # The module cache and build cache (GOMODCACHE, GOCACHE) make a rebuild quick.
    local flags=(-trimpath "-ldflags=-s -w")
    echo "k8s.sh: building kube-apiserver, kube-controller-manager and kubectl (Kubernetes $(k8s_version)); a cold build takes 15 to 20 minutes on 2 cores" >&2
    (cd "$TOOLS/kubernetes" && go build -trimpath "-ldflags=$(K8S_LDFLAGS)" -o "$tmp/" tool)
    echo "k8s.sh: building etcd $(ver etcd go.etcd.io/etcd/server/v3)" >&2
    (cd "$TOOLS/etcd" && go build "${flags[@]}" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    echo "k8s.sh: building helm $(ver helm helm.sh/helm/v3)" >&2
    (cd "$TOOLS/helm" && go build -trimpath "-ldflags=$(HELM_LDFLAGS)" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm)
    rm -rf "$out"
    mv "$tmp" "$out"
    # Binaries of other pinned versions are not used again.
    find "$CACHE/bin" -mindepth 1 -maxdepth 1 ! -name "$(basename "$out")" -exec rm -rf {} +
    echo "k8s.sh: built in $((SECONDS - start)) s into $out" >&2
    echo "$out"
}

# ver MODULE_DIR PATH: the version go.mod pins for PATH.
ver() { awk -v p="$2" '$1 == p && $2 ~ /^v/ {print $2; exit}' "$TOOLS/$1/go.mod"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_until SECONDS WHAT COMMAND...: bounded poll; gives up at once when a started server
# has exited.
wait_until() {
    local limit=$1 what=$2 start=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        local dead=""
        while read -r name pid; do
            kill -0 "$pid" 2>/dev/null || dead="$name"
        done <"$DIR/pids"
        if [[ -n "$dead" ]] || ((SECONDS - start > limit)); then
            echo "k8s.sh: $what did not come up${dead:+ ($dead exited)}${dead:- within ${limit}s}; logs in $DIR/*.log:" >&2
            tail -n 20 "$DIR"/*.log >&2 || true
            stop_dir
            exit 1
        fi
        sleep 0.3
    done
}

certs() {
    local d="$DIR/pki"
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=clustersync-test-ca" \
        -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    # sign NAME SUBJECT [SAN]
    sign() {
        local ext="$d/$1.ext"
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
        [[ -n "${3:-}" ]] && echo "subjectAltName=$3" >>"$ext"
        openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
        openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
            -days 3650 -extfile "$ext" -out "$d/$1.crt" 2>/dev/null
    }
    sign apiserver "/CN=kube-apiserver" \
        "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    sign admin "/O=system:masters/CN=clustersync-test-admin"
    sign controller-manager "/CN=system:kube-controller-manager"
    openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
    openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

kubeconfig() { # FILE USER
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: clustersync-test
    cluster:
      server: https://127.0.0.1:$API_PORT
      certificate-authority: $DIR/pki/ca.crt
users:
  - name: $2
    user:
      client-certificate: $DIR/pki/$2.crt
      client-key: $DIR/pki/$2.key
contexts:
  - name: clustersync-test
    context: {cluster: clustersync-test, user: $2}
current-context: clustersync-test
EOF
}

start() {
    local bin owner=""
    DIR="$(mkdir -p "$1" && cd "$1" && pwd)"
    shift
    while (($#)); do
        case "$1" in
        --owner) owner="$2"; shift 2 ;;
        *) die "unknown option $1" ;;
        esac
    done
    bin="$(build)"
    [[ -f "$DIR/pids" ]] && stop_dir
    rm -rf "$DIR/etcd" "$DIR/pki" "$DIR"/*.log "$DIR/pids"
    local etcd_port peer_port kcm_port
    etcd_port=$(free_port)
    peer_port=$(free_port)
    API_PORT=$(free_port)
    kcm_port=$(free_port)
    certs
    kubeconfig "$DIR/admin.kubeconfig" admin
    kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager
    cat >"$DIR/audit-policy.yaml" <<'EOF'
# Every request, at Metadata level: the tests count the operator's requests from it.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
EOF
    # Detached from this shell's session so that a test harness's process group signals do
    # not reach them; stop_dir (or the owner watch) ends them.
    setsid "$bin/etcd" --name default --data-dir "$DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "default=http://127.0.0.1:$peer_port" \
        --listen-metrics-urls "" --unsafe-no-fsync --log-level warn \
        >"$DIR/etcd.log" 2>&1 </dev/null &
    echo "etcd $!" >>"$DIR/pids"
    setsid "$bin/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
        --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
        --client-ca-file "$DIR/pki/ca.crt" \
        --service-account-key-file "$DIR/pki/sa.pub" \
        --service-account-signing-key-file "$DIR/pki/sa.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --api-audiences https://kubernetes.default.svc \
        --authorization-mode Node,RBAC \
        --service-cluster-ip-range 10.96.0.0/16 \
        --endpoint-reconciler-type none \
        --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/audit.log" \
        --audit-log-maxsize 200 --audit-log-maxbackup 1 \
        --enable-priority-and-fairness=false \
        >"$DIR/kube-apiserver.log" 2>&1 </dev/null &
    echo "kube-apiserver $!" >>"$DIR/pids"
    local kc=("$bin/kubectl" --kubeconfig "$DIR/admin.kubeconfig" --request-timeout 5s)
    wait_until 90 kube-apiserver "${kc[@]}" get --raw /readyz
    # Garbage collection (owner references), Deployments and ReplicaSets, namespaces and
    # ServiceAccounts; no node lifecycle (the tests' kubelet is not a real one) and no cloud.
    setsid "$bin/kube-controller-manager" \
        --kubeconfig "$DIR/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$kcm_port" \
        --leader-elect=false --use-service-account-credentials=true \
        --root-ca-file "$DIR/pki/ca.crt" \
        --service-account-private-key-file "$DIR/pki/sa.key" \
        --controllers '*,-node-lifecycle-controller,-node-ipam-controller,-persistentvolume-binder-controller,-persistentvolume-attach-detach-controller,-persistentvolume-expander-controller' \
        --concurrent-gc-syncs 5 --concurrent-deployment-syncs 5 --concurrent-replicaset-syncs 5 \
        >"$DIR/kube-controller-manager.log" 2>&1 </dev/null &
    echo "kube-controller-manager $!" >>"$DIR/pids"
    wait_until 60 kube-controller-manager curl -skf "https://127.0.0.1:$kcm_port/healthz"
    # The default ServiceAccount appears once the controller manager runs: pods need it.
    wait_until 60 "the default ServiceAccount" "${kc[@]}" -n default get serviceaccount default
    {
        echo "KUBECONFIG=$DIR/admin.kubeconfig"
        echo "K8S_BIN=$bin"
        echo "K8S_API=https://127.0.0.1:$API_PORT"
        echo "K8S_AUDIT_LOG=$DIR/audit.log"
    } >"$DIR/env"
    if [[ -n "$owner" ]]; then
        # Stops the control plane when the owner (a test process) exits, however it exits.
        setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" stop "$3"' \
            _ "$owner" "${BASH_SOURCE[0]}" "$DIR" >/dev/null 2>&1 </dev/null &
    fi
    echo "$DIR/admin.kubeconfig"
}

stop_dir() {
    [[ -f "$DIR/pids" ]] || return 0
    local pids
    pids=$(awk '{print $2}' "$DIR/pids" | tac)
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        local alive=0
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
    rm -f "$DIR/pids"
}

case "${1:-}" in
build) build ;;
bin) build ;;
start)
    [[ -n "${2:-}" ]] || die "usage: scripts/k8s.sh start DIR [--owner PID]"
    start "${@:2}"
    ;;
stop)
    [[ -n "${2:-}" ]] || die "usage: scripts/k8s.sh stop DIR"
    DIR="$2"
    stop_dir
    ;;
*)
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
