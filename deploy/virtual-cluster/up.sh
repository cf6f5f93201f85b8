#!/usr/bin/env bash
# Starts a real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) plus kwok simulating N nodes, all built
# from the Go module proxy at pinned versions (see build/go.mod, build/kwok/go.mod).
#
#   deploy/virtual-cluster/up.sh      # prints KUBECONFIG; idempotent
#   source "${VCLUSTER_STATE:-/tmp/startup-autoscaler-vcluster}/env"
#   deploy/virtual-cluster/down.sh
#
# Environment (all optional):
#   VCLUSTER_STATE                     state dir (kubeconfig, pki, logs, pids)  [/tmp/startup-autoscaler-vcluster]
#   VCLUSTER_CACHE                     binary cache root                        [~/.cache/startup-autoscaler/vcluster]
#   VCLUSTER_APISERVER_PORT            kube-apiserver secure port               [a free port]
#   VCLUSTER_NODES                     number of kwok nodes                     [3]
#   VCLUSTER_NODE_CPU / _MEMORY / _PODS  capacity of each node                  [1000 / 4Ti / 1000]
#   VCLUSTER_DEFAULT_READY_DELAY_SECONDS     ready delay without the annotation [0]
#   VCLUSTER_DEFAULT_TERMINATE_DELAY_SECONDS delete delay without the annotation [0]
#   VCLUSTER_KUBE_API_QPS / _BURST     controller-manager client rate limit     [100 / 200]
#   VCLUSTER_TIMEOUT                   seconds to wait for each readiness step  [120]
# shellcheck disable=SC2317 # some functions are only invoked indirectly (wait_for)
set -euo pipefail
# The whole script is one brace group, so bash parses it completely before running it
# (editing or git-pulling this file while it runs cannot corrupt a running build/up).
{
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

READY_DELAY_ANNOTATION="startup-autoscaler.dev/ready-delay-seconds"
NODES="${VCLUSTER_NODES:-3}"
NODE_CPU="${VCLUSTER_NODE_CPU:-1000}"
NODE_MEMORY="${VCLUSTER_NODE_MEMORY:-4Ti}"
NODE_PODS="${VCLUSTER_NODE_PODS:-1000}"
TIMEOUT="${VCLUSTER_TIMEOUT:-120}"
QPS="${VCLUSTER_KUBE_API_QPS:-100}"
BURST="${VCLUSTER_KUBE_API_BURST:-200}"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
PKI="$STATE_DIR/pki"

need_cmd kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/) or apt-get install kubectl"
need_cmd openssl "apt-get install openssl"
need_cmd curl "apt-get install curl"
need_cmd sha256sum "apt-get install coreutils"
[[ "$NODES" =~ ^[0-9]+$ && "$NODES" -ge 1 ]] || die "VCLUSTER_NODES must be a positive integer, got '$NODES'"

kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s "$@"; }

print_info() {
  # shellcheck disable=SC1091
  source "$STATE_DIR/env"
  cat <<EOF
vcluster: up: Kubernetes $K8S_VERSION at $VCLUSTER_APISERVER_URL with $NODES kwok node(s)
vcluster: kubeconfig: $KUBECONFIG_PATH   (all settings: source $STATE_DIR/env)
export KUBECONFIG=$KUBECONFIG_PATH
EOF
}

all_running() {
  local c
  [[ -f "$STATE_DIR/ready" && -f "$STATE_DIR/env" ]] || return 1
  for c in "${VC_COMPONENTS[@]}"; do
    pid_alive "$STATE_DIR/pids/$c.pid" || return 1
  done
  kc get --raw=/readyz >/dev/null 2>&1
}

# --- already up? -----------------------------------------------------------
lock_state
if all_running; then
  NODES="$(kc get nodes -l startup-autoscaler.dev/virtual-node=true --no-headers 2>/dev/null | wc -l)"
  print_info
  exit 0
fi
if [[ -e "$STATE_DIR" ]]; then
  is_state_dir || die "$STATE_DIR exists but was not created by up.sh; refusing to delete it (set VCLUSTER_STATE to another path)"
  log "found a stale or partial cluster in $STATE_DIR; stopping it and starting fresh"
  stop_all
  rm -rf "$STATE_DIR"
fi

# --- binaries --------------------------------------------------------------
BIN="$("$VC_DIR/build.sh")"

# --- ports -----------------------------------------------------------------
port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
declare -A TAKEN=()
free_port() {
  local p
  for _ in $(seq 1 200); do
    if command -v python3 >/dev/null 2>&1; then
      p="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    else
      p=$((20000 + RANDOM % 30000))
    fi
    if [[ -z "${TAKEN[$p]:-}" ]] && ! port_in_use "$p"; then
      TAKEN[$p]=1
      echo "$p"
      return 0
    fi
  done
  die "could not find a free TCP port on 127.0.0.1"
}
APISERVER_PORT="${VCLUSTER_APISERVER_PORT:-}"
if [[ -n "$APISERVER_PORT" ]]; then
  port_in_use "$APISERVER_PORT" && die "VCLUSTER_APISERVER_PORT=$APISERVER_PORT is already in use on 127.0.0.1; pick another or unset it"
  TAKEN[$APISERVER_PORT]=1
