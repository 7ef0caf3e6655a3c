// Wrapper module: builds containerd (daemon, ctr, containerd-shim-runc-v2) for the local node
// (tests/cluster/node.sh). The version is CONTAINERD_VERSION in versions.sh; change both together.
module recur.dev/tests/cluster/containerd

go 1.26.6

require github.com/containerd/containerd/v2 v2.4.2
