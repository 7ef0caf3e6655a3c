#!/usr/bin/env bash
# `make observability`: the Grafana dashboard (charts/recur/dashboards/recur.json) drawn from a real
# run, for the README. There is no Grafana here, so it plots the dashboard's own queries from a
# real Prometheus instead:
#
#   1. builds the Prometheus server from the pinned Go module (tests/cluster/prometheus.sh, cached
#      beside promtool) and starts it on 127.0.0.1, scraping the operator's /metrics every 5 s as
#      the chart's ServiceMonitor labels it (job="recur", namespace="recur-system");
#   2. starts the demo (scripts/demo.sh: control plane, CRDs, Dapr sidecars, demo backend, Redis
#      and pub/sub when available, recur, examples/);
#   3. adds load for a few minutes (the operator runs with 4 workers per kind, so that reconciles
#      wait): tasks every 10 s in three tenant namespaces, a task the backend refuses (404), a task
#      whose app does not exist (its breaker opens), a phase of 503s for one tenant, a slow phase
#      and a burst of new tasks for another, manual runs and reminders;
#   4. evaluates every panel's queries with /api/v1/query_range (step 5 s) and draws them into
#      docs/observability/dashboard.png, with docs/observability/queries.md listing each query and
#      how many series and points it returned (scripts/observability.py, gnuplot).
#
# Everything it started is stopped on exit. Needs gnuplot (apt-get install gnuplot-nox).
#
#   scripts/observability.sh [--minutes N] [--out DIR]   # default 6 minutes, docs/observability
#   RECUR_OBS_MINUTES=3 scripts/observability.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { printf '\033[1m[observability]\033[0m %s\n' "$*" >&2; }

minutes=${RECUR_OBS_MINUTES:-6}
out="$repo/docs/observability"
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=${2:?--minutes N}; shift 2 ;;
    --out) out=${2:?--out DIR}; shift 2 ;;
    *) log "usage: $0 [--minutes N] [--out DIR]"; exit 2 ;;
  esac
