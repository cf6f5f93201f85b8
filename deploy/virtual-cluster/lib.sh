# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this
# Shared settings for up.sh / down.sh / build.sh. Sourced, not executed.

VC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VC_BUILD_DIR="$VC_DIR/build"
STATE_DIR="${VCLUSTER_STATE:-/tmp/startup-autoscaler-vcluster}"
CACHE_ROOT="${VCLUSTER_CACHE:-$HOME/.cache/startup-autoscaler/vcluster}"
VC_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

die() {
  echo "vcluster: ERROR: $*" >&2
  exit 1
}

log() {
  echo "vcluster: $*" >&2
}

need_cmd() { # need_cmd CMD HINT
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; $2"
}

# Pinned versions, read from the committed go.mod files.
mod_version() { # mod_version GO.MOD MODULE
  awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) && $0 !~ /=>/ { print ($1 == m ? $2 : $3); exit }' "$1"
}
K8S_VERSION="$(mod_version "$VC_BUILD_DIR/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version "$VC_BUILD_DIR/go.mod" go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(mod_version "$VC_BUILD_DIR/kwok/go.mod" sigs.k8s.io/kwok)"

# The cache key covers everything that determines the binaries (not the Go version:
# cached binaries must stay usable on a machine without Go).
VC_BUILD_REVISION=1 # bump when build.sh changes how binaries are built
vc_version_hash() {
  {
    echo "rev=$VC_BUILD_REVISION"
    cat "$VC_BUILD_DIR/go.mod" "$VC_BUILD_DIR/go.sum" "$VC_BUILD_DIR/tools.go" \
      "$VC_BUILD_DIR/cmd/etcd/main.go" "$VC_BUILD_DIR/kwok/go.mod" \
      "$VC_BUILD_DIR/kwok/go.sum" "$VC_BUILD_DIR/kwok/tools.go"
  } | sha256sum | cut -c1-16
}
VC_HASH="$(vc_version_hash)"
VC_CACHE_DIR="$CACHE_ROOT/$K8S_VERSION-$VC_HASH"
VC_BIN="$VC_CACHE_DIR/bin"

# is_state_dir: STATE_DIR was created by up.sh (marker file; pids/ + env for older runs).
is_state_dir() {
  [[ -f "$STATE_DIR/.vcluster-state" ]] || [[ -d "$STATE_DIR/pids" && -f "$STATE_DIR/env" ]]
}

# lock_state: serialize up.sh/down.sh runs on the same STATE_DIR (fd 8; children must
# not inherit it, see start() in up.sh).
lock_state() {
  need_cmd flock "install util-linux (apt-get install util-linux)"
  mkdir -p "$(dirname "$STATE_DIR")"
  exec 8>"$STATE_DIR.lock"
  if ! flock -n 8; then
    log "another up.sh/down.sh is running on $STATE_DIR; waiting for it"
    flock -w 900 8 || die "timed out waiting for the lock $STATE_DIR.lock"
  fi
}

# pid_alive PIDFILE -> true if the process recorded there runs and belongs to this
# virtual cluster (its command line mentions STATE_DIR), so recycled pids are never hit.
pid_alive() {
  local f="$1" pid
  [[ -s "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$STATE_DIR/" || return 1
}

# stop_all: TERM every recorded component (clients first, etcd last), give them 3 s, then
# KILL the rest. Graceful shutdown buys nothing here (down.sh deletes all state), and
# kube-apiserver can take up to its 60 s request timeout to drain watches.
stop_all() {
  local i name f pid waited
  [[ -d "$STATE_DIR/pids" ]] || return 0
  for ((i = ${#VC_COMPONENTS[@]} - 1; i >= 0; i--)); do
    name="${VC_COMPONENTS[$i]}"
    f="$STATE_DIR/pids/$name.pid"
    if pid_alive "$f"; then
      kill -TERM "$(cat "$f")" 2>/dev/null || true
      waited=0 # etcd last: give the others a moment so they do not hang on it
      while [[ "$name" == kube-apiserver ]] && pid_alive "$f" && ((waited < 20)); do
        sleep 0.1
        waited=$((waited + 1))
      done
    fi
  done
  waited=0
  for name in "${VC_COMPONENTS[@]}"; do
    f="$STATE_DIR/pids/$name.pid"
    while pid_alive "$f" && ((waited < 30)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if pid_alive "$f"; then
      pid="$(cat "$f")"
      kill -KILL "$pid" 2>/dev/null || true
      while [[ -r "/proc/$pid/cmdline" ]] && pid_alive "$f"; do sleep 0.05; done
    fi
    rm -f "$f"
  done
}
