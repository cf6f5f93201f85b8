#!/usr/bin/env bash
# Stops the virtual cluster started by up.sh and removes its state directory
# (the binary cache is kept). Idempotent: succeeds when nothing is running.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lock_state
if [[ ! -e "$STATE_DIR" ]]; then
  log "nothing to stop ($STATE_DIR does not exist)"
  exit 0
fi
[[ -d "$STATE_DIR/pids" || -f "$STATE_DIR/env" ]] || die "$STATE_DIR does not look like a virtual-cluster state dir; not removing it"
stop_all
rm -rf "$STATE_DIR"
log "stopped; removed $STATE_DIR"
