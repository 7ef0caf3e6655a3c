# Process helpers shared by the scripts of the local cluster (sourced, not run).
# shellcheck shell=bash

alive() { # pid: running and not a zombie
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

stop_pids() { # seconds, pids...: SIGTERM, SIGKILL to what is left after that many seconds
  local secs=$1 pid deadline
  shift
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + secs))
  for pid in "$@"; do
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
    if alive "$pid"; then
      log "pid $pid ignored SIGTERM for $secs s: sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
      while alive "$pid"; do sleep 0.05; done
    fi
  done
}

# Polls CHECK (a command) until it succeeds, while NAME's process (pid_of[NAME], set by the
# caller's start function) is alive and the deadline has not passed; otherwise calls
# ON_FAIL NAME REASON (which names the component and shows its log) and returns its status.
wait_ready_with() { # on_fail, name, what, seconds, check command...
  local on_fail=$1 name=$2 what=$3 secs=$4 status
  shift 4
  # shellcheck disable=SC2154 # pid_of is the caller's
  local pid=${pid_of[$name]} deadline=$((SECONDS + secs))
  while :; do
    if ! alive "$pid"; then
      status=0
      wait "$pid" 2>/dev/null || status=$?
      "$on_fail" "$name" "it exited with status $status while starting"
      return
    fi
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ((SECONDS >= deadline)); then
      "$on_fail" "$name" "$what not reached within ${secs}s"
      return
    fi
    sleep 0.2
  done
}
