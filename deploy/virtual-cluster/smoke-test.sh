#!/usr/bin/env bash
# End-to-end check of a running virtual cluster (start it with up.sh first):
# real ReplicaSet controller + scheduler + kwok readiness delay, scale subresource,
# pod deletion, ServiceAccount token refused outside its Role, Leases.
# Uses (and finally deletes) the namespace vcluster-smoke. Exit 0 = all good.
set -euo pipefail
# The whole script is one brace group, so bash parses it completely before running it
# (editing or git-pulling this file while it runs cannot corrupt a running build/up).
{
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -f "$STATE_DIR/env" ]] || die "no virtual cluster in $STATE_DIR; run $VC_DIR/up.sh first"
# shellcheck disable=SC1091
source "$STATE_DIR/env"
NS=vcluster-smoke
DELAY=5
k() { kubectl --request-timeout=20s -n "$NS" "$@"; }
ok() { echo "smoke: ok: $*"; }
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
trap 'kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true' EXIT

# 1. Deployment -> ReplicaSet -> pods -> scheduled on kwok nodes -> Running -> Ready after DELAY s
k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: infer}
spec:
  replicas: 3
  selector: {matchLabels: {app: infer}}
  template:
    metadata:
      labels: {app: infer}
      annotations: {"$VCLUSTER_READY_DELAY_ANNOTATION": "$DELAY"}
    spec:
      containers:
      - name: worker
        image: registry.invalid/infer:1
        resources: {requests: {cpu: "1", memory: 1Gi}}
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
EOF
k rollout status deployment/infer --timeout=60s >/dev/null || fail "deployment did not become available"
pods_json="$(k get pods -l app=infer -o json)"
n="$(jq '.items | length' <<<"$pods_json")"
[[ "$n" -eq 3 ]] || fail "expected 3 pods, got $n"
jq -e 'all(.items[]; .spec.nodeName | startswith("vcluster-node-"))' <<<"$pods_json" >/dev/null || fail "pods not bound to kwok nodes"
jq -e 'all(.items[]; .status.phase == "Running")' <<<"$pods_json" >/dev/null || fail "pods not Running"
# Timestamps have 1 s resolution: accept DELAY-1 .. DELAY+3 s between creation and Ready.
jq -r '.items[] | [.metadata.name,
  ((.status.conditions[] | select(.type == "Ready") | .lastTransitionTime | fromdate) - (.metadata.creationTimestamp | fromdate))] | @tsv' \
  <<<"$pods_json" | while read -r name secs; do
  ((secs >= DELAY - 1 && secs <= DELAY + 3)) || fail "$name became Ready ${secs}s after creation, expected ~${DELAY}s"
  echo "smoke:     $name Ready ${secs}s after creation"
done
ok "3 pods created by the ReplicaSet controller, bound to kwok nodes, Running, Ready after ~${DELAY}s"

# 2. scale subresource -> 1; the surplus pods must disappear (kwok finalizes deletion)
k patch deployment infer --subresource=scale --type=merge -p '{"spec":{"replicas":1}}' >/dev/null
for _ in $(seq 1 50); do
  n="$(k get pods -l app=infer --no-headers 2>/dev/null | wc -l)"
  [[ "$n" -eq 1 ]] && break
  sleep 0.2
done
[[ "$n" -eq 1 ]] || fail "after scaling to 1, $n pods remain"
ok "scaled to 1 via the scale subresource; surplus pods deleted"

# 3. ServiceAccount token is refused outside its Role
k create serviceaccount scaler >/dev/null
k create role scaler --verb=get,list,watch --resource=pods >/dev/null
k create rolebinding scaler --role=scaler --serviceaccount="$NS:scaler" >/dev/null
token="$(k create token scaler --duration=10m)"
code() { curl -s -o /dev/null -w '%{http_code}' --cacert "$VCLUSTER_CA_FILE" -H "Authorization: Bearer $token" "$VCLUSTER_APISERVER_URL$1"; }
c="$(code "/api/v1/namespaces/$NS/pods")"
[[ "$c" == 200 ]] || fail "SA token listing pods (allowed by its Role): HTTP $c"
c="$(code "/api/v1/namespaces/$NS/secrets")"
[[ "$c" == 403 ]] || fail "SA token listing secrets (not in its Role): HTTP $c, expected 403"
c="$(code "/api/v1/namespaces/default/pods")"
[[ "$c" == 403 ]] || fail "SA token listing pods in another namespace: HTTP $c, expected 403"
token=invalid-token
c="$(code "/api/v1/namespaces/$NS/pods")"
[[ "$c" == 401 ]] || fail "invalid bearer token: HTTP $c, expected 401"
ok "ServiceAccount token: 200 inside its Role, 403 for secrets and other namespaces; bad token 401"

# 4. Leases (coordination.k8s.io), incl. optimistic concurrency
k apply -f - >/dev/null <<EOF
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: smoke-leader}
spec: {holderIdentity: a, leaseDurationSeconds: 15}
EOF
k patch lease smoke-leader --type=merge -p '{"spec":{"holderIdentity":"b"}}' >/dev/null
[[ "$(k get lease smoke-leader -o jsonpath='{.spec.holderIdentity}')" == b ]] || fail "lease update lost"
if k get lease smoke-leader -o json | jq '.metadata.resourceVersion = "1"' | k replace -f - >/dev/null 2>&1; then
  fail "stale lease update was accepted"
fi
n="$(kubectl -n kube-node-lease get leases --no-headers | wc -l)"
((n >= 1)) || fail "no node leases in kube-node-lease"
ok "Leases: create/update work, stale resourceVersion rejected; $n node lease(s) renewed by kwok"
echo "smoke: all checks passed"
exit
}
