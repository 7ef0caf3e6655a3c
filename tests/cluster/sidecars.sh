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
# Pub/sub (real daprd only), when REDIS_PORT names a Redis on 127.0.0.1 (tests/cluster/redis.sh)
# and SUBSCRIBE_TOPICS lists topics (comma-separated):
#   - a Component "pubsub" (pubsub.redis) for recur (which publishes) and the subscribers;
#   - two subscribers, "subscriber-a" and "subscriber-b": each an app (`recur-dev subscriber --log`,
#     its "event ..." lines in DIR/subscriber-X.log, its records at SUBSCRIBER_X_URL/_dev/events)
#     behind a daprd of its own, with a declarative Subscription to every topic, route /events.
#     Each app id is its own Redis consumer group: each subscriber gets every event.
# Completion feedback, when also RECUR_COMPLETION_TOPICS lists topics (comma-separated): the
# operator's daprd gets an app port (RECUR_APP_PORT in sidecars.env: run `recur run
# --app-addr 127.0.0.1:$RECUR_APP_PORT`) and a Subscription to each topic scoped to app id recur,
# route /completions/pubsub/<topic>, as the chart renders them.
# Tracing (real daprd only), when OTLP_ENDPOINT is host:port of an OTLP/HTTP receiver on 127.0.0.1
# (tests/cluster/otelcol.sh): every daprd samples every request (samplingRate "1") and exports its
# spans there (tracing.otel, protocol http, plaintext), within about 100 ms.
#
#   tests/cluster/sidecars.sh DIR BACKEND_URL [NOTIFY_URL]
# Writes DIR/sidecars.env (DAPR_HTTP_PORT=..., SIDECAR_PIDS=..., with pub/sub also SUBSCRIBER_A_URL,
# SUBSCRIBER_B_URL, SUBSCRIBER_PIDS, ...) and prints DAPR_HTTP_PORT on stdout.
# Stop with: tests/cluster/sidecars.sh --down DIR
# Consumers down and up again (the subscribers' daprd only; the apps keep their records):
#   tests/cluster/sidecars.sh --subscribers-down DIR
#   tests/cluster/sidecars.sh --subscribers-up DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=proc.sh
. "$here/proc.sh"
log() { printf '[sidecars] %s\n' "$*" >&2; }

readonly subscribers="subscriber-a subscriber-b"

