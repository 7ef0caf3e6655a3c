#!/usr/bin/env bash
# A Redis server for Dapr pub/sub (component pubsub.redis), on loopback unless --bind names
# another local address, with its data in DIR.
# Every acknowledged write survives a restart: append-only file fsynced on every write
# (--appendonly yes --appendfsync always), no RDB snapshots (--save ""). Redis 7 from Debian's
# redis-server package (apt-get install redis-server; do not start its system service).
#
#   tests/cluster/redis.sh [--watch-parent PID] [--bind ADDR] DIR
#                                                     start on a free port of ADDR (default
#                                                     127.0.0.1); prints the port
#   tests/cluster/redis.sh --stop DIR                 stop it (SIGTERM, wait); DIR keeps its data
#   tests/cluster/redis.sh --start DIR                start it again: same port, same data
#   tests/cluster/redis.sh --restart DIR              --stop, then --start
#   tests/cluster/redis.sh --down DIR                 stop it and its watcher for good
#
# DIR/redis.env holds REDIS_PORT and REDIS_PID (empty while stopped), DIR/redis.log its log,
# DIR/redis-data/ its data. --watch-parent PID: a watcher runs --down when process PID exits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=proc.sh
. "$here/proc.sh"
log() { printf '[redis] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
usage() { sed -n '2,17s/^# \{0,1\}//p' "$0" >&2; }

mode=up dir="" watch_parent="" bind=127.0.0.1
while [ $# -gt 0 ]; do
  case $1 in
    --watch-parent) watch_parent=${2:?--watch-parent needs a PID}; shift 2 ;;
    --bind) bind=${2:?--bind needs an IPv4 address}; shift 2 ;;
    --stop | --start | --restart | --down) mode=${1#--}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage; die "unknown option $1" ;;
    *) [ -z "$dir" ] || die "only one directory may be given"; dir=$1; shift ;;
  esac
done
[ -n "$dir" ] || { usage; die "DIR is missing"; }
[[ $bind =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "--bind '$bind' is not an IPv4 address"
if [ -n "$watch_parent" ]; then
  [[ $watch_parent =~ ^[0-9]+$ ]] || die "--watch-parent '$watch_parent' is not a number"
  kill -0 "$watch_parent" 2>/dev/null || die "--watch-parent $watch_parent: no such process"
fi


# Our redis-server: a live pid whose command line names the port (not a reused pid).
ours() { # pid port
  [ -n "$1" ] && alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "redis-server.*:$2"
}

write_env() { # port pid watcher
  printf 'REDIS_PORT=%s\nREDIS_PID=%s\nREDIS_WATCHER_PID=%s\nREDIS_BIND=%s\n' "$1" "$2" "$3" "$bind" >"$dir/redis.env.tmp"
  mv "$dir/redis.env.tmp" "$dir/redis.env"
}

load_env() {
  [ -f "$dir/redis.env" ] || die "$dir/redis.env is missing: start Redis with redis.sh $dir first"
  REDIS_PORT="" REDIS_PID="" REDIS_WATCHER_PID="" REDIS_BIND=127.0.0.1
  # shellcheck disable=SC1091
  . "$dir/redis.env"
  bind=$REDIS_BIND
}

stop_server() { # SIGTERM (Redis flushes the append-only file and exits), SIGKILL after 30 s
  local pid=$REDIS_PID deadline
  if ! ours "$pid" "$REDIS_PORT"; then return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 30))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
  if alive "$pid"; then
    log "redis-server (pid $pid) ignored SIGTERM for 30 s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.05; done
  fi
}

