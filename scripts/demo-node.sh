#!/usr/bin/env bash
# `make demo NODE=1`: the user's own path on a real node. Builds what is missing (the control
# plane, the node, Dapr's control plane and recur's images), starts a control plane and a node,
# then does what a user does: `helm install dapr` (Dapr's own chart), `helm install recur
# charts/recur`, the backends with their sidecars, `kubectl apply -f examples/`. Shows the pods
# and follows the backend's log until interrupted; then removes the node and the control plane.
#
#   RECUR_DEMO_SECONDS=60 scripts/demo-node.sh   # stop by itself after 60 s
#
# Needs root (kubelet, containerd and the node's network).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "make demo NODE=1 needs root (kubelet, containerd, the node's bridge)"; exit 1; }

bin=$(RECUR_NODE=1 tests/cluster/build.sh)
export PATH="$bin:$PATH"
log "building recur's images (make images)"
scripts/images.sh >/dev/null

dir=$(mktemp -d "${TMPDIR:-/tmp}/recur-demo-node.XXXX")
follower=""
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not stop the teardown halfway
  log "stopping: removing the node and the control plane"
  [ -z "$follower" ] || kill "$follower" 2>/dev/null || true
  if tests/cluster/down.sh "$dir/cluster" >"$dir/down.log" 2>&1; then
    rm -rf "$dir"
  else
    log "tests/cluster/down.sh failed (kept $dir; its log: $dir/down.log):"
    tail -n 20 "$dir/down.log" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the control plane and the node"
RECUR_BIN_DIR="$bin" tests/cluster/up.sh --node --watch-parent $$ "$dir/cluster" >/dev/null
tests/cluster/node.sh "$dir/cluster" >/dev/null
export KUBECONFIG="$dir/cluster/kubeconfig"

tests/cluster/node-dapr.sh install "$dir/cluster"
echo
kubectl get pods -A -o wide
echo
kubectl get rt,rem -n recur-demo
echo
log "in another shell: export KUBECONFIG=$KUBECONFIG PATH=$bin:\$PATH"
log "the logs of the backend (each occurrence with its key and lag) and the subscriber (each event) follow; Ctrl-C stops everything"
kubectl -n recur-demo logs -f -l "app in (backend,subscriber)" -c app --prefix --tail=-1 &
follower=$!
if [ -n "${RECUR_DEMO_SECONDS:-}" ]; then
  sleep "$RECUR_DEMO_SECONDS" &
  wait $!
  kubectl get rt,rem -n recur-demo
else
  wait "$follower"
fi