# N distinct free ports in 10000-19999 (below the kernel's ephemeral range, 32768+, and apart
# from the 20000-31999 of up.sh and redis.sh), all held open until the last is picked. Picked
# one at a time, each closed before the next, the same port could be handed out twice (the
# second daprd to bind it exits, "could not listen on any endpoint"); picked from the ephemeral
# range, an outgoing connection could take one in the seconds before its process binds it (the
# subscribers' daprd start after the other three and the apps).
free_ports() { python3 -c 'import random, socket, sys
held = []
while len(held) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(10000, 20000)))
    except OSError:
        s.close()
        continue
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))' "$1"; }
port_of() { local u=${1##*:}; echo "${u%%/*}"; }
var_of() { local v=${1//-/_}; echo "${v^^}"; } # subscriber-a -> SUBSCRIBER_A

# With tracing, the environment of every daprd: its span batcher (OpenTelemetry SDK) exports every
# 100 ms instead of every 5 s, and the service name of its spans is its app id.
tracing_env() {
  if [ -n "${OTLP_ENDPOINT:-}" ]; then
    export OTEL_BSP_SCHEDULE_DELAY=100
    unset OTEL_SERVICE_NAME
  fi
}


# Starts the daprd of subscriber ID in front of its app on APP_PORT, on the four PORTS given
# (picked with the others at the first start) or on fresh ones. Sets sub_pid[ID] and sub_http[ID].
declare -A sub_pid=() sub_http=()
start_subscriber_daprd() { # id app_port [ports]
  local id=$1 http grpc internal metrics
  read -r http grpc internal metrics <<<"${3:-$(free_ports 4)}"
  printf '=== %s: starting daprd %s\n' "$(date -u +%FT%TZ)" "$id" >>"$dir/daprd-$id.log"
  NAMESPACE=recur-system "$DAPRD" --app-id "$id" --app-port "$2" --dapr-http-port "$http" \
    --dapr-grpc-port "$grpc" --dapr-internal-grpc-port "$internal" --metrics-port "$metrics" \
    --dapr-listen-addresses 127.0.0.1 --resources-path "$dir/dapr-resources" \
    --config "$dir/dapr-config.yaml" --log-level warn >>"$dir/daprd-$id.log" 2>&1 &
  sub_pid[$id]=$!
  sub_http[$id]=$http
}

# Waits until each subscriber's daprd is healthy and lists one subscription per topic.
wait_subscribers() { # seconds
  local deadline=$((SECONDS + $1)) id count want
  want=$(tr ',' '\n' <<<"$SUBSCRIBE_TOPICS" | grep -c .)
  for id in $subscribers; do
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${sub_http[$id]}/v1.0/healthz")" = 204 ] &&
      count=$(curl -fsS "http://127.0.0.1:${sub_http[$id]}/v1.0/metadata" 2>/dev/null |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("subscriptions") or []))' 2>/dev/null) &&
      [ "$count" = "$want" ]; do
      if ! alive "${sub_pid[$id]}"; then
        log "the daprd of $id (pid ${sub_pid[$id]}) exited while starting; its log:"
        tail -n 30 "$dir/daprd-$id.log" >&2 || true
        return 1
      fi
      if ((SECONDS >= deadline)); then
        log "the daprd of $id is not subscribed after $1 s; its log:"
        tail -n 30 "$dir/daprd-$id.log" >&2 || true
        return 1
      fi
      sleep 0.2
    done
  done
}

write_env() {
  {
    printf 'DAPR_HTTP_PORT=%s\nSIDECAR_PIDS="%s"\n' "$DAPR_HTTP_PORT" "$SIDECAR_PIDS"
    if [ -n "${RECUR_APP_PORT:-}" ]; then printf 'RECUR_APP_PORT=%s\n' "$RECUR_APP_PORT"; fi
    if [ -n "${OTLP_ENDPOINT:-}" ]; then printf 'OTLP_ENDPOINT=%s\n' "$OTLP_ENDPOINT"; fi
    if [ -n "${REDIS_PORT:-}" ]; then
      printf 'PUBSUB_NAME=pubsub\nREDIS_PORT=%s\nSUBSCRIBE_TOPICS=%q\nDAPRD=%q\n' \
        "$REDIS_PORT" "$SUBSCRIBE_TOPICS" "$DAPRD"
      printf 'SUBSCRIBER_APP_PIDS="%s"\nSUBSCRIBER_PIDS="%s"\n' "$SUBSCRIBER_APP_PIDS" "$SUBSCRIBER_PIDS"
      local id var url_var port_var
      for id in $subscribers; do
        var=$(var_of "$id")
        url_var=${var}_URL port_var=${var}_DAPR_HTTP_PORT
        printf '%s_URL=%s\n%s_DAPR_HTTP_PORT=%s\n' "$var" "${!url_var}" "$var" "${!port_var:-}"
      done
    fi
  } >"$dir/sidecars.env.tmp"
  mv "$dir/sidecars.env.tmp" "$dir/sidecars.env"
}

load_env() {
  [ -f "$dir/sidecars.env" ] || { log "$dir/sidecars.env is missing: no sidecars run in $dir"; exit 1; }
  # shellcheck disable=SC1091
  . "$dir/sidecars.env"
}

case ${1:-} in
  --down)
    dir=${2:?usage: sidecars.sh --down DIR}
    [ -f "$dir/sidecars.env" ] || exit 0
    load_env
    # shellcheck disable=SC2086 # lists of pids
    stop_pids 5 $SIDECAR_PIDS ${SUBSCRIBER_PIDS:-} ${SUBSCRIBER_APP_PIDS:-}
    rm -f "$dir/sidecars.env"
    exit 0
    ;;
  --subscribers-down)
    dir=${2:?usage: sidecars.sh --subscribers-down DIR}
    load_env
    [ -n "${REDIS_PORT:-}" ] || { log "no pub/sub in $dir (started without REDIS_PORT)"; exit 1; }
    # SIGTERM: daprd stops pulling, finishes the deliveries under way and exits (5 s grace).
    # shellcheck disable=SC2086 # a list of pids
    stop_pids 15 $SUBSCRIBER_PIDS
    SUBSCRIBER_PIDS=""
    for id in $subscribers; do printf -v "$(var_of "$id")_DAPR_HTTP_PORT" '%s' ""; done
    write_env
    log "subscribers' daprd stopped (their apps still answer)"
    exit 0
    ;;
  --subscribers-up)
    dir=${2:?usage: sidecars.sh --subscribers-up DIR}
    load_env
    [ -n "${REDIS_PORT:-}" ] || { log "no pub/sub in $dir (started without REDIS_PORT)"; exit 1; }
    [ -z "$SUBSCRIBER_PIDS" ] || { log "the subscribers' daprd already run: $SUBSCRIBER_PIDS"; exit 1; }
    tracing_env
    pids=()
    for id in $subscribers; do
      url_var=$(var_of "$id")_URL
      start_subscriber_daprd "$id" "$(port_of "${!url_var}")"
      pids+=("${sub_pid[$id]}")
    done
    if ! wait_subscribers 60; then
      stop_pids 5 "${pids[@]}"
      exit 1
    fi
    SUBSCRIBER_PIDS="${pids[*]}"
    for id in $subscribers; do printf -v "$(var_of "$id")_DAPR_HTTP_PORT" '%s' "${sub_http[$id]}"; done
    write_env
    log "subscribers' daprd started again: $SUBSCRIBER_PIDS"
    exit 0
    ;;