start_server() { # port: starts it with the data in DIR, waits for PONG; sets REDIS_PID
  local port=$1 deadline reply
  mkdir -p "$dir/redis-data"
  printf '=== %s: redis-server on %s:%s\n' "$(date -u +%FT%TZ)" "$bind" "$port" >>"$dir/redis.log"
  # Its own session: a Ctrl-C meant for the caller does not reach it, --down does.
  # Protected mode refuses every client but loopback when no password is set; off only for
  # another address (node-dapr.sh: the node's bridge, which pods reach and nothing off this
  # machine does).
  local protected=yes
  [[ $bind == 127.* ]] || protected=no
  setsid redis-server --port "$port" --bind "$bind" --protected-mode "$protected" --daemonize no \
    --dir "$dir/redis-data" --appendonly yes --appendfsync always --save "" \
    --pidfile "$dir/redis.pid" --logfile "" </dev/null >>"$dir/redis.log" 2>&1 &
  REDIS_PID=$!
  # PONG only once the data is loaded (before, PING answers LOADING).
  deadline=$((SECONDS + 30))
  until reply=$(redis-cli -h "$bind" -p "$port" ping 2>/dev/null) && [ "$reply" = PONG ]; do
    if ! alive "$REDIS_PID"; then
      log "redis-server exited while starting; last lines of $dir/redis.log:"
      tail -n 20 "$dir/redis.log" | sed 's/^/    /' >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "redis-server did not answer PING within 30 s; last lines of $dir/redis.log:"
      tail -n 20 "$dir/redis.log" | sed 's/^/    /' >&2
      kill -KILL "$REDIS_PID" 2>/dev/null || true
      return 1
    fi
    sleep 0.05
  done
}

# A free port below the kernel's ephemeral range (32768+), as up.sh picks them: the port is
# used again after a restart, and an outgoing connection must not hold it meanwhile.
pick_port() {
  python3 - "$bind" <<'EOF'
import random, socket, sys
while True:
    s = socket.socket()
    try:
        s.bind((sys.argv[1], random.randrange(20000, 32000)))
    except OSError:
        s.close()
        continue
    print(s.getsockname()[1])
    break
EOF
}

case $mode in
  up)
    for tool in redis-server redis-cli python3 setsid; do
      command -v "$tool" >/dev/null || die "'$tool' is required but not installed (Debian: apt-get install redis-server)"
    done
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    if [ -f "$dir/redis.env" ]; then
      load_env
      if ours "$REDIS_PID" "$REDIS_PORT"; then
        die "Redis already runs in $dir (pid $REDIS_PID, port $REDIS_PORT): stop it with redis.sh --down $dir"
      fi
    fi
    port="" watcher=""
    for attempt in 1 2 3; do
      port=$(pick_port)
      if start_server "$port"; then break; fi
      port=""
      # Another process took the port between the probe and redis-server's bind: try another.
      if ((attempt == 3)) || ! tail -n 5 "$dir/redis.log" | grep -q 'Address already in use'; then break; fi
      log "port $port was taken: retrying with another"
    done
    [ -n "$port" ] || die "redis-server did not start (see above)"
    if [ -n "$watch_parent" ]; then
      # GNU tail checks once a second whether the parent still lives.
      # shellcheck disable=SC2016 # expanded by the watcher's shell
      setsid bash -c 'tail --pid="$1" -f /dev/null; exec "$2" --down "$3"' redis-watcher \
        "$watch_parent" "$here/redis.sh" "$dir" </dev/null >>"$dir/redis.log" 2>&1 &
      watcher=$!
    fi
    write_env "$port" "$REDIS_PID" "$watcher"
    log "redis-server ready on $bind:$port (pid $REDIS_PID, data in $dir/redis-data)"
    echo "$port"
    ;;
  stop)
    load_env
    stop_server
    write_env "$REDIS_PORT" "" "$REDIS_WATCHER_PID"
    log "redis-server stopped (port $REDIS_PORT kept for --start)"
    ;;
  start | restart)
    load_env
    [ "$mode" = start ] || stop_server
    if ours "$REDIS_PID" "$REDIS_PORT"; then die "Redis already runs in $dir (pid $REDIS_PID)"; fi
    start_server "$REDIS_PORT" || die "redis-server did not start again on port $REDIS_PORT (see above)"
    write_env "$REDIS_PORT" "$REDIS_PID" "$REDIS_WATCHER_PID"
    log "redis-server ${mode}ed on $bind:$REDIS_PORT (pid $REDIS_PID)"
    ;;
  down)
    [ -f "$dir/redis.env" ] || exit 0
    load_env
    stop_server
    # The watcher (unless this is the watcher, exec'ed): its shell and its tail, one group.
    if [ -n "$REDIS_WATCHER_PID" ] && [ "$REDIS_WATCHER_PID" != $$ ] && alive "$REDIS_WATCHER_PID"; then
      kill -TERM -- "-$REDIS_WATCHER_PID" 2>/dev/null || true
    fi
    rm -f "$dir/redis.env"
    ;;
esac
