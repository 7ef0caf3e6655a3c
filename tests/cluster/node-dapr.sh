#!/usr/bin/env bash
# Dapr and recur on the node of node.sh, installed the way a user installs them (issue 17):
#
#   node-dapr.sh install DIR    load the images into the node's containerd; `helm install` Dapr's
#                               own chart (dapr-system), recur's chart (recur-system) and the test
#                               backend with its sidecar (recur-demo); `kubectl apply -f examples/`
#   node-dapr.sh scenario DIR   install, then prove delivery through the two sidecars (mTLS), a
#                               leader failover and a rollout restart; the last line on stdout is
#                               node: recur_ready=2/2 daprd_injected=yes delivered=N lost=0 ...
#
# Needs root, a node (tests/cluster/node.sh DIR), the node's tools with Dapr's control plane
# (RECUR_NODE=1 tests/cluster/build.sh) and recur's images (make images, target/images/).
# recur-system and recur-demo are labelled pod-security.kubernetes.io/enforce=restricted, so the
# API server itself refuses any pod of recur, its sidecar or the backend that breaks the profile.
# Dapr's injector is installed with sidecarDropALLCapabilities=true: with Dapr's default (false)
# no injected sidecar is admitted in a restricted namespace.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
mode=${1:?usage: node-dapr.sh install|scenario DIR}
dir=${2:?usage: node-dapr.sh install|scenario DIR}
dir=$(cd "$dir" && pwd -P)
[ -f "$dir/node/env" ] || { echo "node-dapr: $dir has no node (tests/cluster/node.sh $dir)" >&2; exit 1; }
bin=$(cat "$dir/node/bin")
# shellcheck source=versions.sh
. "$repo/tests/cluster/versions.sh"
dapr_tag=${DAPR_VERSION#v}
version=$(cd "$repo" && cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "recur"))')

log() { printf '[node-dapr] %s\n' "$*" >&2; }
k() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }
h() { "$bin/helm" --kubeconfig "$dir/kubeconfig" "$@"; }
ctr_() { "$bin/ctr" --address "$dir/node/containerd/containerd.sock" -n k8s.io "$@"; }
# On a failure: what a person would look at first, for every namespace involved.
fail() {
  log "FAILED: $*"
  for ns in dapr-system recur-system recur-demo; do
    echo "--- $ns: pods" >&2
    k -n "$ns" get pods -o wide >&2 2>&1 || true
    echo "--- $ns: events" >&2
    k -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 12 >&2 || true
  done
  for sel in "recur-system app.kubernetes.io/name=recur" "recur-demo app=backend" "dapr-system app=dapr-sidecar-injector"; do
    read -r ns label <<<"$sel"
    echo "--- $ns $label: logs (all containers, last lines)" >&2
    k -n "$ns" logs -l "$label" --all-containers --prefix --tail 15 >&2 2>&1 || true
  done
  exit 1
}
# Polls a command until it succeeds or the deadline (seconds) passes.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "$what: not within ${secs}s"
    sleep 0.5
  done
}
now_ms() { date +%s%3N; }

