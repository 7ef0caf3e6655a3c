#!/usr/bin/env bash
# Fault injection: SIGKILLs one process of a cluster started by up.sh (etcd, kube-apiserver or
# kube-controller-manager) and starts it again with the same command line, appending to its log.
# Waits until the restarted kube-apiserver answers /readyz (a condition, with a deadline).
#   tests/cluster/restart.sh DIR NAME [DOWN_SECONDS]
set -euo pipefail
dir=${1:?usage: restart.sh DIR NAME [DOWN_SECONDS]}
name=${2:?usage: restart.sh DIR NAME [DOWN_SECONDS]}
down=${3:-0}
[ -f "$dir/.recur-cluster" ] || { echo "restart.sh: $dir is not a cluster of up.sh" >&2; exit 1; }
pid=$(awk -v n="$name" '$1 == n { p = $2 } END { print p }' "$dir/pids")
[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || { echo "restart.sh: no running $name in $dir" >&2; exit 1; }
mapfile -d '' cmd <"/proc/$pid/cmdline"
kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid"
for _ in $(seq 1 100); do [ -e "/proc/$pid" ] || break; sleep 0.05; done
sleep "$down"
printf '=== %s: restarted by restart.sh\n' "$(date -u +%FT%TZ)" >>"$dir/$name.log"
setsid "${cmd[@]}" </dev/null >>"$dir/$name.log" 2>&1 &
echo "$name $!" >>"$dir/pids"
if [ "$name" = kube-apiserver ]; then
  # shellcheck disable=SC1091
  . "$dir/env"
  token=$(awk -F, 'NR == 1 { print $1 }' "$dir/pki/tokens.csv" 2>/dev/null || true)
  deadline=$((SECONDS + 90))
  until curl -sf --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $token" "$APISERVER_URL/readyz" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "restart.sh: kube-apiserver not ready after 90s" >&2; tail -n 30 "$dir/$name.log" >&2; exit 1; }
    sleep 0.2
  done
fi
echo "restarted $name (pid $!)" >&2
