#!/usr/bin/env bash
# Starts a node for the control plane that tests/cluster/up.sh started in DIR: containerd (with
# runc and the CNI plugins), kubelet, kube-proxy (iptables mode), kube-scheduler and a second
# kube-controller-manager running the controllers that pods need (deployment, replicaset,
# endpointslice, ...). Everything is built from pinned modules (RECUR_NODE=1 build.sh) and keeps
# its state under DIR/node/. Needs root. One node per machine (the bridge and iptables are global).
#
#   tests/cluster/node.sh [--timeout SECS] DIR   start; prints `export KUBECONFIG=DIR/kubeconfig`
#   tests/cluster/node.sh --check DIR            check that nothing routes off this machine
#   tests/cluster/node.sh --down DIR             remove the node: containers, mounts, network
#                                                namespaces, the bridge, iptables rules, cgroups,
#                                                processes; then check that nothing is left
#
# The network (198.18.0.0/15 only, the block reserved for network tests):
#   pods       198.18.0.0/24 on the bridge recur0; the bridge is 198.18.0.1, which is also the
#              node's IP (kubelet, kube-proxy and kube-scheduler listen there, never on the
#              machine's interfaces)
#   services   up.sh's --service-cluster-ip-range, 198.19.0.0/24
#   apiserver  pods reach it at the `kubernetes` Service (198.19.0.1:443, kubernetes.default.svc):
#              the apiserver listens on 127.0.0.1 only, so a DNAT (chain RECUR-NODE-API, first in
#              nat PREROUTING) sends what comes in on recur0 for 198.19.0.1:443 to 127.0.0.1:<its
#              port>, with route_localnet on recur0 alone; chain RECUR-NODE-IN (first in INPUT)
#              drops anything else from recur0 for 127.0.0.0/8. The Service has no EndpointSlice
#              (up.sh: --endpoint-reconciler-type=none), so kube-proxy writes no rule of its own
#              for it. up.sh --node signs the apiserver's certificate for these names and turns the
#              ServiceAccount admission plugin on: pods get a projected token (kube-api-access-*;
#              the kube-root-ca.crt ConfigMaps come from the root-ca-cert-publisher controller here)
#   DNS        CoreDNS (coredns-recur, built by build.sh) runs on the host at 198.18.0.1:53, the
#              pods' nameserver (kubelet's clusterDNS): it answers cluster.local from the apiserver
#              and refuses every other name (no forward plugin: nothing resolves off this machine);
#              kubelet's resolvConf is "", so no search domain or server of the host reaches a pod
# A pod's routes are its subnet and 198.18.0.0/15 via the bridge, and no default route; the host
# routes 198.18.0.0/15 to the bridge (Service IPs included, programmed or not). The host
# forwards nothing between the bridge and any other interface (chain RECUR-NODE-FWD, first in
# FORWARD) and masquerades nothing whose destination is outside 198.18.0.0/15 (a RETURN first in
# nat POSTROUTING), whatever kube-proxy adds; --check verifies both and every pod's routes.
#
# What it took on this kernel (cgroup v1, hybrid: v1 controllers plus an empty cgroup2 at
# /sys/fs/cgroup/unified; cpu and cpuacct are separate hierarchies, hugetlb, net_cls and
# perf_event are not mounted):
#   - kubelet 1.37 refuses cgroup v1 ("kubelet is configured to not run on a host using cgroup
#     v1"): failCgroupV1 defaults to true; with failCgroupV1: false it runs (a Warning event
#     CgroupV1 on the Node);
#     cgroupDriver cgroupfs (no systemd runs here), the same as containerd's runc option
#     SystemdCgroup = false. kubelet makes /kubepods in each v1 hierarchy; --down removes them.
#   - containerd 2.x still runs on cgroup v1 (deprecated since 2.2, it logs a deprecation warning);
#     its CRI default DisableHugetlbController = true copes with the unmounted hugetlb controller.
#   - Not cgroups but this VM: root lacks CAP_SYS_RESOURCE (not in the bounding set), so no
#     oom_score_adj below 0. runc then fails every sandbox ("nsexec: failed to update
#     /proc/self/oom_score_adj: Permission denied"; kubelet asks -998 for pause, -997 for
#     Guaranteed containers): containerd's CRI option restrict_oom_score_adj = true clamps them to
#     containerd's own 0; kubelet's and kube-proxy's own oomScoreAdj (default -999) are 0.
#   - kubelet's node IP may not be a loopback address, so the node's IP is the bridge's.
#   - kubelet sets kernel tunables (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, ...)
#     unless protectKernelDefaults, which instead fails when they differ: they are saved before
#     the start and restored by --down, as are net.ipv4.ip_forward and bridge-nf-call-iptables.
#   - kubelet fails to raise RLIMIT_NOFILE (CAP_SYS_RESOURCE again): it logs
#     "Failed to set rlimit on max file handles" and goes on.
#   - kubelet writes outside its root dir whatever the config says: links in /var/log/containers
#     and /var/lib/kubelet/device-plugins/kubelet.sock; libcni caches results in
#     /var/lib/cni/results; shims put sockets in /run/containerd/s. --down removes ours.
#   - kube-proxy would raise nf_conntrack_max and set route_localnet for localhost NodePorts:
#     conntrack.maxPerCore 0 and localhostNodePorts false leave both alone.
# Environment: RECUR_BIN_DIR (else build.sh is run with RECUR_NODE=1).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=proc.sh
. "$here/proc.sh"
readonly here