done
[[ $minutes =~ ^[1-9][0-9]*$ ]] || { log "--minutes must be a whole number of minutes (got '$minutes')"; exit 2; }
[ "$minutes" -ge 3 ] || log "note: with less than 3 minutes some phases of the load do not happen"
command -v gnuplot >/dev/null || { log "gnuplot is missing: apt-get install gnuplot-nox"; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

prometheus=$(tests/cluster/prometheus.sh prometheus)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d "${TMPDIR:-/tmp}/recur-observability.XXXX")
prom_pid='' demo_pid=''
cleanup() {
  local status=$?
  log "stopping"
  if [ -n "$demo_pid" ]; then
    # scripts/demo.sh stops the operator, sidecars, backend, Redis and control plane on TERM.
    kill -TERM "$demo_pid" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$demo_pid" 2>/dev/null || true
  fi
  if [ -n "$prom_pid" ]; then
    kill -TERM "$prom_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$prom_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$prom_pid" 2>/dev/null || true
  fi
  if [ "$status" != 0 ]; then
    log "failed; the last lines of the demo's and Prometheus' logs:"
    tail -n 20 "$work/demo.log" "$work/prometheus.log" >&2 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Prometheus, scraping where the operator will listen ---------------------------------------
metrics_port=$(free_port)
prom_port=$(free_port)
prom="http://127.0.0.1:$prom_port"
# The labels the chart's ServiceMonitor gives the operator's series (release recur in
# recur-system): the dashboard's $job and $namespace select on them. The operator's own
# `namespace` label (the tenant) becomes `exported_namespace`, as with the ServiceMonitor.
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
  - job_name: recur
    scrape_interval: 5s
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
        labels: {namespace: recur-system, pod: recur-local, service: recur}
EOF
log "starting $("$prometheus" --version 2>&1 | head -n1) on $prom, scraping 127.0.0.1:$metrics_port/metrics every 5 s"
"$prometheus" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --storage.tsdb.retention.time=1d \
  --log.level=warn >"$work/prometheus.log" 2>&1 &
prom_pid=$!
for _ in $(seq 1 300); do
  curl -sf "$prom/-/ready" >/dev/null && break
  kill -0 "$prom_pid" 2>/dev/null || { log "Prometheus exited:"; cat "$work/prometheus.log" >&2; exit 1; }
  sleep 0.2
done
curl -sf "$prom/-/ready" >/dev/null || { log "Prometheus is not ready after 60 s"; exit 1; }

# --- the demo -----------------------------------------------------------------------------------
log "starting the demo (scripts/demo.sh; its output in $work/demo.log)"
# 4 workers per kind instead of 64: the load of a laptop then makes reconciles wait for a worker,
# which the queue panels show (recur run reads RECUR_WORKERS).
RECUR_WORKERS=4 RECUR_DEMO_SECONDS=$(((minutes + 30) * 60)) RECUR_DEMO_HTTP_ADDR="127.0.0.1:$metrics_port" \
  RECUR_DEMO_ENV="$work/demo.env" scripts/demo.sh >"$work/demo.log" 2>&1 &
demo_pid=$!
until [ -f "$work/demo.env" ]; do
  kill -0 "$demo_pid" 2>/dev/null || { log "the demo exited:"; tail -n 40 "$work/demo.log" >&2; demo_pid=''; exit 1; }
  sleep 1
done
# shellcheck disable=SC1091 # written by scripts/demo.sh
. "$work/demo.env"
export KUBECONFIG PATH
log "the demo runs: operator metrics $RECUR_METRICS_URL, backend $BACKEND_URL"

# --- load ---------------------------------------------------------------------------------------
t0=$(date +%s)
start=$((t0 - 30))
end=$((t0 + minutes * 60))
at() { # seconds after t0: wait until then (false when that is past the end of the run)
  local when=$((t0 + $1))
  [ "$when" -lt "$end" ] || return 1
  local now
  now=$(date +%s)
  if [ "$when" -gt "$now" ]; then sleep $((when - now)); fi
}
faults() { curl -sf -X POST "$BACKEND_URL/_dev/faults" -H 'Content-Type: application/json' -d "$1" >/dev/null; }
task() { # namespace name every [extra spec lines, already indented]
  cat <<EOF
---
apiVersion: recur.dev/v1alpha1
kind: RecurringTask
metadata: {name: $2, namespace: $1, labels: {load: "${2%%-*}"}}
spec:
  userId: user-$((RANDOM % 50))
  title: Load $2
  schedule: {every: $3}
$4
EOF
}
reminder() { # namespace name seconds-from-now
  cat <<EOF
---
apiVersion: recur.dev/v1alpha1
kind: Reminder
metadata: {name: $2, namespace: $1}
spec: {userId: user-7, title: "Reminder $2", message: "from scripts/observability.sh", dueAt: "$(date -u -d "+$3 seconds" +%Y-%m-%dT%H:%M:%SZ)"}
EOF
}

tenants=(team-a team-b team-c)
notes=("recur run with RECUR_WORKERS=4; load: examples/, 10 tasks every 10 s in each of ${tenants[*]}, team-c/refused (the backend answers 404: failed for good), team-a/billing (an app id no sidecar serves: ERR_DIRECT_INVOKE, retried, its breaker opens), reminders due at t+45s, t+100s, t+170s")
log "${notes[0]}"
{
  for ns in "${tenants[@]}"; do
    printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n' "$ns"
  done
} | kubectl apply -f - >/dev/null
{
  for ns in "${tenants[@]}"; do
    for i in $(seq 0 9); do task "$ns" "report-$i" 10s ""; done
  done
  # The backend answers 404 (no such endpoint): refused for good, each occurrence `failed`.
  task team-c refused 15s "  target: {method: api/unknown}"
  # No sidecar serves app id `billing`: Dapr answers ERR_DIRECT_INVOKE, recur retries behind the
  # breaker of (team-a, billing), which opens.
  task team-a billing 15s "  target: {appId: billing}"
  reminder team-a standup-soon 45
  reminder team-b invoices-due 100
  reminder team-c backup-window 170
} | kubectl apply -f - >/dev/null
phase() { # what happens now: logged, and told in the picture's caption
  local t=$(($(date +%s) - t0))
  log "t+${t}s: $*"
  notes+=("t+${t}s: $*")
}

if at 30; then
  phase "manual run of team-a/report-0 (recur.dev/run-now=obs-1)"
  kubectl annotate rt report-0 -n team-a recur.dev/run-now=obs-1 >/dev/null
fi
if at 60; then
  phase "team-b's backend answers half of its calls 503 for 90 s"
  faults '{"fail_rate": 0.5, "namespace": "team-b"}'
fi
if at 150; then
  phase "team-b's backend recovers; team-c's backend answers after 400 ms"
  faults '{"delay_ms": 400, "namespace": "team-c"}'
fi
if at 180; then
  phase "60 new tasks in team-c, every 20 s"
  for i in $(seq 0 59); do task team-c "burst-$i" 20s ""; done | kubectl apply -f - >/dev/null
fi
if at 240; then
  phase "team-c's backend is fast again; manual run of team-b/report-3"
  faults '{}'
  kubectl annotate rt report-3 -n team-b recur.dev/run-now=obs-2 >/dev/null
fi
if at 300; then
  phase "team-c's 60 new tasks are deleted"
  kubectl delete rt -n team-c -l load=burst --wait=false >/dev/null
fi
now=$(date +%s)
if [ "$now" -lt "$end" ]; then
  phase "steady load until t+$((end - t0))s"
  sleep $((end - now))
fi
sleep 6 # one more scrape

# --- the picture --------------------------------------------------------------------------------
log "querying every panel over $((end - start)) s and drawing $out/dashboard.png"
summary=$(python3 scripts/observability.py --prometheus "$prom" \
  --dashboard charts/recur/dashboards/recur.json --start "$start" --end "$end" --step 5 \
  --var job=recur --var namespace=recur-system --rate-interval 1m --out "$out" --data "$work/plot" \
  --note "t0 = $(date -u -d "@$t0" +%H:%M:%S) UTC. $(printf '%s. ' "${notes[@]}")")
log "$summary"
echo "observability: $summary; $out/dashboard.png, $out/queries.md ($minutes min run, Prometheus $("$prometheus" --version 2>&1 | awk 'NR==1{print $3}'))"
