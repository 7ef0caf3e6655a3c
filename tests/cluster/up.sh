#!/usr/bin/env bash
# Starts a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on
# loopback ports, in a fresh directory, and prints `export KUBECONFIG=DIR/kubeconfig` on stdout.
# Everything else goes to stderr; each process logs to DIR/<name>.log.
#
#   tests/cluster/up.sh [options] [DIR]
#     DIR                    empty or missing directory (default: mktemp -d ${TMPDIR:-/tmp}/recur-cluster.XXXX)
#     --watch-parent PID     tear the cluster down (down.sh) when process PID exits
#     --timeout SECS         how long each process may take to become ready (default 120)
#     --apiserver-port N     fixed ports instead of free ones picked at random (no retry then)
#     --etcd-port N
#     --node                 for a node of node.sh: pods get ServiceAccount tokens (the ServiceAccount
#                            admission plugin is on; without --node it is off, so that a pod is never
#                            refused or changed for want of a ServiceAccount)
# Environment: RECUR_APISERVER_FLAGS (extra kube-apiserver flags, split on spaces),
#   RECUR_KEEP_FAILED_CLUSTER=1 (keep DIR and its logs when the start fails),
#   RECUR_CONTROL_PLANE_CPUS (a taskset CPU list: etcd, kube-apiserver, kube-controller-manager and
#   the --watch-parent watcher run only on those CPUs, as a control plane with cores of its own;
#   scripts/bench.sh --pin).
#
# Tools come from $RECUR_BIN_DIR, else from tests/cluster/build.sh (which builds what is missing).
# Stop the cluster with tests/cluster/down.sh DIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=proc.sh
. "$here/proc.sh"
readonly here
# cronjob and job are for a later benchmark; the rest make namespaces and ServiceAccounts work.
readonly controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,cronjob,job

log() { printf '[up] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

usage() { sed -n '2,22s/^# \{0,1\}//p' "$0" >&2; }

dir="" watch_parent="" timeout=120 fixed_api_port="" fixed_etcd_port="" for_node=0
while [ $# -gt 0 ]; do
  case $1 in
    --watch-parent) watch_parent=${2:?--watch-parent needs a PID}; shift 2 ;;
    --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
    --apiserver-port) fixed_api_port=${2:?--apiserver-port needs a port}; shift 2 ;;
    --etcd-port) fixed_etcd_port=${2:?--etcd-port needs a port}; shift 2 ;;
    --node) for_node=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage; die "unknown option $1" ;;
    *) [ -z "$dir" ] || die "only one directory may be given (got '$dir' and '$1')"; dir=$1; shift ;;
  esac
done
for n in "$timeout" $fixed_api_port $fixed_etcd_port $watch_parent; do
  [[ $n =~ ^[0-9]+$ ]] || die "'$n' is not a number"
done
if [ -n "$watch_parent" ] && ! kill -0 "$watch_parent" 2>/dev/null; then
  die "--watch-parent $watch_parent: no such process"
fi

for tool in openssl python3 curl setsid tail; do
  command -v "$tool" >/dev/null || die "'$tool' is required but not installed (Debian: openssl, python3, curl, util-linux, coreutils)"
done

bin=${RECUR_BIN_DIR:-}
[ -n "$bin" ] || bin=$("$here/build.sh") || die "tests/cluster/build.sh failed to build the tools"
for tool in etcd kube-apiserver kube-controller-manager kubectl; do
  [ -x "$bin/$tool" ] || die "$bin/$tool is missing: run tests/cluster/build.sh (or fix RECUR_BIN_DIR)"
done

# --- the directory -----------------------------------------------------------------------------
owned_dir=0 # set once the directory is ours, so a failed start may remove it
if [ -z "$dir" ]; then
  dir=$(mktemp -d "${TMPDIR:-/tmp}/recur-cluster.XXXX")
