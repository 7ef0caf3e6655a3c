# Pinned versions of everything the local control plane is built from. The Go wrapper modules
# (k8s/, helm/, dapr/) pin the same versions in their go.mod; change both together.
K8S_VERSION=v1.37.2
HELM_VERSION=v3.21.4
DAPR_VERSION=v1.16.5
