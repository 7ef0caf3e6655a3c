#!/usr/bin/env bash
# An OpenTelemetry Collector on loopback for the trace tests: otelcol-recur (built by build.sh from
# tests/cluster/otelcol/go.mod), an OTLP receiver on HTTP and gRPC, every span it receives written
# to DIR/traces.jsonl (one OTLP JSON ExportTraceServiceRequest a line, flushed every 100 ms).
#
#   tests/cluster/otelcol.sh [--watch-parent PID] DIR   start on free ports; prints http://127.0.0.1:PORT
#   tests/cluster/otelcol.sh --down DIR                 stop it (and its watcher)
#
# DIR/otelcol.env holds OTLP_HTTP_PORT, OTLP_GRPC_PORT, OTELCOL_PID and TRACES_FILE; DIR/otelcol.yaml
# is its configuration, DIR/otelcol.log its log. Senders use http://127.0.0.1:$OTLP_HTTP_PORT
# (OTLP/HTTP: POST /v1/traces) or 127.0.0.1:$OTLP_GRPC_PORT (OTLP/gRPC, plaintext).
# --watch-parent PID: a watcher runs --down when process PID exits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=proc.sh
. "$here/proc.sh"
log() { printf '[otelcol] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
usage() { sed -n '2,12s/^# \{0,1\}//p' "$0" >&2; }

mode=up dir="" watch_parent=""
while [ $# -gt 0 ]; do
  case $1 in
    --watch-parent) watch_parent=${2:?--watch-parent needs a PID}; shift 2 ;;
    --down) mode=down; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage; die "unknown option $1" ;;
    *) [ -z "$dir" ] || die "only one directory may be given"; dir=$1; shift ;;
  esac
done
[ -n "$dir" ] || { usage; die "DIR is missing"; }
if [ -n "$watch_parent" ]; then
  [[ $watch_parent =~ ^[0-9]+$ ]] || die "--watch-parent '$watch_parent' is not a number"
  kill -0 "$watch_parent" 2>/dev/null || die "--watch-parent $watch_parent: no such process"
fi