else
  if [ -e "$dir" ] && [ ! -d "$dir" ]; then
    die "$dir exists and is not a directory"
  fi
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    running=""
    if [ -f "$dir/pids" ]; then
      while read -r name pid; do
        # A live pid whose command line names DIR (not a reused pid of something else).
        if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir"; then
          running+=" $name (pid $pid)"
        fi
      done <"$dir/pids"
    fi
    if [ -n "$running" ]; then
      die "a cluster is already running in $dir:$running; stop it first: tests/cluster/down.sh $dir"
    fi
    if [ -f "$dir/.recur-cluster" ]; then
      die "stale cluster directory $dir (its processes are gone); remove it with tests/cluster/down.sh $dir"
    fi
    die "$dir is not empty and was not made by up.sh: give an empty or missing directory"
  fi
  mkdir -p "$dir"
fi
dir=$(cd "$dir" && pwd -P)
owned_dir=1
: >"$dir/.recur-cluster" # marker: down.sh removes only directories that carry it
readonly dir

# --- process bookkeeping -----------------------------------------------------------------------
declare -A pid_of=()
started=() # names, in start order
success=0


start_proc() { # name, then the command; runs it in its own session, logging to DIR/name.log
  local name=$1
  shift
  printf '=== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$dir/$name.log"
  local -a pin=()
  [ -z "${RECUR_CONTROL_PLANE_CPUS:-}" ] || pin=(taskset -c "$RECUR_CONTROL_PLANE_CPUS")
  setsid "${pin[@]}" "$@" </dev/null >>"$dir/$name.log" 2>&1 &
  pid_of[$name]=$!
  started+=("$name")
  echo "$name $!" >>"$dir/pids"
}

stop_all() { # newest first, each before the server it talks to: SIGTERM, SIGKILL after 10 s
  local i name pid deadline
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    name=${started[i]}
    pid=${pid_of[$name]}
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if alive "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for 10 s: sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  started=()
  pid_of=()
  : >"$dir/pids"
}