readonly node_name=recur-node bridge=recur0 node_ip=198.18.0.1
readonly pod_cidr=198.18.0.0/24 test_net=198.18.0.0/15 cni_net=recur-pods
readonly pause_image=recur.test/pause:1
readonly api_service_ip=198.19.0.1 cluster_domain=cluster.local
readonly dns_health=$node_ip:8181 dns_ready=$node_ip:8182
# The node's own controllers; up.sh's controller-manager runs the rest (namespace, serviceaccount,
# garbagecollector, ...): the two lists must not overlap.
# nodelifecycle removes the taint node.kubernetes.io/not-ready that the apiserver's admission
# (TaintNodesByCondition) puts on every new node: without it nothing is ever scheduled.
# root-ca-cert-publisher writes the ConfigMap kube-root-ca.crt into every namespace, which the
# projected token volume of every pod mounts.
readonly node_controllers=nodelifecycle,deployment,replicaset,endpointslice,statefulset,daemonset,disruption,podgc,root-ca-cert-publisher
# Kernel settings the node changes; --down puts the saved values back.
readonly sysctls="net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables vm/overcommit_memory
  vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes"

log() { printf '[node] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
usage() { sed -n '2,13s/^# \{0,1\}//p' "$0" >&2; }

mode=up dir="" timeout=120
while [ $# -gt 0 ]; do
  case $1 in
    --down) mode=down; shift ;;
    --check) mode=check; shift ;;
    --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage; die "unknown option $1" ;;
    *) [ -z "$dir" ] || die "only one directory may be given"; dir=$1; shift ;;
  esac
done
[ -n "$dir" ] || { usage; die "which cluster directory?"; }
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout: '$timeout' is not a number"
[ "$(id -u)" = 0 ] || die "the node needs root (containerd, runc, mounts, iptables)"
[ -d "$dir" ] || die "$dir is not a directory (start a control plane with tests/cluster/up.sh $dir)"
dir=$(cd "$dir" && pwd -P)
[ -f "$dir/.recur-cluster" ] || die "$dir was not made by tests/cluster/up.sh"
readonly dir nd="$dir/node"
readonly cdir="$nd/containerd"
readonly sock="$cdir/containerd.sock"

# --- helpers shared by start, check and down -----------------------------------------------------
ctr_() { "$bin/ctr" --address "$sock" --namespace k8s.io "$@"; }
# Processes of this node: a node program whose command line names DIR/node (containerd names its
# config, the shims their containerd socket, kubelet and the others their config or cert dir).
scan_node() {
  local f p
  for f in $(grep -laF -- "$nd/" /proc/[0-9]*/cmdline 2>/dev/null); do
    p=${f#/proc/}
    p=${p%/cmdline}
    [ "$p" != $$ ] && alive "$p" || continue
    case $(tr '\0' '\n' <"$f" 2>/dev/null | head -n 1) in
      */containerd | */containerd-shim-runc-v2 | */kubelet | */kube-proxy | */kube-scheduler | */kube-controller-manager | */runc | */coredns-recur) echo "$p" ;;
    esac
  done
}
# Processes of the pods: everything in the kubepods cgroups (pause, the containers' processes).
pod_pids() { cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
  /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs 2>/dev/null || true; }
mounts_under() { awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
kube_chains() { # table: the KUBE-* chains of iptables and ip6tables
  { iptables -w -t "$1" -S 2>/dev/null; ip6tables -w -t "$1" -S 2>/dev/null; } | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }' | sort -u
}