# Our collector: a live pid whose command line names DIR's configuration (not a reused pid).
ours() { # pid
  [ -n "$1" ] && alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "otelcol-recur --config $dir/otelcol.yaml"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

show_log() {
  log "last lines of $dir/otelcol.log:"
  tail -n 30 "$dir/otelcol.log" | sed 's/^/    /' >&2 || true
}

# Accepts OTLP: an empty ExportTraceServiceRequest on HTTP answers 200 (and writes nothing), and
# the gRPC port takes a connection.
accepts_otlp() { # http_port grpc_port
  [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 -X POST -H 'Content-Type: application/json' \
    --data '{"resourceSpans":[]}' "http://127.0.0.1:$1/v1/traces")" = 200 ] &&
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null
}

write_config() { # http_port grpc_port
  cat >"$dir/otelcol.yaml" <<EOF
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$1
      grpc:
        endpoint: 127.0.0.1:$2
exporters:
  file:
    path: $dir/traces.jsonl
    format: json
    append: true
    flush_interval: 100ms
service:
  telemetry:
    # No internal metrics endpoint (it would listen on :8888 by default).
    metrics:
      level: none
    logs:
      level: info
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
EOF
}

start_collector() { # http_port grpc_port: starts it and waits until it accepts OTLP; sets OTELCOL_PID
  local deadline
  write_config "$1" "$2"
  printf '=== %s: otelcol-recur, OTLP HTTP 127.0.0.1:%s, gRPC 127.0.0.1:%s\n' \
    "$(date -u +%FT%TZ)" "$1" "$2" >>"$dir/otelcol.log"
  # Its own session: a Ctrl-C meant for the caller does not reach it, --down does.
  setsid "$otelcol" --config "$dir/otelcol.yaml" </dev/null >>"$dir/otelcol.log" 2>&1 &
  OTELCOL_PID=$!
  deadline=$((SECONDS + 30))
  until accepts_otlp "$1" "$2"; do
    if ! alive "$OTELCOL_PID"; then
      log "otelcol-recur exited while starting"
      show_log
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "otelcol-recur did not accept OTLP within 30 s"
      show_log
      stop_pids 5 "$OTELCOL_PID"
      return 1
    fi
    sleep 0.05
  done
}

load_env() {
  OTELCOL_PID="" OTELCOL_WATCHER_PID=""
  # shellcheck disable=SC1091
  . "$dir/otelcol.env"
}

case $mode in
  up)
    for tool in curl python3 setsid; do
      command -v "$tool" >/dev/null || die "'$tool' is required but not installed"
    done
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    if [ -f "$dir/otelcol.env" ]; then
      load_env
      if ours "$OTELCOL_PID"; then
        die "the collector already runs in $dir (pid $OTELCOL_PID): stop it with otelcol.sh --down $dir"
      fi
    fi
    # Where build.sh puts it; build.sh (which builds whatever else is missing too) only without it.
    # shellcheck source=versions.sh
    . "$here/versions.sh"
    otelcol=${RECUR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/recur}/bin/otelcol-$OTELCOL_VERSION/otelcol-recur
    if [ ! -x "$otelcol" ]; then
      otelcol=$("$here/build.sh")/otelcol-recur
      [ -x "$otelcol" ] || die "$otelcol is missing: tests/cluster/build.sh builds it (unless RECUR_OTELCOL=0)"
    fi
    http_port="" grpc_port=""
    for attempt in 1 2 3; do
      http_port=$(free_port)
      grpc_port=$(free_port)
      if start_collector "$http_port" "$grpc_port"; then break; fi
      http_port=""
      # Another process took a port between the probe and the collector's bind: try others.
      if ((attempt == 3)) || ! tail -n 10 "$dir/otelcol.log" | grep -q 'address already in use'; then break; fi
      log "a port was taken: retrying with others"
    done
    [ -n "$http_port" ] || die "otelcol-recur did not start (see above)"
    watcher=""
    if [ -n "$watch_parent" ]; then
      # GNU tail checks once a second whether the parent still lives.
      # shellcheck disable=SC2016 # expanded by the watcher's shell
      setsid bash -c 'tail --pid="$1" -f /dev/null; exec "$2" --down "$3"' otelcol-watcher \
        "$watch_parent" "$here/otelcol.sh" "$dir" </dev/null >>"$dir/otelcol.log" 2>&1 &
      watcher=$!
    fi
    printf 'OTLP_HTTP_PORT=%s\nOTLP_GRPC_PORT=%s\nOTELCOL_PID=%s\nOTELCOL_WATCHER_PID=%s\nTRACES_FILE=%q\n' \
      "$http_port" "$grpc_port" "$OTELCOL_PID" "$watcher" "$dir/traces.jsonl" >"$dir/otelcol.env.tmp"
    mv "$dir/otelcol.env.tmp" "$dir/otelcol.env"
    log "otelcol-recur ready: OTLP HTTP http://127.0.0.1:$http_port, gRPC 127.0.0.1:$grpc_port (pid $OTELCOL_PID, spans in $dir/traces.jsonl)"
    echo "http://127.0.0.1:$http_port"
    ;;
  down)
    [ -f "$dir/otelcol.env" ] || exit 0
    dir=$(cd "$dir" && pwd -P)
    load_env
    # SIGTERM: the collector shuts down its pipeline, the file exporter flushes and closes.
    if ours "$OTELCOL_PID"; then stop_pids 10 "$OTELCOL_PID"; fi
    # The watcher (unless this is the watcher, exec'ed): its shell and its tail, one group.
    if [ -n "$OTELCOL_WATCHER_PID" ] && [ "$OTELCOL_WATCHER_PID" != $$ ] && alive "$OTELCOL_WATCHER_PID"; then
      kill -TERM -- "-$OTELCOL_WATCHER_PID" 2>/dev/null || true
    fi
    rm -f "$dir/otelcol.env"
    ;;
esac