esac

dir=${1:?usage: sidecars.sh DIR BACKEND_URL [NOTIFY_URL]}
backend=${2:?usage: sidecars.sh DIR BACKEND_URL [NOTIFY_URL]}
notify=${3:-$backend}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)

pids=() app_pids=() sub_daprd_pids=() # the three sidecars; the subscriber apps; their daprd
cleanup_on_error() {
  for pid in "${pids[@]}" "${app_pids[@]}" "${sub_daprd_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup_on_error ERR

bin=$("$here/build.sh")
# Every port of the first start in one pick, so that none is handed out twice: the operator's
# sidecar's HTTP port; for real daprd, the four ports of each of the three; with pub/sub, each
# subscriber app's port and its daprd's four (ports 13-22); the operator's app port (23).
# Picked later, a port one of the daprd started just before had not bound yet could come back.
read -r -a ports <<<"$(free_ports 24)"
recur_port=${ports[0]}

real_dapr=0
if [ -x "$bin/daprd" ] && [ "${RECUR_REAL_DAPR:-1}" = 1 ]; then real_dapr=1; fi
if [ -n "${REDIS_PORT:-}" ]; then
  [[ $REDIS_PORT =~ ^[0-9]+$ ]] || { log "REDIS_PORT '$REDIS_PORT' is not a port"; exit 1; }
  [ "$real_dapr" = 1 ] || { log "pub/sub (REDIS_PORT) needs real daprd: build it with tests/cluster/build.sh (not RECUR_REAL_DAPR=0)"; exit 1; }
  [ -n "${SUBSCRIBE_TOPICS:-}" ] || { log "REDIS_PORT is set: SUBSCRIBE_TOPICS (comma-separated) must name the topics to subscribe to"; exit 1; }
  recur_dev=${RECUR_DEV_BIN:-$here/../../target/debug/recur-dev}
  [ -x "$recur_dev" ] || { log "$recur_dev is missing: cargo build --workspace --bins"; exit 1; }
fi
if [ -n "${OTLP_ENDPOINT:-}" ]; then
  [[ $OTLP_ENDPOINT =~ ^127\.0\.0\.1:[0-9]+$ ]] || { log "OTLP_ENDPOINT '$OTLP_ENDPOINT' is not 127.0.0.1:PORT (an OTLP/HTTP receiver, no scheme)"; exit 1; }
  [ "$real_dapr" = 1 ] || { log "tracing (OTLP_ENDPOINT) needs real daprd: build it with tests/cluster/build.sh (not RECUR_REAL_DAPR=0)"; exit 1; }
  tracing_env
fi
RECUR_APP_PORT=
if [ -n "${RECUR_COMPLETION_TOPICS:-}" ]; then
  [ -n "${REDIS_PORT:-}" ] || { log "RECUR_COMPLETION_TOPICS needs pub/sub: set REDIS_PORT too"; exit 1; }
  RECUR_APP_PORT=${ports[23]}
fi

if [ "$real_dapr" = 1 ]; then
  declare -A http grpc internal metrics
  i=1
  for id in recur backend notification-service; do
    http[$id]=${ports[i]} grpc[$id]=${ports[i + 1]} internal[$id]=${ports[i + 2]} metrics[$id]=${ports[i + 3]}
    i=$((i + 4))
  done
  http[recur]=$recur_port
  mkdir -p "$dir/dapr-resources"
  if [ -n "${REDIS_PORT:-}" ]; then
    # Redis streams, one consumer group per app id (consumerID defaults to it). concurrency 1:
    # each subscriber gets a topic's events in publishing order. A message delivered but not
    # acknowledged (app failed, daprd stopped mid-delivery) is delivered again once it has been
    # pending processingTimeout, checked every redeliverInterval (defaults 60 s and 15 s).
    cat >"$dir/dapr-resources/pubsub.yaml" <<EOF
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.redis
  version: v1
  metadata:
  - {name: redisHost, value: "127.0.0.1:$REDIS_PORT"}
  - {name: concurrency, value: "1"}
  - {name: processingTimeout, value: "10s"}
  - {name: redeliverInterval, value: "1s"}
scopes: [recur, subscriber-a, subscriber-b]
EOF
    for id in $subscribers; do
      n=0
      IFS=, read -ra topics <<<"$SUBSCRIBE_TOPICS"
      for topic in "${topics[@]}"; do
        [ -n "$topic" ] || continue
        n=$((n + 1))
        cat >"$dir/dapr-resources/subscription-$id-$n.yaml" <<EOF
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: $id-$n
spec:
  pubsubname: pubsub
  topic: "$topic"
  routes:
    default: /events
scopes: [$id]
EOF
      done
    done
    n=0
    IFS=, read -ra topics <<<"${RECUR_COMPLETION_TOPICS:-}"
    for topic in "${topics[@]}"; do
      [ -n "$topic" ] || continue
      n=$((n + 1))
      cat >"$dir/dapr-resources/subscription-recur-completion-$n.yaml" <<EOF
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: recur-completion-$n
spec:
  pubsubname: pubsub
  topic: "$topic"
  routes:
    default: "/completions/pubsub/$topic"
scopes: [recur]
EOF
    done
  fi
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
  if [ -n "${OTLP_ENDPOINT:-}" ]; then
    # Dapr v1.16 TracingSpec/OtelSpec (pkg/config/configuration.go): OTLP/HTTP to
    # http://$OTLP_ENDPOINT/v1/traces.
    cat >>"$dir/dapr-config.yaml" <<EOF
  tracing:
    samplingRate: "1"
    otel:
      endpointAddress: "$OTLP_ENDPOINT"
      isSecure: false
      protocol: http
EOF
  fi
  for id in recur backend notification-service; do
    args=(--app-id "$id" --dapr-http-port "${http[$id]}" --dapr-grpc-port "${grpc[$id]}"
      --dapr-internal-grpc-port "${internal[$id]}" --metrics-port "${metrics[$id]}"
      --dapr-listen-addresses 127.0.0.1 --resources-path "$dir/dapr-resources"
      --config "$dir/dapr-config.yaml" --log-level warn)
    case $id in
      backend) args+=(--app-port "$(port_of "$backend")") ;;
      notification-service) args+=(--app-port "$(port_of "$notify")") ;;
      # The operator starts later: daprd waits for its port before it subscribes.
      recur) if [ -n "$RECUR_APP_PORT" ]; then args+=(--app-port "$RECUR_APP_PORT"); fi ;;
    esac
    NAMESPACE=recur-system "$bin/daprd" "${args[@]}" >"$dir/daprd-$id.log" 2>&1 &
    pids+=($!)
  done
  kind="daprd $("$bin/daprd" --version 2>/dev/null || echo)"
  if [ -n "${REDIS_PORT:-}" ]; then
    DAPRD=$bin/daprd
    declare -A sub_ports=()
    i=13
    for id in $subscribers; do
      port=${ports[i]} sub_ports[$id]="${ports[*]:i+1:4}"
      i=$((i + 5))
      "$recur_dev" subscriber --listen "127.0.0.1:$port" --name "$id" --log </dev/null \
        >"$dir/$id.log" 2>"$dir/$id.err" &
      app_pids+=($!)
      printf -v "$(var_of "$id")_URL" '%s' "http://127.0.0.1:$port"
    done
    # daprd reads the app's subscriptions once the app port answers: start the apps first.
    deadline=$((SECONDS + 30))
    for id in $subscribers; do
      url_var=$(var_of "$id")_URL
      until curl -fsS -o /dev/null "${!url_var}/_dev/events"; do
        if ((SECONDS >= deadline)); then
          log "the $id app did not answer within 30 s; its log:"
          tail -n 30 "$dir/$id.err" >&2 || true
          cleanup_on_error
          exit 1
        fi
        sleep 0.1
      done
    done
    for id in $subscribers; do
      url_var=$(var_of "$id")_URL
      start_subscriber_daprd "$id" "$(port_of "${!url_var}")" "${sub_ports[$id]}"
      sub_daprd_pids+=("${sub_pid[$id]}")
    done
  fi
