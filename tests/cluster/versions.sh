# Pinned versions of everything the local control plane is built from. The Go wrapper modules
# (k8s/, helm/, dapr/, dapr-cp/) pin the same versions in their go.mod; change both together.
K8S_VERSION=v1.37.2
HELM_VERSION=v3.21.4
# The commit HELM_VERSION is tagged on (helm `version` shows it, as in a release build).
HELM_COMMIT=813176c51bb5c181dbbd7901298ddcc104cd3417
DAPR_VERSION=v1.16.5
# The OpenTelemetry Collector of the trace tests (otelcol/go.mod pins it): contrib v0.161.0
# (fileexporter) with core collector v0.161.0 / v1.67.0, all of one release.
OTELCOL_VERSION=v0.161.0
# The node of tests/cluster/node.sh (built by `RECUR_NODE=1 tests/cluster/build.sh`): kubelet,
# kube-proxy and kube-scheduler come from K8S_VERSION (k8s/go.mod); these from their own wrapper
# modules containerd/, runc/ and cni/, whose go.mod pins the same versions.
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
CNI_PLUGINS_VERSION=v1.10.0
# CoreDNS of the node (coredns/go.mod pins it).
COREDNS_VERSION=v1.15.0
