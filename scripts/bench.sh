#!/usr/bin/env bash
# The scale benchmark (`make bench`): N RecurringTasks due at the same instant, delivered by
# `recur run` through Dapr to the recording backend, against N CronJobs handled by
# kube-controller-manager (at its default client QPS, then raised), plus the limit (bare status
# patches), start and idle, and fairness between namespaces (N due in one namespace and 10 in
# another at the same instant, with one shared work queue and with fair queueing). The burst is a
# one-off daily cron at a minute set from the limit, so it happens on a slow machine too. Prints
# a markdown table; writes target/bench/*.json, and docs/bench/results.md with docs/bench/lag.png.
#
#   scripts/bench.sh [--tasks N] [--idle SECS] [--workers W] [--no-raised-qps] [--perf] [--recur-only]
#                    [--fairness | --no-fairness] [--out-dir DIR] [--pprof] [--patchcost] [--listcost]
#                    [--spread [--window SECS] [--period SECS] [--compare-lists FORMS]] [--shards S]
#                    [--pin]
#     --tasks N          objects in the burst (default 1000; 10000 is the target)
#     --idle SECS        idle window of the operator (default 60; the issue asks for 300)
#     --workers W        recur run --workers (default 64)
#     --no-raised-qps    skip the CronJob run with --kube-api-qps=500 --kube-api-burst=1000
#     --perf             profile recur's burst, whole machine (perf record -a): target/bench/perf-*.txt
#     --recur-only       only recur (start, idle, limit, burst, fairness): no CronJob runs, no report
#     --fairness         only the fairness runs: prints their table, writes docs/bench/fairness-n<N>.md
#     --no-fairness      skip the fairness runs
#     --out-dir DIR      results, report and plot in DIR only (default target/bench, copied to docs/bench/)
#     --pprof            profile kube-apiserver (/debug/pprof) during the limit and recur's burst: pprof/
#     --patchcost        only the cost of each form of status write to kube-apiserver (N objects,
#                        CPU from /proc, pprof of the first round): patchcost.md, pprof/
#     --listcost         only the cost of listing N tasks to kube-apiserver, by form (paged, from
#                        the watch cache, whole, streaming, metadata only) and status size (CPU
#                        from /proc, pprof): listcost.md, pprof/; docs/bench/listcost-n<N>.md
#     --spread           only N hourly tasks spread over the hour (the default from --tasks 50000):
#                        cold start against the minimal client, restart, idle (at least --idle),
#                        steady-state lag; writes docs/bench/results-n<N>-spread.md
#     --window SECS      the steady-state window of --spread (default 600, at most 3600)
#     --period SECS      the tasks' interval in --spread (default 3600): fewer tasks, same rate
#     --compare-lists F  restarts of --spread before the measured one, one per comma-separated
#                        `recur run --initial-list` form (e.g. streaming,paged,streaming,paged)
#     --shards S         only N hourly tasks on one operator, then on S replicas (a label selector
#                        and Lease each): cold start, restart, one replica's restart; shards-n<N>.md
#     --pin              the control plane (etcd, kube-apiserver, kube-controller-manager) on CPU 0
#                        only, everything else (recur, the sidecars, the backend, the benchmark's
#                        clients) on the other CPUs: a control plane with a core of its own;
#                        the report goes to docs/bench/results-n<N>-pinned.md
#
# Builds the control-plane tools (tests/cluster/build.sh) and the release binaries, starts a
# dedicated control plane (tests/cluster/up.sh) in a directory of its own and tears it down on
# exit, whatever happens. Heavy: minutes for N=1000, most of an hour for N=10000. Never part of
# `make test`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
usage() { sed -n '2,40s/^# \{0,1\}//p' "$0" >&2; }

