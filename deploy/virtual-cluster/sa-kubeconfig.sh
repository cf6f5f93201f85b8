#!/usr/bin/env bash
# Prints a kubeconfig that authenticates as a ServiceAccount of the running virtual
# cluster (bound token from the TokenRequest API), so a process can run with exactly
# the RBAC its manifests grant:
#   deploy/virtual-cluster/sa-kubeconfig.sh NAMESPACE SERVICEACCOUNT [DURATION] > sa.kubeconfig
# DURATION defaults to 1h (kubectl create token --duration syntax).
set -euo pipefail
# The whole script is one brace group, so bash parses it completely before running it.
{
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $# -ge 2 ]] || die "usage: $0 NAMESPACE SERVICEACCOUNT [DURATION]"
[[ -f "$STATE_DIR/env" ]] || die "no virtual cluster in $STATE_DIR; run $VC_DIR/up.sh first"
# shellcheck disable=SC1091
source "$STATE_DIR/env"
token="$(kubectl -n "$1" create token "$2" --duration="${3:-1h}")" ||
  die "could not create a token for ServiceAccount $1/$2 (does it exist?)"
cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: startup-autoscaler-vcluster
  cluster:
    server: $VCLUSTER_APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$VCLUSTER_CA_FILE")
users:
- name: $1-$2
  user:
    token: $token
contexts:
- name: $1-$2
  context: {cluster: startup-autoscaler-vcluster, user: $1-$2, namespace: $1}
current-context: $1-$2
EOF
exit
}