install() {
  local t0 started
  t0=$(now_ms)
  # Images: Dapr's from build.sh, recur's from make images. Nothing can be pulled (.test names).
  local tar
  for tar in recur recur-dev; do
    [ -f "$repo/target/images/$tar.tar" ] || fail "target/images/$tar.tar is missing (make images)"
  done
  for tar in daprd operator sentry placement injector; do
    [ -f "$bin/dapr-images/$tar.tar" ] || fail "$bin/dapr-images/$tar.tar is missing (RECUR_NODE=1 tests/cluster/build.sh)"
  done
  for tar in "$bin"/dapr-images/*.tar "$repo/target/images/recur.tar" "$repo/target/images/recur-dev.tar"; do
    ctr_ images import "$tar" >/dev/null 2>"$dir/node/import.log" ||
      fail "ctr images import $tar failed: $(tail -n 3 "$dir/node/import.log")"
  done
  log "images imported in $(($(now_ms) - t0)) ms"

  # Dapr, from the chart in the pinned module, with the images built from the same module.
  started=$(now_ms)
  log "\$ helm install dapr <dapr module>/charts/dapr -n dapr-system --create-namespace --set global.registry=recur.test/dapr --set global.tag=$dapr_tag --set global.scheduler.enabled=false --set dapr_sidecar_injector.sidecarDropALLCapabilities=true --wait"
  h upgrade --install dapr "$bin/dapr-chart" --namespace dapr-system --create-namespace \
    --set global.registry=recur.test/dapr --set "global.tag=$dapr_tag" --set global.imagePullPolicy=Never \
    --set global.scheduler.enabled=false \
    --set dapr_sidecar_injector.sidecarDropALLCapabilities=true \
    --wait --timeout 5m >/dev/null || fail "helm install dapr"
  log "Dapr $dapr_tag (operator, sentry, placement, sidecar injector) ready in $(($(now_ms) - started)) ms"

  # The namespaces, restricted: recur's, and the examples' (examples/00-namespace.yaml).
  k apply -f "$repo/examples/00-namespace.yaml" >/dev/null || fail "kubectl apply examples/00-namespace.yaml"
  k create namespace recur-system --dry-run=client -o yaml | k apply -f - >/dev/null || fail "namespace recur-system"
  for ns in recur-system recur-demo; do
    k label namespace "$ns" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null ||
      fail "labelling namespace $ns restricted"
  done

  # Pub/sub (examples/70-task-pubsub.yaml): Redis from Debian on the node's address 198.18.0.1
  # (the bridge: pods reach it, nothing off this machine does), the component "pubsub" where
  # recur publishes (recur-system) and where the subscriber reads (recur-demo), each scoped to
  # its app. Before the sidecars start: daprd loads its components once, at start.
  local redis_port pair ns app mode args
  redis_port=$("$repo/tests/cluster/redis.sh" --bind 198.18.0.1 "$dir/node/redis") || fail "Redis on 198.18.0.1"
  for pair in "recur-system recur" "recur-demo subscriber"; do
    read -r ns app <<<"$pair"
    k apply -f - >/dev/null <<EOF || fail "the pubsub component in $ns"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: pubsub, namespace: $ns}
spec:
  type: pubsub.redis
  version: v1
  metadata:
    - {name: redisHost, value: "198.18.0.1:$redis_port"}
    - {name: processingTimeout, value: "10s"}
    - {name: redeliverInterval, value: "1s"}
scopes: [$app]
EOF
  done
  k apply -f - >/dev/null <<EOF || fail "the subscription"
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: occurrences, namespace: recur-demo}
spec:
  pubsubname: pubsub
  topic: recur-demo.occurrences
  routes: {default: /events}
scopes: [subscriber]
EOF
  log "pub/sub: Redis on 198.18.0.1:$redis_port, component pubsub in recur-system and recur-demo"

  # recur: default values except the image.
  started=$(now_ms)
  log "\$ helm install recur charts/recur -n recur-system --set image.repository=recur.test/recur --set image.tag=$version --wait"
  h upgrade --install recur "$repo/charts/recur" --namespace recur-system \
    --set image.repository=recur.test/recur --set "image.tag=$version" --set image.pullPolicy=Never \
    --wait --timeout 5m >/dev/null || fail "helm install recur"
  log "recur $version ready in $(($(now_ms) - started)) ms"

  # The apps the examples call, each with its own injected sidecar, all recur-dev: backend
  # (tasks, and the reminder-sent callbacks), notification-service (reminders), subscriber
  # (the events of recur-demo.occurrences).
  for pair in "backend backend" "notification-service backend" "subscriber subscriber"; do
    read -r app mode <<<"$pair"
    args="$mode, --name, $app, --listen, '127.0.0.1:8081'"
    if [ "$mode" = subscriber ]; then args="$args, --log"; fi
    k apply -f - >/dev/null <<EOF || fail "the $app Deployment"
apiVersion: apps/v1
kind: Deployment
metadata: {name: $app, namespace: recur-demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: $app}}
  template:
    metadata:
      labels: {app: $app}
      annotations:
        dapr.io/enabled: "true"
        dapr.io/app-id: $app
        dapr.io/app-port: "8081"
        # Without a ServiceAccount token daprd's built-in Kubernetes secret store cannot start
        # (and daprd exits); these apps read no secret, so it is off rather than a token given.
        dapr.io/disable-builtin-k8s-secret-store: "true"
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: recur.test/recur-dev:$version
          imagePullPolicy: Never
          args: [$args]
          resources: {limits: {cpu: 200m, memory: 64Mi}}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
EOF
  done
  for app in backend notification-service subscriber; do
    k -n recur-demo rollout status "deploy/$app" --timeout=180s >/dev/null || fail "$app did not become available"
  done
  log "\$ kubectl apply -f examples/"
  k apply -f "$repo/examples/" >/dev/null || fail "kubectl apply -f examples/"
  log "installed in $(($(now_ms) - t0)) ms"
}

# "name=ready/total" of the recur pods, and whether each has an injected daprd container.
recur_ready() {
  k -n recur-system get pods -l app.kubernetes.io/name=recur \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.containerStatuses[*].ready}{"\n"}{end}'
}

# GET PATH of app APP in recur-demo, on the pod's loopback (through its network namespace).
app_get() { # app path
  local cid pid
  cid=$(k -n recur-demo get pods -l "app=$1" --field-selector=status.phase=Running \
    -o jsonpath='{.items[0].status.containerStatuses[?(@.name=="app")].containerID}')
  pid=$(ctr_ tasks ls 2>/dev/null | awk -v id="${cid#containerd://}" '$1 == id { print $2 }')
  [ -n "$pid" ] || return 1
  nsenter -t "$pid" -n curl -sf --max-time 5 "http://127.0.0.1:8081$2"
}
# The records of the calls the backend and the notification-service received; the subscriber's
# of the events.
records() { app_get backend /_dev/records; }
notifications() { app_get notification-service /_dev/records; }
events() { app_get subscriber /_dev/events; }

# Whether an occurrence of node-every-2s scheduled after $1 (RFC 3339) has arrived.
arrived_after() {
  records | python3 -c '
import json, sys
from datetime import datetime
at = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
cut = at(sys.argv[1])
sys.exit(0 if any(r.get("title") == "node every 2s" and r.get("scheduled_at") and at(r["scheduled_at"]) > cut
                  for r in json.load(sys.stdin)) else 1)' "$1"
}
# Whether an event of ticks-as-events scheduled after $1 has reached the subscriber.
event_after() {
  events | python3 -c '
import json, sys
from datetime import datetime
at = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
cut = at(sys.argv[1])
sys.exit(0 if any(e.get("source", "").endswith("/recurringtasks/ticks-as-events") and e.get("time") and at(e["time"]) > cut
                  for e in json.load(sys.stdin)) else 1)' "$1"
}
reminder_arrived() { records | grep '/api/tasks/node-1/reminder-sent' >/dev/null; }

# The holder of recur's Lease (the chart's recur-leader): POD-PID-SUFFIX (src/lease.rs), so a
# restarted container is a new holder even in the same pod.
holder() { k -n recur-system get lease recur-leader -o jsonpath='{.spec.holderIdentity}'; }
# The pod of the holder.
leader() {
  local id
  id=$(holder) || return 1
  id=${id%-*}
  printf '%s\n' "${id%-*}"
}
leader_is_not() {
  local l
  l=$(leader)
  [ -n "$l" ] && [ "$l" != "$1" ]
}
holder_is_not() {
  local h
  h=$(holder)
  [ -n "$h" ] && [ "$h" != "$1" ]
}
two_ready() { [ "$(recur_ready | awk '$2 == "true" && $3 == "true"' | wc -l)" = 2 ]; }
gone() { ! k -n recur-system get pod "$1" >/dev/null 2>&1; }

scenario() {
  install
  local pods ready=0 total=0 injected=yes
  pods=$(recur_ready)
  while read -r name states; do
    [ -n "$name" ] || continue
    total=$((total + 1))
    [ "$states" = "true true" ] && ready=$((ready + 1))
    k -n recur-system get pod "$name" -o jsonpath='{.spec.containers[*].name}' | tr ' ' '\n' | grep -x daprd >/dev/null || injected=no
  done <<<"$pods"
  if [ "$total" != 2 ] || [ "$ready" != 2 ]; then fail "recur pods ready: $ready of $total ($pods)"; fi
  [ "$injected" = yes ] || fail "a recur pod has no daprd container"
  k -n recur-demo get pods -l app=backend -o jsonpath='{.items[0].spec.containers[*].name}' | tr ' ' '\n' | grep -x daprd >/dev/null ||
    fail "the backend has no daprd container"

  # mTLS between the sidecars: on in Dapr's configuration, and every sidecar holds a workload
  # identity (an X.509 SVID) that sentry issued.
  [ "$(k -n dapr-system get configuration daprsystem -o jsonpath='{.spec.mtls.enabled}')" = true ] ||
    fail "mTLS is not enabled in dapr-system/daprsystem"
  local sel ns label pod
  for sel in "recur-system app.kubernetes.io/name=recur" "recur-demo app=backend"; do
    read -r ns label <<<"$sel"
    for pod in $(k -n "$ns" get pods -l "$label" --field-selector=status.phase=Running -o name); do
      k -n "$ns" logs "$pod" -c daprd 2>/dev/null | grep 'workload identity expiry watcher' >/dev/null ||
        fail "$ns/$pod: its sidecar holds no identity from sentry"
    done
  done
  log "mTLS: on, and every sidecar holds an identity from sentry"

  # A task firing every 2 s (gaps are seen at once) and a Reminder due in 40 s.
  local due
  due=$(date -u -d '+40 seconds' +%Y-%m-%dT%H:%M:%SZ)
  k apply -f - >/dev/null <<EOF || fail "the scenario's task and reminder"
apiVersion: recur.dev/v1alpha1
kind: RecurringTask
metadata: {name: node-every-2s, namespace: recur-demo}
spec:
  userId: node-e2e
  title: node every 2s
  schedule: {every: 2s}
  catchUp: {policy: All, maxOccurrences: 100}
---
apiVersion: recur.dev/v1alpha1
kind: Reminder
metadata: {name: node-reminder, namespace: recur-demo}
spec:
  userId: node-e2e
  title: node reminder
  message: sent through two sidecars
  dueAt: "$due"
  taskId: "node-1"
EOF
  wait_for "the first occurrence of node-every-2s at the backend" 90 arrived_after 1970-01-01T00:00:00Z
  log "occurrences arrive at the backend through both sidecars"
  wait_for "the first event of ticks-as-events at the subscriber" 60 event_after 1970-01-01T00:00:00Z
  log "events of ticks-as-events arrive at the subscriber through Redis"

  # A crash: the leader's recur container is killed (SIGKILL: no handover, maybe mid-call). The
  # Lease must expire and pass on, and the occurrences due meanwhile arrive late, not lost.
  local old_holder pod cid t_kill crash_ms kill_at
  old_holder=$(holder) && [ -n "$old_holder" ] || fail "no Lease holder in recur-system"
  pod=$(leader)
  cid=$(k -n recur-system get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="operator")].containerID}')
  [ -n "$cid" ] || fail "no operator container in the leader pod $pod"
  kill_at=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  t_kill=$(now_ms)
  ctr_ tasks kill -s SIGKILL "${cid#containerd://}" >/dev/null 2>&1 || fail "ctr tasks kill $cid (pod $pod)"
  wait_for "a new Lease holder after $old_holder was killed" 90 holder_is_not "$old_holder"
  crash_ms=$(($(now_ms) - t_kill))
  wait_for "occurrences scheduled after the kill" 60 arrived_after "$kill_at"
  log "leader $old_holder killed; $(holder) took over after $crash_ms ms (the Lease expired); deliveries resumed after $(($(now_ms) - t_kill)) ms"
  wait_for "2 ready recur pods after the crash" 180 two_ready

  # Failover: the leader pod is deleted; another replica must take the Lease.
  local old new t_del failover_ms before role
  old=$(leader)
  [ -n "$old" ] || fail "no Lease holder in recur-system"
  before=$(k -n recur-system get pods -l app.kubernetes.io/name=recur -o name)
  t_del=$(now_ms)
  k -n recur-system delete pod "$old" --wait=false >/dev/null || fail "kubectl delete pod $old"
  wait_for "another replica to take the Lease from $old" 60 leader_is_not "$old"
  failover_ms=$(($(now_ms) - t_del))
  new=$(leader)
  role="the standby replica"
  grep -qx "pod/$new" <<<"$before" || role="its replacement pod"
  log "leader $old deleted; $new ($role) took over in $failover_ms ms"
  wait_for "pod $old gone" 120 gone "$old"
  wait_for "2 ready recur pods after the failover" 180 two_ready

  # Rollout restart: every pod replaced, one at a time.
  local r0 r1
  r0=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  k -n recur-system rollout restart deploy/recur >/dev/null || fail "kubectl rollout restart"
  k -n recur-system rollout status deploy/recur --timeout=300s >/dev/null || fail "the rollout restart did not finish"
  r1=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  log "rollout restart done ($r0 .. $r1)"

  # The cut: every occurrence scheduled up to now must arrive (late is fine, lost is not).
  local cut
  cut=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  wait_for "occurrences scheduled after $cut" 90 arrived_after "$cut"
  wait_for "events scheduled after $cut" 90 event_after "$cut"
  wait_for "the reminder at the backend" 60 reminder_arrived

  local recs notes evs status facts
  # The status before the backend's records: recur writes a key to lastOccurrence only after the
  # backend answered it, so read in this order the key must be among the records. Read the other
  # way round, an occurrence delivered in between shows in status but not in the records.
  status=$(k -n recur-demo get recurringtask node-every-2s -o json)
  recs=$(records) || fail "cannot read the backend's records"
  notes=$(notifications) || fail "cannot read the notification-service's records"
  evs=$(events) || fail "cannot read the subscriber's events"
  facts=$(printf '{"every2s": "%s", "ticks": "%s", "ticks_skipped": %s, "reminder_key": "%s"}' \
    "$(k -n recur-demo get recurringtask node-every-2s -o jsonpath='{.metadata.creationTimestamp}')" \
    "$(k -n recur-demo get recurringtask ticks-as-events -o jsonpath='{.metadata.creationTimestamp}')" \
    "$(k -n recur-demo get recurringtask ticks-as-events -o json | python3 -c '
import json, sys
h = (json.load(sys.stdin).get("status") or {}).get("history") or []
print(json.dumps([r["nominal"] for r in h if r.get("outcome") == "Skipped" and r.get("nominal")]))')" \
    "$(k -n recur-demo get reminder node-reminder -o jsonpath='{.status.idempotencyKey}')")
  printf '%s\n%s\n%s\n%s\n%s\n' "$recs" "$notes" "$evs" "$facts" "$status" |
    python3 "$repo/tests/cluster/node-deliveries.py" "$cut" "$r0" "$r1" "$failover_ms" "$ready/$total" ||
    fail "deliveries (above)"
}

case $mode in
  install) install ;;
  scenario) scenario ;;
  *) echo "usage: node-dapr.sh install|scenario DIR" >&2; exit 2 ;;
esac