on_exit() {
  if [ "$success" = 1 ]; then return; fi
  if [ ${#started[@]} -gt 0 ]; then
    log "stopping what this run started: ${started[*]}"
    stop_all
  fi
  if [ "$owned_dir" = 1 ]; then
    if [ "${RECUR_KEEP_FAILED_CLUSTER:-0}" = 1 ]; then
      log "kept $dir for inspection (RECUR_KEEP_FAILED_CLUSTER=1); remove it with tests/cluster/down.sh $dir"
    else
      rm -rf "$dir"
    fi
  fi
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# Reports why NAME failed, with the tail of its log. Returns 2 when the cause is a port that was
# taken (worth a retry with other ports), 1 otherwise.
report_failure() { # name, reason
  local name=$1 reason=$2 logf="$dir/$1.log" rc=1 addr holder
  addr=$(grep -oE 'listen tcp [0-9.]+:[0-9]+: bind: address already in use' "$logf" 2>/dev/null | head -n 1) || true
  if [ -n "$addr" ]; then
    addr=${addr#listen tcp }
    addr=${addr%%: bind*}
    holder=$(ss -Hltnp "sport = :${addr##*:}" 2>/dev/null | grep -oE 'users:\(\("[^"]+",pid=[0-9]+' | head -n 1) || true
    holder=${holder#users:((\"}
    holder=${holder/\",pid=/ pid }
    reason="$reason: $addr is already in use${holder:+ (held by $holder)}"
    rc=2
  fi
  log "$name failed: $reason. Last 30 lines of its log ($logf):"
  tail -n 30 "$logf" 2>/dev/null | sed 's/^/    /' >&2 || true
  return "$rc"
}

# Polls CHECK until it succeeds while NAME runs; else report_failure (proc.sh).
wait_ready() { wait_ready_with report_failure "$@"; } # name, what, seconds, check command...

# --- credentials ---------------------------------------------------------------------------------
pki="$dir/pki"
mkdir -m 700 "$pki"
(
  cd "$pki"
  # A CA of our own signs the apiserver's serving certificate; kubeconfig and the
  # controller-manager trust it. EC keys: quick to make, accepted by Go and rustls.
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout ca.key -out ca.crt \
    -days 30 -subj "/CN=recur-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout apiserver.key \
    -out apiserver.csr -subj "/CN=kube-apiserver"
  # Besides loopback, the names pods use for the apiserver (node.sh): the `kubernetes` Service's IP
  # (the first of --service-cluster-ip-range) and its DNS names.
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:198.19.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt \
    -days 30 -extfile apiserver.ext
  # The apiserver's client certificate towards kubelets (node.sh): logs, exec, port-forward.
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout kubelet-client.key \
    -out kubelet-client.csr -subj "/O=system:masters/CN=kube-apiserver-kubelet-client"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=clientAuth" >kubelet-client.ext
  openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out kubelet-client.crt \
    -days 30 -extfile kubelet-client.ext
  # The apiserver's client certificate towards admission webhooks, from a CA of its own: a
  # webhook started with --webhook-client-ca webhook-client-ca.crt answers the apiserver only.
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout webhook-client-ca.key \
    -out webhook-client-ca.crt -days 30 -subj "/CN=recur-test-webhook-client-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout webhook-client.key \
    -out webhook-client.csr -subj "/CN=kube-apiserver-webhook-client"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=clientAuth" >webhook-client.ext
  openssl x509 -req -in webhook-client.csr -CA webhook-client-ca.crt -CAkey webhook-client-ca.key \
    -CAcreateserial -out webhook-client.crt -days 30 -extfile webhook-client.ext
  # ServiceAccount token signing keys (TokenRequest and the token controller).
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
  openssl pkey -in sa.key -pubout -out sa.pub
) >"$dir/openssl.log" 2>&1 || {
  tail -n 30 "$dir/openssl.log" >&2
  die "openssl failed to create the certificates and keys (log above)"
}
# The apiserver presents that certificate to every webhook that asks for one ('*': any host).
cat >"$pki/webhook-kubeconfig.yaml" <<EOF
apiVersion: v1
kind: Config
users:
- name: '*'
  user:
    client-certificate: $pki/webhook-client.crt
    client-key: $pki/webhook-client.key
EOF
cat >"$pki/admission.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $pki/webhook-kubeconfig.yaml
EOF
token=$(openssl rand -hex 32)
umask 077
printf '%s,admin,admin,"system:masters"\n' "$token" >"$pki/tokens.csv"
# curl reads the header from a file, so the token never shows in a process list.
printf 'Authorization: Bearer %s\n' "$token" >"$pki/admin-auth-header"
umask 022

# --- ports -----------------------------------------------------------------------------------------
# Free ports below the kernel's ephemeral range (32768+), so outgoing connections don't race us
# for them. Each is bound once to prove it free; between this probe and the real bind another
# process may still take one, which the start detects and retries.
pick_ports() { # count
  python3 - "$1" <<'EOF'
import random, socket, sys
socks, ports = [], []
while len(ports) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(20000, 32000)))
    except OSError:
        s.close()
        continue
    socks.append(s)
    ports.append(s.getsockname()[1])
print(*ports)
EOF
}

write_kubeconfig() { # server url
  local ca
  ca=$(base64 -w0 <"$pki/ca.crt")
  umask 077
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: recur-test
  cluster:
    server: $1
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $token
contexts:
- name: recur-test
  context:
    cluster: recur-test
    user: admin
    namespace: default
current-context: recur-test
EOF
  umask 022
}

api_get() { # path: GET on the apiserver as admin, body on stdout
  curl -fsS --max-time 5 --cacert "$pki/ca.crt" -H "@$pki/admin-auth-header" "$api_url$1"
}
etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'; }
api_ready() { [ "$(api_get /readyz)" = ok ]; }
kcm_healthy() { [ "$(curl -ksS --max-time 2 "https://127.0.0.1:$kcm_port/healthz")" = ok ]; }
default_sa_exists() { api_get /api/v1/namespaces/default/serviceaccounts/default; }

# Without a node the ServiceAccount admission plugin is off: no pod runs, and a pod created in a
# namespace whose default ServiceAccount is not made yet is then neither refused nor changed.
# With --node it is on (its default): pods get the projected token volume kube-api-access-*.
admission=(--disable-admission-plugins=ServiceAccount)
[ "$for_node" = 0 ] || admission=()

# One attempt at starting all three. Returns 0 when ready, 2 when a port was taken, 1 otherwise.
start_once() {

  read -r etcd_port etcd_peer_port api_port kcm_port <<<"$(pick_ports 4)"
  etcd_port=${fixed_etcd_port:-$etcd_port}
  api_port=${fixed_api_port:-$api_port}
  api_url="https://127.0.0.1:$api_port"
  log "ports: etcd $etcd_port (peer $etcd_peer_port), kube-apiserver $api_port, kube-controller-manager $kcm_port"

  rm -rf "$dir/etcd" "$dir/apiserver-certs" "$dir/controller-manager-certs"
  mkdir -m 700 "$dir/etcd"
  mkdir -p "$dir/apiserver-certs" "$dir/controller-manager-certs"

  local t0
  t0=$(now_ms)
  # RECUR_ETCD_QUOTA_BYTES: etcd's space quota (its default, 2 GiB, unless set; the 100,000-task
  # benchmark writes several revisions of every object between two compactions).
  local quota=()
  if [ -n "${RECUR_ETCD_QUOTA_BYTES:-}" ]; then quota=(--quota-backend-bytes="$RECUR_ETCD_QUOTA_BYTES"); fi
  start_proc etcd "$bin/etcd" --name=recur-test --data-dir="$dir/etcd" --unsafe-no-fsync "${quota[@]}" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="recur-test=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state=new
  wait_ready etcd "health" "$timeout" etcd_healthy || return
  log "etcd healthy after $(($(now_ms) - t0)) ms"

  # shellcheck disable=SC2086 # RECUR_APISERVER_FLAGS is a list of flags, split on purpose
  start_proc kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$dir/apiserver-certs" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --token-auth-file="$pki/tokens.csv" --authorization-mode=RBAC \
    --kubelet-client-certificate="$pki/kubelet-client.crt" --kubelet-client-key="$pki/kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer="$api_url" --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=198.19.0.0/24 --endpoint-reconciler-type=none \
    --admission-control-config-file="$pki/admission.yaml" \
    "${admission[@]}" --allow-privileged=true ${RECUR_APISERVER_FLAGS:-}
  wait_ready kube-apiserver "/readyz ok" "$timeout" api_ready || return
  log "kube-apiserver ready after $(($(now_ms) - t0)) ms"

  write_kubeconfig "$api_url"
  start_proc kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$dir/kubeconfig" \
    --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$dir/controller-manager-certs" \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --controllers="$controllers" --use-service-account-credentials=false
  wait_ready kube-controller-manager "/healthz ok" "$timeout" kcm_healthy || return
  # The default ServiceAccount is made by the controller-manager: proof that it works.
  wait_ready kube-controller-manager "the default ServiceAccount in namespace default" "$timeout" \
    default_sa_exists || return
  log "kube-controller-manager working after $(($(now_ms) - t0)) ms"
}

attempts=1
[ -n "$fixed_api_port$fixed_etcd_port" ] || attempts=3
for ((attempt = 1; ; attempt++)); do
  rc=0
  start_once || rc=$?
  [ "$rc" = 0 ] && break
  stop_all
  if [ "$rc" = 2 ] && ((attempt < attempts)); then
    log "retrying with other ports (attempt $((attempt + 1)) of $attempts)"
    continue
  fi
  [ "${RECUR_KEEP_FAILED_CLUSTER:-0}" = 1 ] || log "$dir is removed (RECUR_KEEP_FAILED_CLUSTER=1 keeps it)"
  die "the control plane did not start (see above); nothing of it is left running"
done

# --- the watcher and the env file ------------------------------------------------------------------
if [ -n "$watch_parent" ]; then
  start_proc watcher "$here/watch-parent.sh" "$watch_parent" "$dir"
  log "watcher (pid ${pid_of[watcher]}) tears the cluster down when pid $watch_parent exits"
fi
{
  echo "# Written by tests/cluster/up.sh. Stop this cluster with: tests/cluster/down.sh $dir"
  printf 'export RECUR_CLUSTER_DIR=%q\n' "$dir"
  printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
  printf 'export RECUR_BIN_DIR=%q\n' "$bin"
  printf 'APISERVER_URL=%q\n' "$api_url"
  printf 'ETCD_URL=%q\n' "http://127.0.0.1:$etcd_port"
  [ "$for_node" = 0 ] || echo 'FOR_NODE=1'
  for name in "${started[@]}"; do
    var=${name//-/_}
    printf '%s_PID=%s\n' "${var^^}" "${pid_of[$name]}"
  done
} >"$dir/env"
success=1
log "control plane up in $dir (kube-apiserver $api_url); stop it with: tests/cluster/down.sh $dir"
printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
