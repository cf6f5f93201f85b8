#!/usr/bin/env bash
# Stops the virtual cluster started by up.sh and removes its state directory
# (the binary cache is kept). Idempotent: succeeds when nothing is running.
set -euo pipefail
# The whole script is one brace group, so bash parses it completely before running it
# (editing or git-pulling this file while it runs cannot corrupt a running build/up).
{
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lock_state
if [[ ! -e "$STATE_DIR" ]]; then
  log "nothing to stop ($STATE_DIR does not exist)"
  exit 0
fi
is_state_dir || die "$STATE_DIR does not look like a virtual-cluster state dir; not removing it"
stop_all
rm -rf "$STATE_DIR"
log "stopped; removed $STATE_DIR"
exit
}
