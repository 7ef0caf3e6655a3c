// Wrapper module: builds the CNI plugins of the local node (bridge, host-local, loopback, portmap).
// The version is CNI_PLUGINS_VERSION in versions.sh; change both together.
module recur.dev/tests/cluster/cni

go 1.26.8

require github.com/containernetworking/plugins v1.10.0
