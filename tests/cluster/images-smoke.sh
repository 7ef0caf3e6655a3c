#!/usr/bin/env bash
# Proves that the images of scripts/images.sh run on the node of node.sh, as the chart runs them:
# uid 65532, a read-only root filesystem, no capabilities, the restricted Pod Security profile
# enforced by the apiserver, imagePullPolicy Never (the images were imported, not pulled).
#   - recur.test/recur:VERSION runs `recur --version` (an init container) and `recur schedule`
#     in a time zone (the zones are embedded: the image has no tzdata), then exits 0;
#   - recur.test/recur-dev:VERSION runs `recur-dev backend` as a Deployment; it listens on
#     loopback only (it has no authentication), so no kubelet probe can reach it: it is asked
#     from inside its pod's network namespace instead (as a Dapr sidecar would). Needs root.
#
#   tests/cluster/images-smoke.sh DIR   DIR: a cluster of up.sh with a node of node.sh, the
#                                       images imported (scripts/images.sh --import DIR)
#
# Prints the pods' logs; ends with one line:
#   images-smoke: recur_version=ok schedule=ok backend_ready=1/1 backend_http=ok
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:?usage: images-smoke.sh DIR}
dir=$(cd "$dir" && pwd -P)
[ -f "$dir/node/env" ] || { echo "images-smoke: $dir has no node (tests/cluster/node.sh $dir)" >&2; exit 1; }
bin=$(cat "$dir/node/bin")
version=$(cd "$repo" && cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "recur"))')
ns=images-smoke
k() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }
fail() {
  echo "images-smoke: FAILED: $*" >&2
  k -n "$ns" get pods -o wide >&2 || true
  k -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
  exit 1
}
trap 'k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true' EXIT

# The container securityContext of the chart (charts/recur/values.yaml) and of the restricted profile.
sc='{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, capabilities: {drop: [ALL]}}'
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $ns
  labels: {pod-security.kubernetes.io/enforce: restricted}
---
apiVersion: v1
kind: Pod
metadata: {name: recur-cli, namespace: $ns}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  initContainers:
    - name: version
      image: recur.test/recur:$version
      imagePullPolicy: Never
      args: [--version]
      securityContext: $sc
  containers:
    - name: schedule
      image: recur.test/recur:$version
      imagePullPolicy: Never
      args: [schedule, --cron, '30 2 * * *', --time-zone, Europe/Berlin, --after, '2026-03-27T00:00:00Z', --count, '3']
      securityContext: $sc
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend, namespace: $ns}
spec:
  replicas: 1
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: backend
          image: recur.test/recur-dev:$version
          imagePullPolicy: Never
          args: [backend, --listen, '127.0.0.1:8081']
          resources: {limits: {cpu: 200m, memory: 64Mi}}
          securityContext: $sc
EOF

phase=""
for ((i = 0; i < 120; i++)); do
  phase=$(k -n "$ns" get pod recur-cli -o jsonpath='{.status.phase}')
  case $phase in Succeeded | Failed) break ;; esac
  sleep 0.5
done
echo "--- recur-cli/version: recur --version" >&2
k -n "$ns" logs recur-cli -c version >&2 || true
echo "--- recur-cli/schedule: recur schedule --cron '30 2 * * *' --time-zone Europe/Berlin ..." >&2
sched=$(k -n "$ns" logs recur-cli -c schedule) || true
printf '%s\n' "$sched" >&2
[ "$phase" = Succeeded ] || fail "pod recur-cli is $phase, not Succeeded"
k -n "$ns" logs recur-cli -c version | grep "$version" >/dev/null || fail "recur --version does not print $version"
# 2026-03-29 is the switch to summer time in Berlin: 02:30 does not exist that night, the
# occurrence moves to 03:30 +02:00 (needs the embedded zone data: the image has no tzdata).
[ "$(tail -n1 <<<"$sched")" = 2026-03-29T03:30:00+02:00 ] || fail "recur schedule did not end with 2026-03-29T03:30:00+02:00"

k -n "$ns" rollout status deploy/backend --timeout=120s >/dev/null || fail "the backend Deployment did not become available"
ready=$(k -n "$ns" get pods -l app=backend -o jsonpath='{range .items[*]}{.status.containerStatuses[0].ready}{"\n"}{end}' | grep -c true || true)
[ "$ready" = 1 ] || fail "$ready of 1 backend pods Ready"
cid=$(k -n "$ns" get pods -l app=backend -o jsonpath='{.items[0].status.containerStatuses[0].containerID}')
pid=$("$bin/ctr" --address "$dir/node/containerd/containerd.sock" -n k8s.io tasks ls 2>/dev/null | awk -v id="${cid#containerd://}" '$1 == id { print $2 }')
[ -n "$pid" ] || fail "no task for container $cid"
out=""
for ((i = 0; i < 20; i++)); do
  out=$(nsenter -t "$pid" -n curl -fsS --max-time 2 http://127.0.0.1:8081/_dev/records 2>/dev/null) && break
  sleep 0.5
done
echo "--- backend: GET http://127.0.0.1:8081/_dev/records inside the pod: $out" >&2
[ "$out" = "[]" ] || fail "the backend answered '$out' inside its pod"
echo "--- backend log" >&2
k -n "$ns" logs deploy/backend >&2 || true
echo "images-smoke: recur_version=ok schedule=ok backend_ready=$ready/1 backend_http=ok"
