// Wrapper module: builds runc (cgo, seccomp through Debian's libseccomp-dev) for the local node.
// The version is RUNC_VERSION in versions.sh; change both together.
module recur.dev/tests/cluster/runc

go 1.25.0

require github.com/opencontainers/runc v1.5.3
