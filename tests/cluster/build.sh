#!/usr/bin/env bash
# Builds the real control plane (kube-apiserver, kube-controller-manager, kubectl, etcd), helm, daprd
# and an OpenTelemetry Collector (otelcol-recur)
# from the pinned Go wrapper modules beside this script, into a cache directory keyed by version.
# A second run finds the binaries and builds nothing. Prints the bin directory on stdout.
#
#   tests/cluster/build.sh                     # control plane, helm, daprd and otelcol-recur
#   RECUR_REAL_DAPR=0 tests/cluster/build.sh   # skip daprd (tests then use recur-dev's sidecar stand-in)
#   RECUR_OTELCOL=0 tests/cluster/build.sh     # skip otelcol-recur (the collector of the trace tests)
#   RECUR_NODE=1 tests/cluster/build.sh        # also the node of node.sh: kubelet, kube-proxy,
#       kube-scheduler, containerd (+ ctr, shim), runc (cgo: needs gcc and libseccomp-dev), the CNI
#       plugins (bin/cni/), CoreDNS (coredns-recur) and the OCI archives of the pause and hello
#       images (bin/images/); Dapr's control plane as images (bin/dapr-images/) and its Helm
#       chart (bin/dapr-chart/)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
cache=${RECUR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/recur}
bin="$cache/bin/k8s-$K8S_VERSION-helm-$HELM_VERSION"
mkdir -p "$bin"

log() { printf '[build] %s\n' "$*" >&2; }

timed() { # name, then the command; reports how long it took
  local name=$1 start=$SECONDS
  shift
  log "building $name ..."
  "$@" >&2
  log "built $name in $((SECONDS - start))s"
}

k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local date
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=recur-pinned -X $pkg.buildDate=$date"
  done
  printf '%s' "$flags"
}

