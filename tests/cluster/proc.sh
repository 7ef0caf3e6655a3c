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