# Removes every KUBE-* chain (and the rules in other chains that jump to one) from both families.
sweep_kube_chains() {
  local ipt table rule chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle raw; do
      "$ipt" -w -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' |
        while read -r rule; do
          # shellcheck disable=SC2086 # the rule as iptables printed it, without its quotes
          eval "$ipt -w -t $table -D ${rule#-A }" 2>/dev/null || true
        done
      for chain in $("$ipt" -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'); do
        "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'); do
        "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

remove_guards() {
  while iptables -w -t nat -D PREROUTING -m comment --comment recur-node -j RECUR-NODE-API 2>/dev/null; do :; done
  iptables -w -t nat -F RECUR-NODE-API 2>/dev/null || true
  iptables -w -t nat -X RECUR-NODE-API 2>/dev/null || true
  while iptables -w -D INPUT -m comment --comment recur-node -j RECUR-NODE-IN 2>/dev/null; do :; done
  iptables -w -F RECUR-NODE-IN 2>/dev/null || true
  iptables -w -X RECUR-NODE-IN 2>/dev/null || true
  while iptables -w -t nat -D POSTROUTING ! -d "$test_net" -m comment --comment recur-node -j RETURN 2>/dev/null; do :; done
  while iptables -w -D FORWARD -m comment --comment recur-node -j RECUR-NODE-FWD 2>/dev/null; do :; done
  iptables -w -F RECUR-NODE-FWD 2>/dev/null || true
  iptables -w -X RECUR-NODE-FWD 2>/dev/null || true
}

# Removes everything of the node, whatever state it is in; then checks. Returns 1 if anything is
# left (and says what).
node_down() {
  local name pid pids id left=0 m t0=$SECONDS shim_socks
  # The shims' sockets in /run/containerd/s/ (a shim removes its own when it exits normally).
  shim_socks=$(grep -ho '/run/containerd/s/[0-9a-f]*' "$cdir"/state/io.containerd.runtime.v2.task/*/*/bootstrap.json \
    "$cdir"/state/io.containerd.runtime.v2.task/*/*/address 2>/dev/null | sort -u || true)
  # 1. The Kubernetes components, newest first: kubelet then stops no container, on purpose
  #    (terminating pods would take their grace periods); step 2 removes them all at once.
  if [ -f "$nd/pids" ]; then
    tac "$nd/pids" | while read -r name pid; do
      alive "$pid" && [ "$name" != containerd ] || continue
      log "stopping $name (pid $pid)"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      stop_pids 10 "$pid"
    done
  fi
  # The Redis that node-dapr.sh started on the node's address (its process title names no
  # directory, so the generic sweep of down.sh would miss it).
  if [ -f "$nd/redis/redis.env" ]; then
    "$here/redis.sh" --down "$nd/redis" >/dev/null 2>&1 || log "redis.sh --down $nd/redis failed"
  fi
  # The Node object and the pods bound to it go too (their containers do below), when the
  # apiserver still answers: a later node starts from a clean slate.
  if [ -x "$bin/kubectl" ] && [ -f "$dir/kubeconfig" ] &&
    "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz --request-timeout=3s >/dev/null 2>&1; then
    "$bin/kubectl" --kubeconfig "$dir/kubeconfig" delete pods --all-namespaces --field-selector "spec.nodeName=$node_name" \
      --force --grace-period=0 --request-timeout=10s >/dev/null 2>&1 || true
    "$bin/kubectl" --kubeconfig "$dir/kubeconfig" delete node "$node_name" --ignore-not-found --request-timeout=10s >/dev/null 2>&1 || true
  fi
  # 2. The containers, through containerd while it runs: kill and remove every task (the shims
  #    exit with their last task), then the containers.
  if [ -S "$sock" ] && ctr_ version >/dev/null 2>&1; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      timeout 20 "$bin/ctr" --address "$sock" --namespace k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  # 3. containerd, then whatever of the node still runs (shims, pods' processes).
  pids=$(awk '$1 == "containerd" { print $2 }' "$nd/pids" 2>/dev/null || true)
  for pid in $pids; do
    if alive "$pid"; then
      log "stopping containerd (pid $pid)"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      stop_pids 10 "$pid"
    fi
  done
  pids=$(scan_node)
  if [ -n "$pids" ]; then
    log "killing what is left of the node: $(echo $pids)"
    kill -KILL $pids 2>/dev/null || true
  fi
  pids=$(pod_pids)
  if [ -n "$pids" ]; then
    log "killing the processes left in the kubepods cgroups: $(echo $pids)"
    kill -KILL $pids 2>/dev/null || true
  fi
  sleep 0.5
  # 4. Mounts under DIR/node: container root filesystems (overlay), /dev/shm of the sandboxes, the
  #    network namespaces (nsfs, kept under containerd's state dir), kubelet's volumes.
  for m in $(mounts_under "$nd"); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  # 5. Network: veths left on the bridge (a veth goes with its namespace), the bridge, the
  #    iptables rules of kube-proxy, kubelet and the guards.
  if ip link show "$bridge" >/dev/null 2>&1; then
    for m in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
      ip link delete "$m" 2>/dev/null || true
    done
    ip link delete "$bridge" 2>/dev/null || true
  fi
  if [ -x "$bin/kube-proxy" ] && [ -n "$(kube_chains nat)$(kube_chains filter)" ]; then
    "$bin/kube-proxy" --cleanup >>"$nd/kube-proxy.log" 2>&1 || true
  fi
  sweep_kube_chains
  remove_guards
  # libcni's cache of results (containerd's own cni-loopback network and ours) for namespaces
  # under DIR/node: stale once the namespaces are gone.
  grep -lF "\"netns\":\"$nd/" /var/lib/cni/results/* 2>/dev/null | xargs -r rm -f
  # 6. The cgroups kubelet made (depth first; empty once their processes are gone).
  for m in /sys/fs/cgroup/*/kubepods; do
    [ -d "$m" ] && find "$m" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # 7. The kernel settings, as they were.
  if [ -f "$nd/sysctl.saved" ]; then
    while read -r name value; do
      [ -n "$value" ] && echo "$value" >"/proc/sys/$name" 2>/dev/null || true
    done <"$nd/sysctl.saved"
  fi
  # 8. Paths outside DIR that the programs hard-code: kubelet's links to container logs
  #    (/var/log/containers) and device plugin socket (/var/lib/kubelet/device-plugins), libcni's
  #    result cache (/var/lib/cni/results), the shims' sockets (/run/containerd/s). Only what
  #    points into DIR/node or is empty is removed.
  find /var/log/containers -maxdepth 1 -type l -lname "$nd/*" -delete 2>/dev/null || true
  # shellcheck disable=SC2086 # a list of paths without blanks
  [ -z "$shim_socks" ] || rm -f $shim_socks
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  rmdir /var/log/containers /var/lib/kubelet/device-plugins /var/lib/kubelet \
    /run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni 2>/dev/null || true

  # The checks.
  pids="$(scan_node) $(pod_pids)"
  if [ -n "${pids// /}" ]; then
    for pid in $pids; do log "still running: pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"; done
    left=1
  fi
  m=$(mounts_under "$nd")
  [ -z "$m" ] || { log "still mounted under $nd: $(echo $m)"; left=1; }
  ! ip link show "$bridge" >/dev/null 2>&1 || { log "the bridge $bridge is still there"; left=1; }
  for t in filter nat mangle raw; do
    m=$(kube_chains "$t")
    [ -z "$m" ] || { log "iptables table $t still has: $(echo $m)"; left=1; }
  done
  for m in RECUR-NODE-FWD RECUR-NODE-IN "-t nat RECUR-NODE-API"; do
    # shellcheck disable=SC2086 # the table option and the chain
    ! iptables -w -S $m >/dev/null 2>&1 || { log "chain ${m#-t nat } is still there"; left=1; }
  done
  ! ls -d /sys/fs/cgroup/*/kubepods >/dev/null 2>&1 || { log "cgroups left: $(echo /sys/fs/cgroup/*/kubepods)"; left=1; }
  m=$(grep -lF "\"netns\":\"$nd/" /var/lib/cni/results/* 2>/dev/null || true)
  [ -z "$m" ] || { log "CNI results left: $(echo $m)"; left=1; }
  m=$(find /var/log/containers -maxdepth 1 -type l -lname "$nd/*" 2>/dev/null)
  [ -z "$m" ] || { log "links left in /var/log/containers: $(echo $m)"; left=1; }
  m=$(pgrep -f "^redis-server $node_ip:" || true)
  [ -z "$m" ] || { log "node-dapr.sh's Redis still runs: pid $(echo $m)"; left=1; }
  if [ "$left" = 0 ]; then
    rm -rf "$nd"
    log "node removed in $((SECONDS - t0))s: no process, mount, network namespace, bridge, KUBE-* chain, cgroup or log link left"
  fi
  return "$left"
}

# Nothing may route off this machine: the guards are in place and first, no masquerade or SNAT
# rule names a destination outside 198.18.0.0/15, the CNI config has no default route, and every
# pod's network namespace routes only into 198.18.0.0/15.
check_network() {
  local bad=0 rule pid routes first
  first=$(iptables -w -t nat -S POSTROUTING | sed -n 2p)
  [[ $first == *"! -d $test_net"*"recur-node"*"-j RETURN"* ]] || { log "check: the first rule of nat POSTROUTING is not the recur-node guard: $first"; bad=1; }
  first=$(iptables -w -S FORWARD | sed -n 2p)
  [[ $first == *"-j RECUR-NODE-FWD"* ]] || { log "check: the first rule of FORWARD is not the recur-node guard: $first"; bad=1; }
  first=$(iptables -w -S INPUT | sed -n 2p)
  [[ $first == *"-j RECUR-NODE-IN"* ]] || { log "check: the first rule of INPUT is not the recur-node guard: $first"; bad=1; }
  iptables -w -C RECUR-NODE-IN ! -i "$bridge" -d "$test_net" -j DROP 2>/dev/null ||
    { log "check: RECUR-NODE-IN does not drop packets for $test_net from other interfaces"; bad=1; }
  # The one DNAT of ours goes to loopback; route_localnet is on for the bridge only.
  while read -r rule; do
    [[ $rule == *"--to-destination 127.0.0.1:"* ]] || { log "check: RECUR-NODE-API has '$rule'"; bad=1; }
  done < <(iptables -w -t nat -S RECUR-NODE-API 2>/dev/null | grep -- '-j ' || true)
  for rule in all default; do
    [ "$(cat "/proc/sys/net/ipv4/conf/$rule/route_localnet")" = 0 ] ||
      { log "check: net.ipv4.conf.$rule.route_localnet is on (only $bridge may have it)"; bad=1; }
  done
  while read -r rule; do
    [[ $rule =~ -d\ ([0-9./]+) ]] || continue
    python3 -c 'import ipaddress,sys; sys.exit(0 if ipaddress.ip_network(sys.argv[1], strict=False).subnet_of(ipaddress.ip_network(sys.argv[2])) else 1)' \
      "${BASH_REMATCH[1]}" "$test_net" || { log "check: masquerade to outside $test_net: $rule"; bad=1; }
  done < <(iptables -w -t nat -S | grep -E -- '-j (MASQUERADE|SNAT)' || true)
  for rule in 198.18.0.200 198.18.255.254 198.19.0.1 198.19.255.254; do # the host's own packets
    ip -4 route get "$rule" 2>/dev/null | grep -q " dev $bridge " ||
      { log "check: the host routes $rule elsewhere than $bridge: $(ip -4 route get "$rule" 2>&1 | head -n 1)"; bad=1; }
  done
  if grep -qE '"(0\.0\.0\.0/0|::/0)"|isDefaultGateway"?: *true|ipMasq"?: *true' "$nd/cni/net.d/"*.conflist; then
    log "check: the CNI config has a default route or masquerade"
    bad=1
  fi
  # kube-proxy also writes ip6tables rules, but pods have no IPv6 address beyond link-local and
  # the host forwards no IPv6.
  [ "$(cat /proc/sys/net/ipv6/conf/all/forwarding 2>/dev/null || echo 0)" = 0 ] ||
    { log "check: IPv6 forwarding is on (net.ipv6.conf.all.forwarding)"; bad=1; }
  for pid in $(pod_pids); do
    [ "$(readlink "/proc/$pid/ns/net")" != "$(readlink /proc/self/ns/net)" ] || continue
    routes=$(nsenter -t "$pid" -n ip -4 route show 2>/dev/null) || continue
    while read -r rule; do
      case $rule in
        "$pod_cidr dev eth0 "* | "$test_net via $node_ip dev eth0"*) ;;
        "") ;;
        *) log "check: pod process $pid has the route '$rule'"; bad=1 ;;
      esac
    done <<<"$routes"
  done
  return "$bad"
}

# The bin dir: the one the node was started with (DIR/node/bin) for --down and --check, else
# $RECUR_BIN_DIR, else build.sh's (which builds what is missing).
bin=${RECUR_BIN_DIR:-}
if [ "$mode" != up ] && [ -f "$nd/bin" ]; then
  bin=$(cat "$nd/bin")
elif [ -z "$bin" ] || [ ! -x "$bin/kubelet" ]; then
  bin=$(RECUR_NODE=1 "$here/build.sh") || die "RECUR_NODE=1 tests/cluster/build.sh failed to build the node"
fi
readonly bin

case $mode in
  down)
    [ -d "$nd" ] || { log "$dir has no node: nothing to remove"; exit 0; }
    node_down || die "the node in $dir was not removed completely (see above); $nd is kept"
    exit 0
    ;;
  check)
    [ -d "$nd" ] || die "$dir has no node"
    check_network || die "the node's network is not confined to $test_net (see above)"
    log "check: nothing routes off this machine (guards first, no masquerade outside $test_net, the host routes $test_net to $bridge, pods route only into $test_net)"
    exit 0
    ;;
esac

# --- start ------------------------------------------------------------------------------------------
for tool in iptables ip6tables ip nsenter conntrack tac python3 curl; do
  command -v "$tool" >/dev/null || die "'$tool' is required but not installed (Debian: iptables, iproute2, util-linux, conntrack)"
done
for tool in kubelet kube-proxy kube-scheduler kube-controller-manager kubectl containerd ctr containerd-shim-runc-v2 runc \
  coredns-recur cni/bridge cni/host-local cni/loopback cni/portmap images/pause.tar images/hello.tar; do
  [ -e "$bin/$tool" ] || die "$bin/$tool is missing: run RECUR_NODE=1 tests/cluster/build.sh"
done
# shellcheck disable=SC1091 # written by up.sh
. "$dir/env"
[ "${FOR_NODE:-0}" = 1 ] ||
  die "the control plane of $dir was started without --node (pods would get no ServiceAccount token): tests/cluster/down.sh $dir, then tests/cluster/up.sh --node $dir"
[ -e "$nd" ] && die "$dir already has a node (or the remains of one): remove it first with tests/cluster/node.sh --down $dir"
kubectl=("$bin/kubectl" --kubeconfig "$dir/kubeconfig")
"${kubectl[@]}" get --raw /readyz >/dev/null 2>&1 || die "the kube-apiserver of $dir does not answer: is the control plane running?"
if ip link show "$bridge" >/dev/null 2>&1 || [ -n "$(kube_chains nat)" ]; then
  die "another node runs on this machine (the bridge $bridge or KUBE-* iptables chains exist); one node per machine"
fi
# The kernel: overlayfs (containerd's snapshotter), bridge netfilter (kube-proxy's rules must see
# bridged traffic), cgroup v1 controllers kubelet requires.
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "the kernel has no overlayfs"
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null ||
  die "the kernel has no br_netfilter (/proc/sys/net/bridge is missing)"
for c in cpu cpuacct cpuset memory pids; do
  [ -e "/sys/fs/cgroup/$c/cgroup.procs" ] || [ -e /sys/fs/cgroup/cgroup.controllers ] || die "cgroup controller $c is not mounted at /sys/fs/cgroup/$c"
done
svc_ip=$("${kubectl[@]}" get service kubernetes -n default -o jsonpath='{.spec.clusterIP}')
python3 -c 'import ipaddress,sys; sys.exit(0 if ipaddress.ip_address(sys.argv[1]) in ipaddress.ip_network(sys.argv[2]) else 1)' \
  "$svc_ip" "$test_net" || die "the service range of the apiserver ($svc_ip) is not inside $test_net: see up.sh --service-cluster-ip-range"
[ "$svc_ip" = "$api_service_ip" ] || die "the kubernetes Service is $svc_ip, not $api_service_ip (the address of the DNAT and of the apiserver's certificate)"
api_port=${APISERVER_URL##*:}
[[ $api_port =~ ^[0-9]+$ ]] || die "cannot read the apiserver's port from APISERVER_URL=$APISERVER_URL ($dir/env)"

mkdir -p "$nd"/{cni/net.d,cni/ipam,kubelet,pod-logs,scheduler-certs,kcm-certs,coredns} "$cdir"
: >"$nd/pids"
echo "$bin" >"$nd/bin"
declare -A pid_of=()
success=0
on_exit() {
  [ "$success" = 1 ] && return
  log "the node did not start: removing what was started (its logs are kept in $dir/node-logs/)"
  mkdir -p "$dir/node-logs" && cp "$nd"/*.log "$dir/node-logs/" 2>/dev/null || true
  node_down || log "the node in $dir was not removed completely (see above)"
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

start_proc() { # name, then the command; in its own session, logging to DIR/node/name.log
  local name=$1
  shift
  printf '=== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$nd/$name.log"
  setsid "$@" </dev/null >>"$nd/$name.log" 2>&1 &
  pid_of[$name]=$!
  echo "$name $!" >>"$nd/pids"
}
fail() { # name, reason: names the component and shows the tail of its log
  log "$1 failed: $2. Last 30 lines of its log ($nd/$1.log):"
  tail -n 30 "$nd/$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true
  exit 1
}
# Polls CHECK until it succeeds while NAME runs; else fail (exits; proc.sh).
wait_ready() { wait_ready_with fail "$@"; } # name, what, seconds, check command...

t0=$(now_ms)
# Kernel settings: saved for --down, then what the node needs (forwarding for pod -> service ->
# pod through the bridge; bridged traffic through iptables for kube-proxy's DNAT).
for s in $sysctls; do
  echo "$s $(cat "/proc/sys/$s" 2>/dev/null || true)"
done >"$nd/sysctl.saved"
echo 1 >/proc/sys/net/ipv4/ip_forward
echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables

# The bridge, made here (not by the CNI plugin) so that it carries the node's IP before kubelet
# starts. The guards go first in FORWARD and nat POSTROUTING.
ip link add "$bridge" type bridge
ip addr add "$node_ip/24" dev "$bridge"
ip link set "$bridge" up
# The whole test block routes to the bridge, so that the host's own packets to a Service IP go
# there too: kube-proxy's DNAT happens after the routing decision of a local connection, and a
# Service IP not programmed yet (or not at all) would otherwise follow the default route off this
# machine. Such a packet now goes unanswered on the bridge.
ip route add "$test_net" dev "$bridge" src "$node_ip"
iptables -w -N RECUR-NODE-FWD
iptables -w -A RECUR-NODE-FWD -i "$bridge" ! -o "$bridge" -j DROP
iptables -w -A RECUR-NODE-FWD ! -i "$bridge" -o "$bridge" -j DROP
# The apiserver for pods: 198.19.0.1:443 from the bridge to its loopback port. route_localnet lets
# the rewritten packet (and the answer, from 127.0.0.1) through recur0; RECUR-NODE-IN refuses
# every other packet from the bridge to 127.0.0.0/8 (only our DNAT may lead there).
echo 1 >"/proc/sys/net/ipv4/conf/$bridge/route_localnet"
iptables -w -t nat -N RECUR-NODE-API
iptables -w -t nat -A RECUR-NODE-API -i "$bridge" -d "$api_service_ip/32" -p tcp --dport 443 \
  -j DNAT --to-destination "127.0.0.1:$api_port"
iptables -w -N RECUR-NODE-IN
iptables -w -A RECUR-NODE-IN -i "$bridge" -d 127.0.0.0/8 -m conntrack ! --ctstate DNAT -j DROP
iptables -w -A RECUR-NODE-IN -i "$bridge" -d 127.0.0.0/8 -p tcp ! --dport "$api_port" -j DROP
# The node's addresses (kubelet, CoreDNS, and whatever listens on 198.18.0.1, like node-dapr.sh's
# Redis) answer only this machine and its pods: Linux accepts a packet for any local address on
# any interface, so without this a neighbour routing 198.18.0.0/15 here would reach them.
iptables -w -A RECUR-NODE-IN -i lo -j RETURN
iptables -w -A RECUR-NODE-IN ! -i "$bridge" -d "$test_net" -j DROP
# (Re)inserted at the top: kube-proxy inserts its own jumps at position 1 when it starts, and
# later only checks that they exist, so after its first sync the guards are moved back on top.
guards_first() {
  while iptables -w -D FORWARD -m comment --comment recur-node -j RECUR-NODE-FWD 2>/dev/null; do :; done
  iptables -w -I FORWARD 1 -m comment --comment recur-node -j RECUR-NODE-FWD
  while iptables -w -t nat -D POSTROUTING ! -d "$test_net" -m comment --comment recur-node -j RETURN 2>/dev/null; do :; done
  iptables -w -t nat -I POSTROUTING 1 ! -d "$test_net" -m comment --comment recur-node -j RETURN
  while iptables -w -t nat -D PREROUTING -m comment --comment recur-node -j RECUR-NODE-API 2>/dev/null; do :; done
  iptables -w -t nat -I PREROUTING 1 -m comment --comment recur-node -j RECUR-NODE-API
  while iptables -w -D INPUT -m comment --comment recur-node -j RECUR-NODE-IN 2>/dev/null; do :; done
  iptables -w -I INPUT 1 -m comment --comment recur-node -j RECUR-NODE-IN
}
guards_first

# --- CNI: a bridge on 198.18.0.0/24, routes only into 198.18.0.0/15, no masquerade ---------------
cat >"$nd/cni/net.d/10-recur.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$cni_net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$nd/cni/ipam",
        "ranges": [[{ "subnet": "$pod_cidr", "gateway": "$node_ip" }]],
        "routes": [{ "dst": "$test_net" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": false }
  ]
}
EOF

# --- containerd ---------------------------------------------------------------------------------
# Config version 4 (containerd 2.4; version 3 would be migrated at every start, with a warning):
# root, state and sockets under DIR/node/containerd; no imports (the default imports
# /etc/containerd/conf.d/*.toml, which would let the host's settings in); the CRI plugin's sandbox
# image is the local pause image (pinned_images.sandbox of the images plugin, which replaced
# 1.x's sandbox_image); network namespaces are mounted under the state dir, not /run/netns; runc
# is ours, with its state under DIR; NRI (a socket in /var/run/nri) is off; no CDI spec dirs.
# Shims still put their sockets in /run/containerd/s/ (fixed in containerd): --down removes ours.
cat >"$cdir/config.toml" <<EOF
version = 4
root = "$cdir/root"
state = "$cdir/state"
temp = "$cdir/tmp"
imports = []

[plugins.'io.containerd.server.v1.grpc']
  address = "$sock"
[plugins.'io.containerd.server.v1.ttrpc']
  address = "$sock.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "$cdir/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$pause_image"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # This machine lacks CAP_SYS_RESOURCE (not even in root's bounding set): no process may lower its
  # oom_score_adj below 0, and runc fails to start a sandbox asking for kubelet's -998.
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$bin/cni"]
    conf_dir = "$nd/cni/net.d"
    max_conf_num = 1
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$bin/runc"
        Root = "$nd/runc"
        SystemdCgroup = false
EOF
mkdir -p "$cdir/tmp"
# The shim is found on PATH: ours first.
start_proc containerd env PATH="$bin:$PATH" "$bin/containerd" --config "$cdir/config.toml"
wait_ready containerd "its socket answering" "$timeout" ctr_ version
log "containerd ready after $(($(now_ms) - t0)) ms"
for image in pause hello; do
  ctr_ images import "$bin/images/$image.tar" >>"$nd/containerd.log" 2>&1 ||
    fail containerd "ctr images import $bin/images/$image.tar failed"
done
ctr_ images ls -q 2>/dev/null | grep -x "$pause_image" >/dev/null || fail containerd "the pause image $pause_image is not in namespace k8s.io after the import"

# --- kubelet -----------------------------------------------------------------------------------------
# Authenticates to the apiserver with the admin kubeconfig; accepts the apiserver's client
# certificate (up.sh's kubelet-client, signed by the cluster CA) and asks the apiserver about
# everyone else (webhook). Everything it writes goes under DIR/node (root dir, pod logs, volume
# plugins); image GC is off (the images are imported, not pulled: nothing could bring them back)
# and eviction happens only when the disk or memory is nearly full (a shared machine's disk).
cat >"$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$sock
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: $node_ip
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization:
  mode: Webhook
podLogsDir: $nd/pod-logs
volumePluginDir: $nd/kubelet/volume-plugins
failSwapOn: false
protectKernelDefaults: false
oomScoreAdj: 0
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
serializeImagePulls: false
maxPods: 60
clusterDNS: [$node_ip]
clusterDomain: $cluster_domain
resolvConf: ""
EOF
start_proc kubelet "$bin/kubelet" --config="$nd/kubelet.yaml" --kubeconfig="$dir/kubeconfig" \
  --hostname-override="$node_name" --node-ip="$node_ip" --root-dir="$nd/kubelet" --cert-dir="$nd/kubelet/pki" --v=1
wait_ready kubelet "/healthz ok" "$timeout" curl -fsS --max-time 2 "http://$node_ip:10248/healthz"
node_ready() { [ "$("${kubectl[@]}" get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_ready kubelet "node $node_name Ready" "$timeout" node_ready
log "kubelet: node $node_name Ready after $(($(now_ms) - t0)) ms"

# --- kube-proxy (iptables) ----------------------------------------------------------------------------
cat >"$nd/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $dir/kubeconfig}
hostnameOverride: $node_name
bindAddress: $node_ip
healthzBindAddress: $node_ip:10256
metricsBindAddress: $node_ip:10249
clusterCIDR: $pod_cidr
detectLocalMode: ClusterCIDR
nodePortAddresses: ["$test_net"]
iptables: {localhostNodePorts: false, masqueradeAll: false, syncPeriod: 10s, minSyncPeriod: 0s}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
oomScoreAdj: 0
EOF
start_proc kube-proxy "$bin/kube-proxy" --config="$nd/kube-proxy.yaml" --v=1
proxy_synced() { iptables -w -t nat -S KUBE-SERVICES >/dev/null && curl -fsS --max-time 2 "http://$node_ip:10256/healthz"; }
wait_ready kube-proxy "/healthz ok and chain KUBE-SERVICES" "$timeout" proxy_synced
guards_first

# --- kube-scheduler and the node's controllers ----------------------------------------------------------
start_proc kube-scheduler "$bin/kube-scheduler" --kubeconfig="$dir/kubeconfig" \
  --authentication-kubeconfig="$dir/kubeconfig" --authorization-kubeconfig="$dir/kubeconfig" \
  --authentication-skip-lookup --leader-elect=false --bind-address="$node_ip" --secure-port=10259 \
  --cert-dir="$nd/scheduler-certs"
wait_ready kube-scheduler "/healthz ok" "$timeout" curl -kfsS --max-time 2 "https://$node_ip:10259/healthz"
start_proc kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$dir/kubeconfig" \
  --leader-elect=false --bind-address="$node_ip" --secure-port=10257 --cert-dir="$nd/kcm-certs" \
  --controllers="$node_controllers" --use-service-account-credentials=false --authentication-skip-lookup \
  --root-ca-file="$dir/pki/ca.crt"
wait_ready kube-controller-manager "/healthz ok" "$timeout" curl -kfsS --max-time 2 "https://$node_ip:10257/healthz"

# --- CoreDNS on the host: cluster.local (and reverse lookups of its addresses) only ----------------
cat >"$nd/coredns/Corefile" <<EOF
$cluster_domain:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $node_ip
    errors
    health $dns_health
    ready $dns_ready
    kubernetes $cluster_domain in-addr.arpa ip6.arpa {
        kubeconfig $dir/kubeconfig recur-test
        pods insecure
    }
    cache 5
}
EOF
start_proc coredns "$bin/coredns-recur" -conf "$nd/coredns/Corefile"
wait_ready coredns "/ready ok (the kubernetes plugin has synced)" "$timeout" curl -fsS --max-time 2 "http://$dns_ready/ready"
log "coredns: serving $cluster_domain on $node_ip:53 after $(($(now_ms) - t0)) ms"
untainted() { [ -z "$("${kubectl[@]}" get node "$node_name" -o jsonpath='{.spec.taints}')" ]; }
wait_ready kube-controller-manager "node $node_name without taints (schedulable)" "$timeout" untainted

check_network || die "the node's network is not confined to $test_net (see above)"
{
  echo "# Written by tests/cluster/node.sh. Remove the node with: tests/cluster/node.sh --down $dir"
  printf 'NODE_NAME=%q\nNODE_IP=%q\nPOD_CIDR=%q\nCONTAINERD_ADDRESS=%q\n' "$node_name" "$node_ip" "$pod_cidr" "$sock"
} >"$nd/env"
success=1
log "node $node_name up in $(($(now_ms) - t0)) ms (pods $pod_cidr on $bridge); remove it with: tests/cluster/node.sh --down $dir"
printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