tasks=1000 idle=60 workers=64 raised=1 perf=0 recur_only=0 fairness=1 out_dir="" pprof=0 patchcost=0 listcost=0
spread="" window=600 period=3600 shards=0 compare_lists="" pin=0
while [ $# -gt 0 ]; do
  case $1 in
    --tasks) tasks=${2:?--tasks needs a number}; shift 2 ;;
    --idle) idle=${2:?--idle needs seconds}; shift 2 ;;
    --workers) workers=${2:?--workers needs a number}; shift 2 ;;
    --no-raised-qps) raised=0; shift ;;
    --perf) perf=1; shift ;;
    --recur-only) recur_only=1; shift ;;
    --fairness) fairness=only; shift ;;
    --no-fairness) fairness=0; shift ;;
    --out-dir) out_dir=${2:?--out-dir needs a directory}; shift 2 ;;
    --pprof) pprof=1; shift ;;
    --patchcost) patchcost=1; shift ;;
    --listcost) listcost=1; shift ;;
    --spread) spread=1; shift ;;
    --window) window=${2:?--window needs seconds}; shift 2 ;;
    --period) period=${2:?--period needs seconds}; shift 2 ;;
    --shards) shards=${2:?--shards needs a number}; shift 2 ;;
    --compare-lists) compare_lists=${2:?--compare-lists needs forms}; shift 2 ;;
    --pin) pin=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument $1" ;;
  esac
done
for v in "$tasks" "$idle" "$workers" "$window" "$period"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "'$v' is not a positive number"
done
# From 50,000 tasks on, the spread scenario is the one meant (a burst of that many is not).
if [ -z "$spread" ] && [ "$tasks" -ge 50000 ] && [ "$fairness" != only ] && [ "$patchcost" = 0 ] && [ "$listcost" = 0 ] && [ "$shards" = 0 ]; then
  log "--tasks $tasks: the spread scenario (--spread)"
  spread=1
fi
command_line="scripts/bench.sh --tasks $tasks --idle $idle --workers $workers$([ "$raised" = 1 ] || echo ' --no-raised-qps')$([ "$perf" = 0 ] || echo ' --perf')$([ "$fairness" = 1 ] || echo ' --no-fairness')$([ "$pin" = 0 ] || echo ' --pin')"

# --- tools -------------------------------------------------------------------------------------
bin=$(tests/cluster/build.sh) || die "tests/cluster/build.sh failed"
log "building the release binaries"
cargo build --release --workspace --bins
release="$repo/target/release"
out="$repo/target/bench"
docs=1
if [ -n "$out_dir" ]; then
  mkdir -p "$out_dir"
  out=$(cd "$out_dir" && pwd)
  docs=0
