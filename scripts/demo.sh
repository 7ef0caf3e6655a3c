#!/usr/bin/env bash
# `make demo`: the operator's main job on a local default. Builds what is missing, starts a local
# control plane, installs the CRDs, starts the demo backend behind real Dapr sidecars (or the
# stand-in when daprd is not built), runs recur, applies examples/ and shows occurrences and
# reminders arriving until interrupted; then stops everything. With real daprd and Debian's
# redis-server, also Redis and the Dapr pub/sub component "pubsub" (pubsub.redis) with two
# subscribers of topic recur-demo.occurrences; subscriber-a's events are shown too.
#
#   RECUR_DEMO_SECONDS=60 scripts/demo.sh   # stop by itself after 60 s (used by a test)
#   RECUR_DEMO_HTTP_ADDR=127.0.0.1:9090     # the operator's probes and metrics (default 127.0.0.1:8080)
#   RECUR_DEMO_ENV=FILE                     # once examples/ are applied, write KUBECONFIG, PATH,
#                                           # RECUR_METRICS_URL, BACKEND_URL, DAPR_HTTP_PORT and
#                                           # OPERATOR_LOG to FILE (sourceable; written whole), for a
#                                           # script driving the demo (scripts/observability.sh)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }

bin=$(tests/cluster/build.sh)
export PATH="$bin:$PATH"
log "building recur, kubectl-recur and recur-dev"
cargo build --quiet --workspace --bins
# kubectl finds plugins on PATH: kubectl-recur next to recur makes `kubectl recur ...` work here.
export PATH="$repo/target/debug:$PATH"

dir=$(mktemp -d "${TMPDIR:-/tmp}/recur-demo.XXXX")
pids=()
cleanup() {
  log "stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  tests/cluster/sidecars.sh --down "$dir/stack" 2>/dev/null || true
  tests/cluster/redis.sh --down "$dir/stack" 2>/dev/null || true
  tests/cluster/down.sh "$dir/cluster" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the control plane"
RECUR_BIN_DIR="$bin" tests/cluster/up.sh --watch-parent $$ "$dir/cluster" >/dev/null
export KUBECONFIG="$dir/cluster/kubeconfig"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/recurringtasks.recur.dev crd/reminders.recur.dev --timeout=60s >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log "starting the demo backend on 127.0.0.1:$port"
target/debug/recur-dev backend --listen "127.0.0.1:$port" --name backend &
pids+=($!)
# Pub/sub needs real daprd (the stand-in has no pub/sub) and a Redis.
topic=recur-demo.occurrences # <namespace of examples/>.occurrences
pubsub=()
if [ -x "$bin/daprd" ] && [ "${RECUR_REAL_DAPR:-1}" = 1 ] && command -v redis-server >/dev/null; then
  redis_port=$(tests/cluster/redis.sh --watch-parent $$ "$dir/stack")
  pubsub=(REDIS_PORT="$redis_port" SUBSCRIBE_TOPICS="$topic")
  log "pub/sub: component \"pubsub\" on Redis 127.0.0.1:$redis_port; subscribers subscriber-a and subscriber-b of topic $topic"
else
  log "pub/sub skipped: it needs real daprd (tests/cluster/build.sh) and redis-server (apt-get install redis-server)"
fi
dapr_port=$(env "${pubsub[@]}" RECUR_DEV_BIN="$repo/target/debug/recur-dev" tests/cluster/sidecars.sh "$dir/stack" "http://127.0.0.1:$port")
if [ ${#pubsub[@]} -gt 0 ]; then
  # subscriber-a's "event id=... type=... subject=... time=..." lines, as they arrive.
  tail -n +1 -F --pid=$$ "$dir/stack/subscriber-a.log" 2>/dev/null | sed -u 's/^/subscriber-a: /' &
  pids+=($!)
fi

http_addr=${RECUR_DEMO_HTTP_ADDR:-127.0.0.1:8080}
log "starting recur (probes and metrics on $http_addr)"
DAPR_HTTP_PORT=$dapr_port RECUR_HTTP_ADDR=$http_addr target/debug/recur run >"$dir/operator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://$http_addr/health/ready" >/dev/null && break
  sleep 0.2
done

log "applying examples/ (and a reminder due in 20 seconds)"
kubectl apply -f examples/ >/dev/null
due=$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%SZ)
kubectl apply -f - >/dev/null <<EOF
apiVersion: recur.dev/v1alpha1
kind: Reminder
metadata: {name: coffee, namespace: recur-demo}
spec: {userId: user-42, title: Coffee break, message: "Time for coffee", dueAt: "$due", taskId: "1001"}
EOF
kubectl get rt,rem -n recur-demo
if [ -n "${RECUR_DEMO_ENV:-}" ]; then
  printf 'KUBECONFIG=%q\nPATH=%q\nRECUR_METRICS_URL=%q\nBACKEND_URL=%q\nDAPR_HTTP_PORT=%q\nOPERATOR_LOG=%q\n' \
    "$KUBECONFIG" "$PATH" "http://$http_addr/metrics" "http://127.0.0.1:$port" "$dapr_port" "$dir/operator.log" \
    >"$RECUR_DEMO_ENV.tmp"
  mv "$RECUR_DEMO_ENV.tmp" "$RECUR_DEMO_ENV"
fi
log "the plugin in another shell (export KUBECONFIG=$KUBECONFIG PATH=$repo/target/debug:$bin:\$PATH): kubectl recur next standup -n recur-demo"
log "occurrences arrive below (the backend logs each with its key and lag${pubsub[*]:+; subscriber-a each event published to $topic}); Ctrl-C stops everything"
if [ -n "${RECUR_DEMO_SECONDS:-}" ]; then
  # In the background: a TERM (from a driving script) ends the wait at once, not after the sleep.
  sleep "$RECUR_DEMO_SECONDS" &
  pids+=($!)
  wait $!
  kubectl get rt,rem -n recur-demo
else
  wait "${pids[0]}"
fi
