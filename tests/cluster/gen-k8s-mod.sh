#!/usr/bin/env bash
# Regenerates tests/cluster/k8s/go.mod for the Kubernetes release in versions.sh: requires
# k8s.io/kubernetes at that release and replaces every staging module it lists at v0.0.0 with
# the matching v0.<minor>.<patch> tag (Go ignores a dependency's own replace directives), then
# resolves go.sum for the binaries build.sh builds. Run after changing K8S_VERSION.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
export GOTOOLCHAIN=local
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
staging="v0.${K8S_VERSION#v1.}"
cd "$here/k8s"
{
  echo "// Wrapper module: builds the real Kubernetes control plane from pinned modules."
  echo "// Regenerate with tests/cluster/gen-k8s-mod.sh; do not edit by hand."
  echo "module recur.dev/tests/cluster/k8s"
  echo
  grep '^go ' "$gomod"
  echo
  grep '^godebug' "$gomod" || true
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  grep -E '^\s+k8s.io/[a-z0-9-]+ v0.0.0$' "$gomod" | awk -v v="$staging" '{print "\t"$1" => "$1" "v}'
  echo ")"
} >go.mod
rm -f go.sum
go list -mod=mod -deps -tags selinux,notest k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3 >/dev/null
echo "regenerated $here/k8s/go.mod for $K8S_VERSION" >&2
