// The two programs of the node's own images (tests/cluster/build.sh packs each into an OCI image
// with oci-image.py): the pod sandbox's pause and the HTTP hello server of the node checks.
// Standard library only.
module recur.dev/tests/cluster/images

go 1.26.0