else
  "${RECUR_DEV_BIN:-$here/../../target/debug/recur-dev}" sidecar --listen "127.0.0.1:$recur_port" --own-namespace recur-system \
    --app "backend=$backend" --app "notification-service=$notify" >"$dir/sidecar.log" 2>&1 &
  pids+=($!)
  kind="recur-dev sidecar (stand-in)"
fi

# Ready when every sidecar answers its health check (the operator's its outbound one too) and
# every process lives. Liveness is checked before health on every round, the first included: a
# daprd that died at once (a port taken between the pick and its bind, seen in CI) must fail
# the start, which the caller retries with fresh ports, not pass because another one is healthy.
# The operator's sidecar: outbound only (with an app port it is not ready before the operator,
# which starts later); the apps' sidecars: fully (their apps run already).
health_urls=("http://127.0.0.1:$recur_port/v1.0/healthz/outbound")
if [ "$real_dapr" = 1 ]; then
  for id in backend notification-service; do health_urls+=("http://127.0.0.1:${http[$id]}/v1.0/healthz"); done
fi
all_healthy() {
  local url
  for url in "${health_urls[@]}"; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 204 ] || return 1
  done
}
deadline=$((SECONDS + 60))
while :; do
  for pid in "${pids[@]}" "${app_pids[@]}" "${sub_daprd_pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "a sidecar process ($pid) exited during start; logs:"
      tail -n 30 "$dir"/daprd-*.log "$dir"/sidecar.log "$dir"/subscriber-*.err 2>/dev/null >&2 || true
      cleanup_on_error
      exit 1
    fi
  done
  if all_healthy; then break; fi
  if [ $SECONDS -ge $deadline ]; then
    log "sidecars not healthy after 60s; logs:"
    tail -n 30 "$dir"/daprd-*.log "$dir"/sidecar.log 2>/dev/null >&2 || true
    cleanup_on_error
    exit 1
  fi
  sleep 0.2
done
DAPR_HTTP_PORT=$recur_port
SIDECAR_PIDS="${pids[*]}"
if [ -n "${REDIS_PORT:-}" ]; then
  wait_subscribers 60 || { cleanup_on_error; exit 1; }
  SUBSCRIBER_APP_PIDS="${app_pids[*]}"
  SUBSCRIBER_PIDS="${sub_daprd_pids[*]}"
  for id in $subscribers; do printf -v "$(var_of "$id")_DAPR_HTTP_PORT" '%s' "${sub_http[$id]}"; done
fi
write_env
log "$kind ready: DAPR_HTTP_PORT=$recur_port${OTLP_ENDPOINT:+, spans to OTLP http://$OTLP_ENDPOINT}${REDIS_PORT:+, pub/sub \"pubsub\" on Redis 127.0.0.1:$REDIS_PORT, subscribers at $SUBSCRIBER_A_URL and $SUBSCRIBER_B_URL}"
echo "$recur_port"