build_k8s() {
  local name=$1 pkg=$2
  [ -x "$bin/$name" ] && return 0
  (cd "$here/k8s" && timed "$name" go build -trimpath -tags selinux,notest -ldflags "$(k8s_ldflags)" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
}

build_k8s etcd go.etcd.io/etcd/server/v3
build_k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build_k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build_k8s kubectl k8s.io/kubernetes/cmd/kubectl

# The ldflags of helm's own Makefile for a release: version and commit, and the default
# Kubernetes version (`helm template` without --kube-version), which the Makefile derives from
# its k8s.io/client-go (v0.X.Y is Kubernetes 1.X); without it helm assumes v1.20. Run in the
# helm wrapper module.
helm_ldflags() {
  local client_go
  client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
  if ! [[ $client_go =~ ^v([0-9]+)\.([0-9]+)\. ]]; then
    log "cannot derive the Kubernetes version from k8s.io/client-go $client_go"
    return 1
  fi
  local major=$((BASH_REMATCH[1] + 1)) minor=${BASH_REMATCH[2]}
  local v=helm.sh/helm/v3/internal/version
  local flags="-s -w -X $v.version=$HELM_VERSION -X $v.gitCommit=$HELM_COMMIT -X $v.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  printf '%s' "$flags"
}

# helm lives in a directory of its own, linked into $bin: bump HELM_BUILD when its ldflags change
# so that a cached helm built with the old ones is not reused.
HELM_BUILD=2
hbin="$cache/bin/helm-$HELM_VERSION-build$HELM_BUILD"
if [ ! -x "$hbin/helm" ]; then
  mkdir -p "$hbin"
  (
    cd "$here/helm"
    flags=$(helm_ldflags)
    timed helm go build -trimpath -ldflags "$flags" -o "$hbin/helm.tmp" helm.sh/helm/v3/cmd/helm
  )
  mv "$hbin/helm.tmp" "$hbin/helm"
fi
# Replaces an older helm in $bin; only when needed, so a concurrent run never sees it missing.
[ "$(readlink "$bin/helm" || true)" = "$hbin/helm" ] || ln -sf "$hbin/helm" "$bin/helm"

if [ "${RECUR_REAL_DAPR:-1}" = 1 ]; then
  dbin="$cache/bin/dapr-$DAPR_VERSION"
  mkdir -p "$dbin"
  if [ ! -x "$dbin/daprd" ]; then
    (cd "$here/dapr" && timed daprd go build -trimpath -tags stablecomponents -ldflags "-s -w" \
      -o "$dbin/daprd.tmp" github.com/dapr/dapr/cmd/daprd)
    mv "$dbin/daprd.tmp" "$dbin/daprd"
  fi
  ln -sf "$dbin/daprd" "$bin/daprd"
fi

# The OpenTelemetry Collector of the trace tests (otelcol.sh), from the wrapper module otelcol/, in
# a directory of its own keyed by its version, linked into $bin.
if [ "${RECUR_OTELCOL:-1}" = 1 ]; then
  obin="$cache/bin/otelcol-$OTELCOL_VERSION"
  if [ ! -x "$obin/otelcol-recur" ]; then
    mkdir -p "$obin"
    (cd "$here/otelcol" && timed otelcol-recur go build -trimpath -ldflags "-s -w" \
      -o "$obin/otelcol-recur.tmp" .)
    mv "$obin/otelcol-recur.tmp" "$obin/otelcol-recur"
  fi
  [ "$(readlink "$bin/otelcol-recur" || true)" = "$obin/otelcol-recur" ] || ln -sf "$obin/otelcol-recur" "$bin/otelcol-recur"
fi

# The node of node.sh (RECUR_NODE=1): kubelet, kube-proxy and kube-scheduler from the same
# k8s.io/kubernetes module and ldflags as the control plane; containerd, runc and the CNI plugins
# from their wrapper modules, each in a directory of its own keyed by its version and linked into
# $bin; the pause and hello images (images/) in a directory keyed by the hash of their sources.
if [ "${RECUR_NODE:-0}" = 1 ]; then
  build_k8s kubelet k8s.io/kubernetes/cmd/kubelet
  build_k8s kube-proxy k8s.io/kubernetes/cmd/kube-proxy
  build_k8s kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler

  link() { # target, link name: replaces an older link only when it differs
    [ "$(readlink "$2" || true)" = "$1" ] || ln -sfn "$1" "$2"
  }

  # containerd 2.x as its release builds it, but without cgo (the btrfs snapshotter needs cgo and
  # is not used: the node uses overlayfs); the shim is built without cgo upstream too.
  cbin="$cache/bin/containerd-$CONTAINERD_VERSION"
  for name in containerd ctr containerd-shim-runc-v2; do
    if [ ! -x "$cbin/$name" ]; then
      mkdir -p "$cbin"
      (cd "$here/containerd" && timed "$name" go build -trimpath -tags "urfave_cli_no_docs no_btrfs" \
        -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION -X github.com/containerd/containerd/v2/version.Revision=recur-pinned" \
        -o "$cbin/$name.tmp" "github.com/containerd/containerd/v2/cmd/$name")
      mv "$cbin/$name.tmp" "$cbin/$name"
    fi
    link "$cbin/$name" "$bin/$name"
  done

  # runc needs cgo (its nsexec is C) and, for seccomp profiles (RuntimeDefault, which the
  # restricted Pod Security profile requires), libseccomp. Debian bookworm's runc package is 1.1.5,
  # older than what containerd 2.x is tested with (1.2+), hence the module. The libpathrs tag of
  # runc's Makefile is left out: Debian has no libpathrs (runc then uses its Go implementation).
  rbin="$cache/bin/runc-$RUNC_VERSION"
  if [ ! -x "$rbin/runc" ]; then
    if ! pkg-config --exists libseccomp 2>/dev/null || ! command -v gcc >/dev/null; then
      log "runc needs gcc, pkg-config and libseccomp (Debian: apt-get install gcc pkg-config libseccomp-dev)"
      exit 1
    fi
    mkdir -p "$rbin"
    (cd "$here/runc" && CGO_ENABLED=1 timed runc go build -trimpath -buildmode=pie -tags "seccomp urfave_cli_no_docs" \
      -ldflags "-s -w -X main.version=${RUNC_VERSION#v} -X main.gitCommit=recur-pinned" \
      -o "$rbin/runc.tmp" github.com/opencontainers/runc)
    mv "$rbin/runc.tmp" "$rbin/runc"
  fi
  link "$rbin/runc" "$bin/runc"

  # The CNI plugins, in a directory of their own (containerd's CNI bin dir): $bin/cni.
  nbin="$cache/bin/cni-plugins-$CNI_PLUGINS_VERSION"
  for pkg in main/bridge main/loopback ipam/host-local meta/portmap; do
    name=${pkg#*/}
    [ -x "$nbin/$name" ] && continue
    mkdir -p "$nbin"
    (cd "$here/cni" && timed "cni $name" go build -trimpath -ldflags "-s -w" -o "$nbin/$name.tmp" \
      "github.com/containernetworking/plugins/plugins/$pkg")
    mv "$nbin/$name.tmp" "$nbin/$name"
  done
  link "$nbin" "$bin/cni"

  # CoreDNS, the node's DNS server, from the wrapper module coredns/ (only the plugins node.sh's
  # Corefile uses: no forward, nothing resolves off this machine).
  # Keyed by its version and the hash of the wrapper (its plugin list).
  dnsbin="$cache/bin/coredns-$COREDNS_VERSION-$(cat "$here/coredns/go.mod" "$here/coredns/main.go" | sha256sum | cut -c1-8)"
  if [ ! -x "$dnsbin/coredns-recur" ]; then
    mkdir -p "$dnsbin"
    (cd "$here/coredns" && timed coredns-recur go build -trimpath -ldflags "-s -w" -o "$dnsbin/coredns-recur.tmp" .)
    mv "$dnsbin/coredns-recur.tmp" "$dnsbin/coredns-recur"
  fi
  link "$dnsbin/coredns-recur" "$bin/coredns-recur"

  # The images of the node: pause (the pod sandbox: containerd's pinned sandbox image) and hello
  # (the HTTP server of the node checks), static Go programs packed by images/oci-image.py into
  # OCI archives for `ctr images import`. Keyed by the hash of their sources, flags and Go version.
  # -buildvcs=false: the programs are in this repository's module, and Go would otherwise stamp
  # the commit and whether the tree is modified into them, changing the image digests.
  iflags="-trimpath -buildvcs=false -ldflags=-s -w"
  ihash=$( (cd "$here/images" && cat go.mod pause/main.go hello/main.go oci-image.py && go env GOVERSION && echo "$iflags") | sha256sum | cut -c1-12)
  ibin="$cache/bin/images-$ihash"
  if [ ! -f "$ibin/hello.tar" ]; then
    mkdir -p "$ibin"
    (
      cd "$here/images"
      timed "images (pause, hello)" bash -c '
        set -euo pipefail
        go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$1/pause" ./pause
        go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$1/hello" ./hello
        ./oci-image.py --name recur.test/pause:1 --entrypoint /pause --user 65535:65535 --out "$1/pause.tar" "$1/pause:/pause"
        ./oci-image.py --name recur.test/hello:1 --entrypoint /hello --user 65532:65532 --expose 8080 --out "$1/hello.tar.tmp" "$1/hello:/hello"
        mv "$1/hello.tar.tmp" "$1/hello.tar"' _ "$ibin"
    )
  fi
  link "$ibin" "$bin/images"

  # Dapr's control plane for the node (Dapr's own Helm chart installs it): operator, sentry,
  # placement and the sidecar injector from the wrapper module dapr-cp/ (daprd's release; most of
  # its build cache is shared), each packed as Dapr's release images are (distroless/static
  # nonroot, the binary at /), named recur.test/dapr/NAME:DAPR_TAG, plus the chart itself copied from the
  # module. Not the scheduler: its go-etcd-cron v0.9.2 is not served by the module proxy here;
  # the chart then runs with global.scheduler.enabled=false (0 replicas), which Dapr supports
  # when no app uses jobs, workflows or actor reminders (recur uses none of them).
  [ -n "${dbin:-}" ] && [ -x "$dbin/daprd" ] || { log "the node's Dapr images need daprd (unset RECUR_REAL_DAPR=0)"; exit 1; }
  for name in operator sentry placement injector; do
    [ -x "$dbin/$name" ] && continue
    (cd "$here/dapr-cp" && timed "dapr $name" go build -trimpath -ldflags "-s -w" -o "$dbin/$name.tmp" \
      "github.com/dapr/dapr/cmd/$name")
    mv "$dbin/$name.tmp" "$dbin/$name"
  done
  if [ ! -f "$dbin/chart/dapr/Chart.yaml" ]; then
    src=$(cd "$here/dapr-cp" && go list -m -f '{{.Dir}}' github.com/dapr/dapr)/charts/dapr
    rm -rf "$dbin/chart.tmp" && mkdir -p "$dbin/chart.tmp"
    cp -R "$src" "$dbin/chart.tmp/dapr" && chmod -R u+w "$dbin/chart.tmp"
    rm -rf "$dbin/chart" && mv "$dbin/chart.tmp" "$dbin/chart"
  fi
  dhash=$( (cat "$here/images/oci-image.py" && sha256sum "$dbin"/{daprd,operator,sentry,placement,injector}) | sha256sum | cut -c1-12)
  dimg="$cache/bin/dapr-images-$dhash"
  if [ ! -f "$dimg/injector.tar" ]; then
    mkdir -p "$dimg"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$dimg/passwd"
    printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$dimg/group"
    chmod 0644 "$dimg/passwd" "$dimg/group"
    for name in daprd operator sentry placement injector; do
      timed "image recur.test/dapr/$name:${DAPR_VERSION#v}" "$here/images/oci-image.py" \
        --name "recur.test/dapr/$name:${DAPR_VERSION#v}" --entrypoint "/$name" --user 65532:65532 \
        --label "org.opencontainers.image.version=${DAPR_VERSION#v}" --out "$dimg/$name.tar.tmp" \
        "$dbin/$name:/$name" "$dimg/passwd:/etc/passwd" "$dimg/group:/etc/group"
      mv "$dimg/$name.tar.tmp" "$dimg/$name.tar"
    done
  fi
  link "$dimg" "$bin/dapr-images"
  link "$dbin/chart/dapr" "$bin/dapr-chart"
fi

echo "$bin"
