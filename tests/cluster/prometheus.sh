#!/usr/bin/env bash
# Builds a Prometheus binary (promtool or the server, prometheus) from the pinned Prometheus Go
# module (tests/cluster/prometheus/go.mod) into the tool cache, keyed by its version, like the
# control plane (tests/cluster/build.sh); a second run builds nothing. Prints the binary's path.
#
#   tests/cluster/prometheus.sh promtool     # tests/alerts/check.sh: checks and unit-tests the alerts
#   tests/cluster/prometheus.sh prometheus   # scripts/observability.sh: scrapes a real run
#
# Both are built with the `remove_all_sd` tag: without Prometheus' service discovery plugins (AWS,
# Azure, GCE, Kubernetes, ...). promtool needs them only for `promtool check config` of scrape
# configs and our server scrapes one static target; it halves the build. The server is built
# without `builtinassets`: no web UI, the HTTP API (/api/v1/...) is all it serves that we use.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[prometheus] %s\n' "$*" >&2; }

name=${1:-}
case "$name" in
  promtool | prometheus) ;;
  *) log "usage: $0 promtool|prometheus"; exit 2 ;;
esac

mod="$here/prometheus"
version=$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" { print $3 }
               $1 == "github.com/prometheus/prometheus" { print $2 }' "$mod/go.mod" | head -n1)
[ -n "$version" ] || { log "no github.com/prometheus/prometheus in $mod/go.mod"; exit 1; }
cache=${RECUR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/recur}
pbin="$cache/bin/prometheus-$version"
out="$pbin/$name"
if [ ! -x "$out" ]; then
  mkdir -p "$pbin"
  # The Go module v0.3XX.Y is Prometheus 3.XX.Y.
  release=${version#v0.}
  release="3.${release:1}"
  flags="-s -w -X github.com/prometheus/common/version.Version=$release"
  flags+=" -X github.com/prometheus/common/version.Branch=HEAD"
  flags+=" -X github.com/prometheus/common/version.Revision=recur-pinned-$version"
  log "building $name $version (Prometheus $release) ..."
  start=$SECONDS
  (
    cd "$mod"
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
    go build -trimpath -tags remove_all_sd -ldflags "$flags" -o "$out.tmp.$$" \
      "github.com/prometheus/prometheus/cmd/$name" >&2
  )
  # A concurrent build of the same binary may have won: either result is the same program.
  mv "$out.tmp.$$" "$out"
  log "built $name in $((SECONDS - start))s"
fi
printf '%s\n' "$out"