else
  APISERVER_PORT="$(free_port)"
fi
ETCD_PORT="$(free_port)"
ETCD_PEER_PORT="$(free_port)"
KCM_PORT="$(free_port)"
SCHED_PORT="$(free_port)"
KWOK_PORT="$(free_port)"

mkdir -p "$STATE_DIR"/{pki,logs,pids,etcd}
echo "startup-autoscaler virtual cluster state; removed by down.sh" >"$STATE_DIR/.vcluster-state"
chmod 700 "$STATE_DIR" "$STATE_DIR/etcd" "$PKI"

# --- PKI -------------------------------------------------------------------
ssl() { openssl "$@" 2>>"$STATE_DIR/logs/openssl.log" >/dev/null || die "openssl $1 failed (see $STATE_DIR/logs/openssl.log)"; }
new_key() { ssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
# sign NAME SUBJECT EXTENSIONS
sign() {
  new_key "$PKI/$1.key"
  ssl req -new -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr"
  printf '%s\n' "$3" >"$PKI/$1.ext"
  ssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt"
  rm -f "$PKI/$1.csr" "$PKI/$1.ext"
}
CLIENT_EXT=$'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
new_key "$PKI/ca.key"
ssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=startup-autoscaler-vcluster-ca" -days 3650 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -out "$PKI/ca.crt"
sign apiserver "/CN=kube-apiserver" $'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local'
sign admin "/O=system:masters/CN=vcluster-admin" "$CLIENT_EXT"
sign kube-controller-manager "/CN=system:kube-controller-manager" "$CLIENT_EXT"
sign kube-scheduler "/CN=system:kube-scheduler" "$CLIENT_EXT"
sign kwok "/O=system:masters/CN=kwok-controller" "$CLIENT_EXT"
sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$CLIENT_EXT"
# separate CA for the aggregation layer's request-header authentication (as kubeadm does)
new_key "$PKI/front-proxy-ca.key"
ssl req -x509 -new -key "$PKI/front-proxy-ca.key" -subj "/CN=startup-autoscaler-vcluster-front-proxy-ca" -days 3650 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -out "$PKI/front-proxy-ca.crt"
new_key "$PKI/front-proxy-client.key"
ssl req -new -key "$PKI/front-proxy-client.key" -subj "/CN=front-proxy-client" -out "$PKI/front-proxy-client.csr"
printf '%s\n' "$CLIENT_EXT" >"$PKI/front-proxy-client.ext"
ssl x509 -req -in "$PKI/front-proxy-client.csr" -CA "$PKI/front-proxy-ca.crt" -CAkey "$PKI/front-proxy-ca.key" -CAcreateserial \
  -days 3650 -sha256 -extfile "$PKI/front-proxy-client.ext" -out "$PKI/front-proxy-client.crt"
rm -f "$PKI/front-proxy-client.csr" "$PKI/front-proxy-client.ext"
ssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key"
ssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
ADMIN_TOKEN="$(openssl rand -hex 32)"
printf '%s' "$ADMIN_TOKEN" >"$STATE_DIR/admin-token"
printf '%s,vcluster-admin-token,vcluster-admin-token,system:masters\n' "$ADMIN_TOKEN" >"$PKI/tokens.csv"
chmod 600 "$PKI"/*.key "$PKI/tokens.csv" "$STATE_DIR/admin-token"

b64() { base64 -w0 <"$1"; }
# write_kubeconfig FILE CERTNAME
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: startup-autoscaler-vcluster
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$PKI/$2.crt")
    client-key-data: $(b64 "$PKI/$2.key")
contexts:
- name: startup-autoscaler-vcluster
  context:
    cluster: startup-autoscaler-vcluster
    user: $2
    namespace: default
current-context: startup-autoscaler-vcluster
EOF
  chmod 600 "$1"
}
write_kubeconfig "$KUBECONFIG_PATH" admin
for c in kube-controller-manager kube-scheduler kwok; do
  write_kubeconfig "$STATE_DIR/$c.kubeconfig" "$c"
done

ms() { awk -v s="$1" 'BEGIN { if (s !~ /^[0-9]+([.][0-9]+)?$/) exit 1; printf "%d", s * 1000 }' || die "$2 must be a number of seconds, got '$1'"; }
READY_MS="$(ms "${VCLUSTER_DEFAULT_READY_DELAY_SECONDS:-0}" VCLUSTER_DEFAULT_READY_DELAY_SECONDS)"
TERM_MS="$(ms "${VCLUSTER_DEFAULT_TERMINATE_DELAY_SECONDS:-0}" VCLUSTER_DEFAULT_TERMINATE_DELAY_SECONDS)"
sed -e "s/__DEFAULT_READY_DELAY_MS__/$READY_MS/g" -e "s/__DEFAULT_TERMINATE_DELAY_MS__/$TERM_MS/g" \
  "$VC_DIR/kwok-stages.yaml" >"$STATE_DIR/kwok.yaml"

cat >"$STATE_DIR/env" <<EOF
export KUBECONFIG=$KUBECONFIG_PATH
export VCLUSTER_STATE=$STATE_DIR
export VCLUSTER_APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
export VCLUSTER_CA_FILE=$PKI/ca.crt
export VCLUSTER_ADMIN_TOKEN_FILE=$STATE_DIR/admin-token
export VCLUSTER_READY_DELAY_ANNOTATION=$READY_DELAY_ANNOTATION
export VCLUSTER_TERMINATE_DELAY_ANNOTATION=startup-autoscaler.dev/terminate-delay-seconds
export VCLUSTER_ETCD_URL=http://127.0.0.1:$ETCD_PORT
export VCLUSTER_K8S_VERSION=$K8S_VERSION
export VCLUSTER_KWOK_VERSION=$KWOK_VERSION
export VCLUSTER_BIN=$BIN
EOF

# --- processes ---------------------------------------------------------------
start() { # start NAME ARGS...
  local name="$1"
  shift
  setsid "$BIN/$name" "$@" >"$STATE_DIR/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$STATE_DIR/pids/$name.pid"
}
# wait_for DESC COMPONENT CMD... : poll CMD until it succeeds; fail fast if COMPONENT died.
wait_for() {
  local desc="$1" comp="$2" deadline=$((SECONDS + TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$comp" ]] && ! pid_alive "$STATE_DIR/pids/$comp.pid"; then
      tail -n 15 "$STATE_DIR/logs/$comp.log" >&2 || true
      die "$comp exited while waiting for $desc (log: $STATE_DIR/logs/$comp.log); run $VC_DIR/down.sh to clean up"
    fi
    if ((SECONDS >= deadline)); then
      die "timed out after ${TIMEOUT}s waiting for $desc (logs: $STATE_DIR/logs/); run $VC_DIR/down.sh to clean up"
    fi
    sleep 0.2
  done
}
https_ok() { curl -fsk --max-time 2 "https://127.0.0.1:$1/healthz"; }

start etcd --name=vcluster --data-dir="$STATE_DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="vcluster=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync --auto-compaction-retention=1 --quota-backend-bytes=4294967296 --log-level=warn
wait_for "etcd on 127.0.0.1:$ETCD_PORT" etcd curl -fs --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver \
  --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" --etcd-compaction-interval=15s --watch-cache-sizes=pods#0 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true \
  --profiling=false
wait_for "kube-apiserver /readyz on 127.0.0.1:$APISERVER_PORT" kube-apiserver kc get --raw=/readyz

start kube-controller-manager \
  --kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --controllers='*' --kube-api-qps="$QPS" --kube-api-burst="$BURST" --profiling=false
start kube-scheduler \
  --kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false --profiling=false
start kwok \
  --kubeconfig="$STATE_DIR/kwok.kubeconfig" --config="$STATE_DIR/kwok.yaml" \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=10.244.0.1/16 --node-ip=10.240.0.1 --node-lease-duration-seconds=40 \
  --server-address="127.0.0.1:$KWOK_PORT"

{
  for i in $(seq 1 "$NODES"); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: vcluster-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: vcluster-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    startup-autoscaler.dev/virtual-node: "true"
status:
  allocatable: {cpu: "$NODE_CPU", memory: "$NODE_MEMORY", pods: "$NODE_PODS"}
  capacity: {cpu: "$NODE_CPU", memory: "$NODE_MEMORY", pods: "$NODE_PODS"}
EOF
  done
} >"$STATE_DIR/nodes.yaml"
kc create -f "$STATE_DIR/nodes.yaml" >/dev/null || die "could not register the kwok nodes (kubectl create -f $STATE_DIR/nodes.yaml)"

wait_for "kube-controller-manager /healthz" kube-controller-manager https_ok "$KCM_PORT"
wait_for "kube-scheduler /healthz" kube-scheduler https_ok "$SCHED_PORT"
wait_for "kwok /healthz" kwok curl -fs --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"
nodes_ready() {
  local out
  out="$(kc get nodes -l startup-autoscaler.dev/virtual-node=true \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.spec.taints}{"\n"}{end}')"
  # every node Ready=True and without (not-ready) taints
  [[ "$(grep -c ' True $' <<<"$out")" -eq "$NODES" ]]
}
wait_for "$NODES node(s) Ready and untainted" kwok nodes_ready
wait_for "ServiceAccount default/default" kube-controller-manager kc -n default get serviceaccount default
wait_for "ConfigMap default/kube-root-ca.crt" kube-controller-manager kc -n default get configmap kube-root-ca.crt

date -Is >"$STATE_DIR/ready"
print_info
exit
}
