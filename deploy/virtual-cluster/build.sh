#!/usr/bin/env bash
# Builds (once) the pinned virtual-cluster binaries from the Go module proxy into
#   ${VCLUSTER_CACHE:-$HOME/.cache/startup-autoscaler/vcluster}/<k8s-version>-<hash>/bin
# and prints that directory. A no-op when the binaries are already cached.
# Called by up.sh; can be run on its own (e.g. to warm a CI machine).
set -euo pipefail
# The whole script is one brace group, so bash parses it completely before running it
# (editing or git-pulling this file while it runs cannot corrupt a running build/up).
{
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

have_all_bins() {
  local b
  for b in "${VC_COMPONENTS[@]}"; do
    [[ -x "$VC_BIN/$b" ]] || return 1
  done
}

if have_all_bins; then
  echo "$VC_BIN"
  exit 0
fi

need_cmd go "the virtual cluster binaries are not cached in $VC_CACHE_DIR and building them needs Go >= 1.24: install it from https://go.dev/dl/ (Debian 12's golang package is too old)"
need_cmd flock "install util-linux (apt-get install util-linux)"
go_minor="$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')"
[[ -n "$go_minor" && "$go_minor" -ge 24 ]] || die "Go >= 1.24 is needed to build the virtual cluster, found '$(go env GOVERSION)'; install a newer Go from https://go.dev/dl/"

mkdir -p "$VC_CACHE_DIR"
exec 9>"$VC_CACHE_DIR/.build.lock"
if ! flock -n 9; then
  log "another build of $VC_CACHE_DIR is running; waiting for it"
  flock 9
fi
if have_all_bins; then # built by whoever held the lock
  echo "$VC_BIN"
  exit 0
fi

tmp="$VC_CACHE_DIR/bin.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
build_log="$VC_CACHE_DIR/build.log"

export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
k8s_minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done

log "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION"
log "from the Go module proxy (first build: ~6 min on 2 idle cores, 15+ min on busy ones; log: $build_log)"
start=$(date +%s)
{
  echo "# $(date -Is) go=$(go env GOVERSION) GOPROXY=$(go env GOPROXY)"
  (cd "$VC_BUILD_DIR" && nice -n "${VCLUSTER_BUILD_NICE:-10}" go build -trimpath -ldflags="$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    ./cmd/etcd)
  (cd "$VC_BUILD_DIR/kwok" && nice -n "${VCLUSTER_BUILD_NICE:-10}" go build -trimpath -ldflags="-s -w" -o "$tmp/" \
    sigs.k8s.io/kwok/cmd/kwok)
} >>"$build_log" 2>&1 || {
  tail -n 30 "$build_log" >&2
  die "go build failed (full log: $build_log); check network access to the Go module proxy (GOPROXY=$(go env GOPROXY))"
}
for b in "${VC_COMPONENTS[@]}"; do
  [[ -x "$tmp/$b" ]] || die "build finished but $b is missing in $tmp (log: $build_log)"
done
cat >"$tmp/VERSIONS" <<EOF
kubernetes=$K8S_VERSION
etcd=$ETCD_VERSION
kwok=$KWOK_VERSION
go=$(go env GOVERSION)
built=$(date -Is)
build_seconds=$(($(date +%s) - start))
EOF
rm -rf "$VC_BIN"
mv "$tmp" "$VC_BIN"
trap - EXIT
log "built in $(($(date +%s) - start))s -> $VC_BIN"
echo "$VC_BIN"
exit
}
