#!/usr/bin/env bash
# Stops a control plane started by tests/cluster/up.sh and removes its directory.
#
#   tests/cluster/down.sh [DIR]
#
# DIR defaults to $RECUR_CLUSTER_DIR, else to the directory of $KUBECONFIG when up.sh made it.
# Sends SIGTERM, then SIGKILL to what is left after $RECUR_DOWN_TIMEOUT seconds (default 15),
# checks that no process of the cluster remains, and only then removes DIR. A missing DIR is
# not an error (nothing to stop); a directory up.sh did not make is never touched.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=proc.sh
. "$here/proc.sh"

log() { printf '[down] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

dir=${1:-${RECUR_CLUSTER_DIR:-}}
if [ -z "$dir" ] && [ -n "${KUBECONFIG:-}" ] && [ -f "$(dirname "$KUBECONFIG")/.recur-cluster" ]; then
  dir=$(dirname "$KUBECONFIG")
fi
[ -n "$dir" ] || die "which cluster? Give its directory, or set RECUR_CLUSTER_DIR (or KUBECONFIG=DIR/kubeconfig)"
if [ ! -e "$dir" ]; then
  log "$dir does not exist: nothing to stop"
  exit 0
fi
[ -d "$dir" ] || die "$dir is not a directory"
dir=$(cd "$dir" && pwd -P)
[ -f "$dir/.recur-cluster" ] || die "$dir was not made by tests/cluster/up.sh (no .recur-cluster marker): refusing to touch it"
timeout=${RECUR_DOWN_TIMEOUT:-15}
start=$SECONDS

names_dir() { # pid: its command line mentions this cluster's directory (guards against pid reuse)
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$dir"
}

# This script and its callers (the watcher execs into it; make's shell names DIR) are never targets.
declare -A exempt=()
p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ]; do
  exempt[$p]=1
  p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || break
done

# Processes of this cluster found by looking, not by the pid file: one of the cluster's programs
# whose arguments name DIR. Catches anything the pid file missed.
scan() {
  local f p exe
  # One grep over every command line; then only the few hits are looked at closely.
  for f in $(grep -laF -- "$dir" /proc/[0-9]*/cmdline 2>/dev/null); do
    p=${f#/proc/}
    p=${p%/cmdline}
    [ -z "${exempt[$p]:-}" ] && alive "$p" || continue
    exe=$(tr '\0' '\n' <"$f" 2>/dev/null | head -n 2 | tr '\n' ' ')
    case $exe in
      */etcd\ * | */kube-apiserver\ * | */kube-controller-manager\ * | */daprd\ * | *watch-parent.sh\ *) echo "$p" ;;
      # The node's programs (node.sh), should node.sh --down have left one.
      */kubelet\ * | */kube-proxy\ * | */kube-scheduler\ * | */containerd\ * | */containerd-shim-runc-v2\ * | */coredns-recur\ *) echo "$p" ;;
    esac
  done
}

# A node started into this directory by node.sh goes first, before the processes are listed: its
# containers, mounts, bridge and iptables rules are removed by node.sh --down, while the
# apiserver it talks to still runs.
if [ -d "$dir/node" ]; then
  log "removing the node (node.sh --down)"
  "$here/node.sh" --down "$dir" || log "node.sh --down failed; going on (the directory is kept if anything stays mounted)"
fi
# Stop order: newest first (watcher, controller-manager, apiserver, then etcd), so each client
# goes before the server it talks to; an apiserver whose etcd is gone hangs in shutdown.
targets=() # "pid name", in stop order
declare -A seen=()
if [ -f "$dir/pids" ]; then
  while read -r name pid; do
    [ -n "$pid" ] && [ -z "${exempt[$pid]:-}" ] && alive "$pid" && names_dir "$pid" || continue
    targets=("$pid $name" "${targets[@]}")
    seen[$pid]=1
  done <"$dir/pids"
fi
for pid in $(scan); do
  [ -n "${seen[$pid]:-}" ] || targets+=("$pid unlisted process")
done

signal() { # signal pid: the whole process group when pid leads one (up.sh starts each with setsid)
  local pgid
  pgid=$(awk '{print $5}' "/proc/$2/stat" 2>/dev/null) || return 0
  if [ "$pgid" = "$2" ]; then
    kill "-$1" -- "-$2" 2>/dev/null || true
  else
    kill "-$1" "$2" 2>/dev/null || true
  fi
}

stop() { # pid name: SIGTERM, then SIGKILL after the timeout
  local pid=$1 name=$2 deadline=$((SECONDS + timeout))
  signal TERM "$pid"
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    log "$name (pid $pid) still runs ${timeout}s after SIGTERM: sending SIGKILL"
    signal KILL "$pid"
  fi
}

# Sidecars started into this directory by sidecars.sh go first: they talk to the apiserver.
if [ -f "$dir/sidecars.env" ] && [ -x "$(dirname "$0")/sidecars.sh" ]; then
  log "stopping the sidecars (sidecars.sh --down)"
  "$(dirname "$0")/sidecars.sh" --down "$dir" || log "sidecars.sh --down failed; going on"
fi
for t in "${targets[@]}"; do
  read -r pid name <<<"$t"
  log "stopping $name (pid $pid)"
  stop "$pid" "$name"
done

# Verify: nothing of this cluster may remain (SIGKILL takes effect at once; allow 5 s to be reaped).
deadline=$((SECONDS + 5))
while :; do
  left=$(scan)
  [ -z "$left" ] && break
  if ((SECONDS >= deadline)); then
    for pid in $left; do log "still running: pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"; done
    die "processes of the cluster in $dir remain; $dir is kept"
  fi
  sleep 0.1
done
# Never rm -rf through a mount (a container's root filesystem, a volume, a bind mount of the host).
mounted=$(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo)
if [ -n "$mounted" ]; then
  log "still mounted under $dir:"
  printf '    %s\n' $mounted >&2
  die "$dir is kept: unmount these (umount -R) and run down.sh again"
fi
rm -rf "$dir"
log "stopped ${#targets[@]} process(es) in $((SECONDS - start))s; removed $dir"