fi
mkdir -p "$out"
rm -rf "$out"/*.json "$out"/*.dat "$out"/lag.plt "$out"/lag.png "$out"/results.md "$out"/logs

# gnuplot draws the lag plot; from Debian, installed here when missing and we may.
ensure_gnuplot() {
  command -v gnuplot >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing gnuplot-nox (Debian) for the plot"
    { apt-get install -y gnuplot-nox || { apt-get update && apt-get install -y gnuplot-nox; }; } >&2 ||
      log "could not install gnuplot-nox"
  fi
  command -v gnuplot >/dev/null
}

# --- the cluster and the Dapr side ------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/recur-bench.XXXX")
cluster="$work/cluster"
backend_pid=""
cleanup() {
  local status=$?
  [ -f "$work/sidecars/sidecars.env" ] && tests/cluster/sidecars.sh --down "$work/sidecars" || true
  if [ -n "$backend_pid" ]; then
    kill "$backend_pid" 2>/dev/null || true
    wait "$backend_pid" 2>/dev/null || true
  fi
  [ -e "$cluster" ] && tests/cluster/down.sh "$cluster" || true
  if [ "$status" = 0 ]; then
    rm -rf "$work"
  else
    log "logs kept in $work"
  fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# --pin: CPU 0 for the control plane, the others for this shell and so for every process it
# starts from here on (taskset's list is inherited).
control_plane_cpus="" others_cpus=""
if [ "$pin" = 1 ]; then
  command -v taskset >/dev/null || die "--pin needs taskset (Debian: util-linux)"
  cpus=$(nproc)
  [ "$cpus" -ge 2 ] || die "--pin needs at least 2 CPUs, this machine has $cpus"
  control_plane_cpus=0 others_cpus=1
  [ "$cpus" = 2 ] || others_cpus="1-$((cpus - 1))"
  taskset -c "0,$others_cpus" true 2>/dev/null || die "--pin needs CPUs 0-$((cpus - 1)) allowed to this shell (taskset -pc $$)"
  # Only the burst's report says it was pinned; the other scenarios would write over the
  # unpinned reports.
  [ -z "$spread" ] && [ "$shards" = 0 ] && [ "$listcost" = 0 ] && [ "$patchcost" = 0 ] && [ "$fairness" != only ] ||
    die "--pin is for the burst (make bench): not with --spread, --shards, --listcost, --patchcost or --fairness"
fi

log "starting a control plane in $cluster"
# --watch-parent: the cluster also goes when this shell is killed before its trap can run.
# etcd's quota at 8 GiB (its documented maximum) instead of 2: 100,000 tasks are written several
# times over (create, first status, the minimal client's clear and rewrite) between compactions.
RECUR_CONTROL_PLANE_CPUS=$control_plane_cpus RECUR_ETCD_QUOTA_BYTES=8589934592 RECUR_BIN_DIR="$bin" \
  tests/cluster/up.sh --watch-parent $$ "$cluster" >/dev/null
if [ "$pin" = 1 ]; then
  taskset -p -c "$others_cpus" $$ >/dev/null
  log "pinned: the control plane on CPU $control_plane_cpus, everything else on CPUs $others_cpus"
fi
export KUBECONFIG="$cluster/kubeconfig"
kubectl=("$bin/kubectl" --kubeconfig "$KUBECONFIG")
"${kubectl[@]}" apply -f crds/ >&2
"${kubectl[@]}" wait --for=condition=Established --timeout=60s \
  crd/recurringtasks.recur.dev crd/reminders.recur.dev >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
backend_port=$(free_port)
backend_url="http://127.0.0.1:$backend_port"
"$release/recur-dev" backend --listen "127.0.0.1:$backend_port" --name backend \
  >"$work/backend.log" 2>"$work/backend.err" &
backend_pid=$!
deadline=$((SECONDS + 30))
until curl -fs -o /dev/null "$backend_url/_dev/records"; do
  kill -0 "$backend_pid" 2>/dev/null || die "the backend exited: $(tail -n 5 "$work/backend.err")"
  [ $SECONDS -lt $deadline ] || die "the backend did not answer within 30s"
  sleep 0.1
done
dapr_port=$(RECUR_DEV_BIN="$release/recur-dev" tests/cluster/sidecars.sh "$work/sidecars" "$backend_url")
if [ -x "$bin/daprd" ] && [ "${RECUR_REAL_DAPR:-1}" = 1 ]; then
  # shellcheck source=../tests/cluster/versions.sh
  . tests/cluster/versions.sh
  sidecar="daprd $DAPR_VERSION"
else
  sidecar="recur-dev sidecar (stand-in)"
fi
log "backend $backend_url, sidecars: $sidecar on DAPR_HTTP_PORT=$dapr_port"

# --- kube-controller-manager -------------------------------------------------------------------
kcm_pid() { awk '$1 == "kube-controller-manager" { p = $2 } END { print p }' "$cluster/pids"; }

# Restarts the cluster's kube-controller-manager with FLAGS appended to its command line (as
# tests/cluster/restart.sh does for faults): read /proc/<pid>/cmdline, stop it, start it again in
# its own session, appending to its log, and wait until /healthz answers. Sets kcm_pid.
restart_kcm() { # dir, flags...
  local dir=$1 pid new port="" arg deadline
  shift
  pid=$(kcm_pid)
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || die "no running kube-controller-manager in $dir"
  local -a cmd
  mapfile -d '' cmd <"/proc/$pid/cmdline"
  for arg in "${cmd[@]}"; do
    case $arg in --secure-port=*) port=${arg#*=} ;; esac
  done
  [ -n "$port" ] || die "kube-controller-manager has no --secure-port"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  deadline=$((SECONDS + 15))
  while [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    [ $SECONDS -lt $((deadline + 5)) ] || die "kube-controller-manager (pid $pid) does not stop"
    sleep 0.1
  done
  printf '=== %s: restarted by scripts/bench.sh with %s\n' "$(date -u +%FT%TZ)" "${*:-no extra flags}" >>"$dir/kube-controller-manager.log"
  local -a pin_cmd=()
  [ -z "$control_plane_cpus" ] || pin_cmd=(taskset -c "$control_plane_cpus")
  setsid "${pin_cmd[@]}" "${cmd[@]}" "$@" </dev/null >>"$dir/kube-controller-manager.log" 2>&1 &
  new=$!
  echo "kube-controller-manager $new" >>"$dir/pids"
  deadline=$((SECONDS + 120))
  until [ "$(curl -ksS --max-time 2 "https://127.0.0.1:$port/healthz" 2>/dev/null)" = ok ]; do
    kill -0 "$new" 2>/dev/null || die "the restarted kube-controller-manager exited; see $dir/kube-controller-manager.log"
    [ $SECONDS -lt $deadline ] || die "the restarted kube-controller-manager is not healthy after 120s"
    sleep 0.2
  done
  kcm_pid=$new
  log "kube-controller-manager restarted with ${*:-no extra flags} (pid $new)"
}

# --- the runs ----------------------------------------------------------------------------------
bench="$release/recur-bench"
perf_args=()
if [ "$perf" = 1 ]; then
  command -v perf >/dev/null || die "--perf needs perf (apt-get install linux-perf)"
  perf_args=(--perf-out "$out/perf-burst.data")
fi
operator_args=(--workers "$workers" --log-dir "$out/logs" --recur-bin "$release/recur"
  --backend-url "$backend_url" --dapr-http-port "$dapr_port" --sidecar "$sidecar")
if [ "$pprof" = 1 ]; then
  perf_args+=(--pprof-dir "$out/pprof" --kubectl "$bin/kubectl")
fi
proc_pid() { awk -v n="$1" '$1 == n { p = $2 } END { print p }' "$cluster/pids"; }
if [ "$listcost" = 1 ]; then
  "$bench" listcost --tasks "$tasks" --out-dir "$out" --apiserver-pid "$(proc_pid kube-apiserver)" \
    --etcd-pid "$(proc_pid etcd)" --pprof-dir "$out/pprof" --kubectl "$bin/kubectl"
  [ "$docs" = 1 ] || { log "wrote $out/listcost.md and $out/pprof/"; exit 0; }
  mkdir -p docs/bench
  cp "$out/listcost.md" "docs/bench/listcost-n$tasks.md"
  log "wrote docs/bench/listcost-n$tasks.md"
  exit 0
fi
if [ "$patchcost" = 1 ]; then
  "$bench" patchcost --tasks "$tasks" --out-dir "$out" --apiserver-pid "$(proc_pid kube-apiserver)" \
    --etcd-pid "$(proc_pid etcd)" --pprof-dir "$out/pprof" --kubectl "$bin/kubectl"
  log "wrote $out/patchcost.md and $out/pprof/"
  exit 0
fi
if [ "$shards" != 0 ]; then
  [ "$shards" -ge 2 ] || die "--shards needs at least 2"
  "$bench" shards --tasks "$tasks" --shards "$shards" --out-dir "$out" "${operator_args[@]}"
  [ "$docs" = 1 ] || { log "wrote $out/shards.md and shards.json"; exit 0; }
  mkdir -p docs/bench
  cp "$out/shards.md" "docs/bench/shards-n$tasks.md"
  log "wrote docs/bench/shards-n$tasks.md"
  exit 0
fi
if [ "$spread" = 1 ]; then
  "$bench" spread --tasks "$tasks" --idle "$idle" --window "$window" --period "$period" \
    ${compare_lists:+--compare-lists "$compare_lists"} --out-dir "$out" "${operator_args[@]}"
  [ "$docs" = 1 ] || { log "wrote $out/spread.md and spread.json"; exit 0; }
  mkdir -p docs/bench
  suffix=$([ "$period" = 3600 ] || echo "-p$period")$([ -z "$compare_lists" ] || echo "-lists")
  cp "$out/spread.md" "docs/bench/results-n$tasks-spread$suffix.md"
  log "wrote docs/bench/results-n$tasks-spread$suffix.md"
  exit 0
fi
run_fairness() {
  "$bench" fairness --tasks "$tasks" --out-dir "$out" "${operator_args[@]}"
}
if [ "$fairness" = only ]; then
  run_fairness
  [ "$docs" = 1 ] || { log "wrote $out/fairness.md"; exit 0; }
  mkdir -p docs/bench
  cp "$out/fairness.md" "docs/bench/fairness-n$tasks.md"
  log "wrote docs/bench/fairness-n$tasks.md"
  exit 0
fi
"$bench" recur --tasks "$tasks" --idle "$idle" --out-dir "$out" "${operator_args[@]}" \
  "${perf_args[@]}"
if [ "$perf" = 1 ]; then
  # Where the machine's CPU went during the burst, by thread name (recur's runtime threads are
  # recur-worker, recur-dev's recur-dev-wkr), then recur's own hottest functions.
  perf report -i "$out/perf-burst.data" --stdio --no-children --sort comm -g none 2>/dev/null |
    grep -v '^$' >"$out/perf-by-process.txt"
  perf report -i "$out/perf-burst.data" --stdio --no-children --comm recur-worker,recur \
    --percentage relative --sort dso,sym -g none --percent-limit 0.5 2>/dev/null |
    grep -v '^$' >"$out/perf-recur.txt"
  log "profile: $out/perf-by-process.txt, $out/perf-recur.txt"
  sed -n '1,30p' "$out/perf-by-process.txt" >&2
fi
# Its own namespaces and operator (for every namespace), after the burst's are gone.
[ "$fairness" = 0 ] || run_fairness
if [ "$recur_only" = 1 ]; then
  log "--recur-only: figures in $out/recur.json and $out/fairness.json"
  exit 0
fi

# A fresh kube-controller-manager for each CronJob run, so that its peak RSS (VmHWM) is that
# run's: its garbage collector also caches every RecurringTask of the runs above.
# The CronJobs' burst is as far ahead as recur's limit of this run says their creates need.
limit_rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["limit"]["per_second"])' "$out/recur.json")
restart_kcm "$cluster"
"$bench" cronjob --tasks "$tasks" --out-dir "$out" --label default-qps --kcm-pid "$kcm_pid" \
  --kcm-flags "at its default client QPS (20, burst 30)" --writes-per-second "$limit_rate"
if [ "$raised" = 1 ]; then
  restart_kcm "$cluster" --kube-api-qps=500 --kube-api-burst=1000
  "$bench" cronjob --tasks "$tasks" --out-dir "$out" --label qps-500 --kcm-pid "$kcm_pid" \
    --kcm-flags "with --kube-api-qps=500 --kube-api-burst=1000" --writes-per-second "$limit_rate"
fi

"$bench" report --out-dir "$out" --command "make bench ($command_line)"
if [ "$pin" = 1 ]; then
  # The benchmark counts the cores it may use: say which ones everything had.
  {
    sed -n 1p "$out/results.md"
    printf '\n> Pinned (`--pin`): etcd, kube-apiserver and kube-controller-manager ran on CPU 0 only; recur, the daprd sidecars, the recording backend and the benchmark itself (which counts the cores it may use, hence the count below) on CPU %s of this %s-core machine.\n' "$others_cpus" "$cpus"
    sed 1d "$out/results.md"
  } >"$out/results.pinned.md"
  mv "$out/results.pinned.md" "$out/results.md"
fi
if [ "$docs" = 0 ]; then
  ensure_gnuplot && (cd "$out" && gnuplot lag.plt) || true
  log "wrote $out/results.md (docs/bench/ untouched: --out-dir)"
  exit 0
fi
# docs/bench/results.md and lag.png are the latest unpinned run; -n<N> copies keep one run per
# size, and a pinned run (another shape of machine) a -n<N>-pinned copy beside them, never over.
mkdir -p docs/bench
kept=n$tasks$([ "$pin" = 0 ] || echo -pinned)
[ "$pin" = 1 ] || cp "$out/results.md" docs/bench/results.md
sed "s/(lag\.png)/(lag-$kept.png)/" "$out/results.md" >"docs/bench/results-$kept.md"
if ensure_gnuplot; then
  (cd "$out" && gnuplot lag.plt)
  [ "$pin" = 1 ] || cp "$out/lag.png" docs/bench/lag.png
  cp "$out/lag.png" "docs/bench/lag-$kept.png"
  log "wrote docs/bench/results-$kept.md and lag-$kept.png$([ "$pin" = 1 ] || echo ', results.md and lag.png')"
else
  log "gnuplot is not available: no plot (apt-get install gnuplot-nox); wrote docs/bench/results-$kept.md"
fi
