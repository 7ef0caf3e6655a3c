#!/usr/bin/env bash
# Started by up.sh --watch-parent PID: waits until process PID exits, then tears the cluster in
# DIR down. Runs in its own session, so down.sh can stop it (and its tail) as one process group.
#
#   tests/cluster/watch-parent.sh PID DIR
set -uo pipefail
pid=${1:?usage: watch-parent.sh PID DIR}
dir=${2:?usage: watch-parent.sh PID DIR}
# GNU tail checks once a second whether PID still lives; it blocks until then.
tail --pid="$pid" -f /dev/null
echo "[watch-parent] pid $pid exited: tearing down $dir" >&2
exec "$(dirname "$0")/down.sh" "$dir"
