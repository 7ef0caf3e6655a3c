#!/usr/bin/env bash
# Starts the Dapr side of a local recur setup on loopback, in DIR:
#   - daprd "recur"                 the operator's own sidecar (no app): recur calls it
#   - daprd "backend"               in front of the backend app   (app at BACKEND_URL)
#   - daprd "notification-service"  in front of the notification app (NOTIFY_URL, default BACKEND_URL)
# Name resolution needs no multicast: a Configuration maps each app id to its sidecar's internal
# gRPC port on 127.0.0.1 (the kubernetes resolver's template, evaluated locally). The sidecars run
# as if in namespace recur-system, where no backend lives: an app id recur did not qualify with the
# tenant's namespace (`backend` instead of `backend.team-a`) resolves there and fails, as it would
# on a cluster.
# Without a built daprd (RECUR_REAL_DAPR=0), `recur-dev sidecar` stands in for all three.
#
#   tests/cluster/sidecars.sh DIR BACKEND_URL [NOTIFY_URL]
# Writes DIR/sidecars.env (DAPR_HTTP_PORT=..., SIDECAR_PIDS=...) and prints DAPR_HTTP_PORT on stdout.
# Stop with: tests/cluster/sidecars.sh --down DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[sidecars] %s\n' "$*" >&2; }

if [ "${1:-}" = --down ]; then
  dir=${2:?usage: sidecars.sh --down DIR}
  [ -f "$dir/sidecars.env" ] || exit 0
  # shellcheck disable=SC1091
  . "$dir/sidecars.env"
  for pid in $SIDECAR_PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $SIDECAR_PIDS; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$dir/sidecars.env"
  exit 0
fi

dir=${1:?usage: sidecars.sh DIR BACKEND_URL [NOTIFY_URL]}
backend=${2:?usage: sidecars.sh DIR BACKEND_URL [NOTIFY_URL]}
notify=${3:-$backend}
mkdir -p "$dir"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port_of() { local u=${1##*:}; echo "${u%%/*}"; }

pids=()
cleanup_on_error() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup_on_error ERR

bin=$("$here/build.sh")
recur_port=$(free_port)

if [ -x "$bin/daprd" ] && [ "${RECUR_REAL_DAPR:-1}" = 1 ]; then
  declare -A http grpc internal metrics
  for id in recur backend notification-service; do
    http[$id]=$(free_port); grpc[$id]=$(free_port); internal[$id]=$(free_port); metrics[$id]=$(free_port)
  done
  http[recur]=$recur_port
  mkdir -p "$dir/dapr-resources"
  cat >"$dir/dapr-config.yaml" <<EOF
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: recur-local
spec:
  nameResolution:
    component: kubernetes
    configuration:
      template: '127.0.0.1:{{if eq .Namespace "recur-system"}}1{{else if eq .ID "backend"}}${internal[backend]}{{else if eq .ID "notification-service"}}${internal[notification-service]}{{else}}${internal[recur]}{{end}}'
EOF
  for id in recur backend notification-service; do
    args=(--app-id "$id" --dapr-http-port "${http[$id]}" --dapr-grpc-port "${grpc[$id]}"
      --dapr-internal-grpc-port "${internal[$id]}" --metrics-port "${metrics[$id]}"
      --dapr-listen-addresses 127.0.0.1 --resources-path "$dir/dapr-resources"
      --config "$dir/dapr-config.yaml" --log-level warn)
    case $id in
      backend) args+=(--app-port "$(port_of "$backend")") ;;
      notification-service) args+=(--app-port "$(port_of "$notify")") ;;
    esac
    NAMESPACE=recur-system "$bin/daprd" "${args[@]}" >"$dir/daprd-$id.log" 2>&1 &
    pids+=($!)
  done
  kind="daprd $("$bin/daprd" --version 2>/dev/null || echo)"
else
  "${RECUR_DEV_BIN:-$here/../../target/debug/recur-dev}" sidecar --listen "127.0.0.1:$recur_port" --own-namespace recur-system \
    --app "backend=$backend" --app "notification-service=$notify" >"$dir/sidecar.log" 2>&1 &
  pids+=($!)
  kind="recur-dev sidecar (stand-in)"
fi

# Ready when the operator's sidecar answers its outbound health check and every process lives.
deadline=$((SECONDS + 60))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$recur_port/v1.0/healthz/outbound")" = 204 ]; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "a sidecar process ($pid) exited during start; logs:"
      tail -n 30 "$dir"/daprd-*.log "$dir"/sidecar.log 2>/dev/null >&2 || true
      cleanup_on_error
      exit 1
    fi
  done
  if [ $SECONDS -ge $deadline ]; then
    log "sidecars not healthy after 60s; logs:"
    tail -n 30 "$dir"/daprd-*.log "$dir"/sidecar.log 2>/dev/null >&2 || true
    cleanup_on_error
    exit 1
  fi
  sleep 0.2
done
printf 'DAPR_HTTP_PORT=%s\nSIDECAR_PIDS="%s"\n' "$recur_port" "${pids[*]}" >"$dir/sidecars.env"
log "$kind ready: DAPR_HTTP_PORT=$recur_port"
echo "$recur_port"
