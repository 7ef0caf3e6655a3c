// Wrapper module: builds helm from a pinned release. helm has no replace directives.
module recur.dev/tests/cluster/helm

go 1.26.0

require helm.sh/helm/v3 v3.21.4
