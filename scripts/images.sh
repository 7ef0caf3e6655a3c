#!/usr/bin/env bash
# `make images`: the OCI images of recur and of the test backend, built without Docker, as OCI
# archives in target/images/ (what `ctr images import` reads):
#
#   recur.test/recur:VERSION      /recur (entrypoint, Cmd ["run"]), /kubectl-recur beside it
#   recur.test/recur-dev:VERSION  /recur-dev (entrypoint; `recur-dev backend --listen ...`)
#
# VERSION is Cargo.toml's package version. The .test domain is reserved (RFC 2606), so these
# names can never be mistaken for, or pulled from, a real registry (as recur.test/pause:1).
#
#   scripts/images.sh                  build both images; prints `NAME DIGEST SIZE ARCHIVE` per image
#   scripts/images.sh --import DIR     build, then load them into the containerd of the node that
#                                      tests/cluster/node.sh started for DIR (needs root)
#   scripts/images.sh --no-build ...   use the binaries of the last build as they are
#   scripts/images.sh --libc musl ...  link against musl (the Dockerfile's way) instead of glibc
#
# The layout is the Dockerfile's final stage (gcr.io/distroless/static-debian12:nonroot): user
# 65532:65532, the binaries at /, and besides them only what distroless/static would give this
# binary: /etc/passwd and /etc/group with root and nonroot (65532), /etc/nsswitch.conf
# (hosts: files dns) and the CA bundle /etc/ssl/certs/ca-certificates.crt made from Debian's
# ca-certificates package. No shell, no libc, no tzdata (chrono-tz embeds the zones).
#
# Static binaries: by default for the gnu target with `-C target-feature=+crt-static` (static-pie
# against glibc's libc.a), which needs nothing beyond the preinstalled toolchain and Debian's
# libc6-dev; --libc musl builds for x86_64-unknown-linux-musl as the Dockerfile does (needs
# `rustup target add x86_64-unknown-linux-musl` and Debian's musl-tools for ring's C code). getaddrinfo still resolves from /etc/hosts and through the DNS servers of
# /etc/resolv.conf: since glibc 2.34 nss_files and nss_dns are inside libc itself, so a static
# binary needs no libnss_*.so at run time (checked in a chroot of the image's files). Other NSS
# modules (nss_systemd, nss_mdns, ...) would need dlopen and do not work; a pod needs none.
# Builds go to target/static (their own target directory: other RUSTFLAGS would otherwise evict
# the ordinary target/release). --remap-path-prefix keeps the checkout's and Cargo's paths out
# of the binaries, so the same sources and toolchain give the same image digests in any checkout.
# Environment: RECUR_BIN_DIR (for --import: the node's tools, else RECUR_NODE=1 build.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { printf '[images] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
usage() { sed -n '2,15s/^# \{0,1\}//p' "$0" >&2; }

import="" build=1 libc=gnu
while [ $# -gt 0 ]; do
  case $1 in
    --import) import=${2:?--import needs the cluster directory}; shift 2 ;;
    --no-build) build=0; shift ;;
    --libc) libc=${2:?--libc needs gnu or musl}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument $1" ;;
  esac
done
if [ -n "$import" ]; then
  [ "$(id -u)" = 0 ] || die "--import needs root (the node's containerd socket)"
  sock="$import/node/containerd/containerd.sock"
  [ -S "$sock" ] || die "$sock is not a socket: is a node running for $import (make cluster NODE=1)?"
fi

[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (oci-image.py writes amd64 images)"
case $libc in
  gnu) rust_target=x86_64-unknown-linux-gnu static_flag="-C target-feature=+crt-static" ;;
  musl)
    rust_target=x86_64-unknown-linux-musl static_flag="" # static is musl's default
    if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$rust_target/lib" ]; then
      die "the $rust_target standard library is not installed (rustup target add $rust_target)"
    fi
    command -v musl-gcc >/dev/null || die "musl-gcc is missing (apt-get install musl-tools)"
    ;;
  *) die "--libc $libc: expected gnu or musl" ;;
esac
readonly rust_target static_flag
out=$repo/target/images
export CARGO_TARGET_DIR=$repo/target/static
rel=$CARGO_TARGET_DIR/$rust_target/release
mkdir -p "$out"

version=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "recur"))')
[ -n "$version" ] || die "no version of package recur in cargo metadata"

if [ "$build" = 1 ]; then
  t0=$SECONDS
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  export RUSTFLAGS="$static_flag --remap-path-prefix=$repo=/src --remap-path-prefix=$cargo_home=/cargo"
  # --target: RUSTFLAGS then apply to the target's code only, not to build scripts and proc macros.
  log "building recur and kubectl-recur (release, static, $rust_target)"
  # As the Dockerfile builds them; recur-dev apart, so its features do not change recur's binary.
  cargo build --release --locked -p recur --bin recur --bin kubectl-recur --target "$rust_target"
  log "building recur-dev (release, static, $rust_target)"
  cargo build --release --locked -p recur-dev --bin recur-dev --target "$rust_target"
  log "built in $((SECONDS - t0)) s"
fi

# A static binary has no program interpreter and needs no shared library.
for b in recur kubectl-recur recur-dev; do
  [ -x "$rel/$b" ] || die "$rel/$b is missing (run without --no-build)"
  if readelf -lW "$rel/$b" | grep 'Requesting program interpreter' >/dev/null || readelf -dW "$rel/$b" | grep '(NEEDED)' >/dev/null; then
    die "$rel/$b is not static: $(file -b "$rel/$b")"
  fi
done

files=$(mktemp -d "${TMPDIR:-/tmp}/recur-images.XXXX")
trap 'rm -rf "$files"' EXIT
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >"$files/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$files/group"
printf '%s\n' 'hosts: files dns' >"$files/nsswitch.conf"
# The CA bundle: the certificates of Debian's ca-certificates package, in name order (what
# update-ca-certificates concatenates, without the machine's own additions or removals).
if certs=$(dpkg -L ca-certificates 2>/dev/null | grep '^/usr/share/ca-certificates/.*\.crt$' | LC_ALL=C sort) && [ -n "$certs" ]; then
  # awk 1: each file whole, with a final newline even if it lacks one.
  while IFS= read -r crt; do awk 1 "$crt"; done <<<"$certs" >"$files/ca-certificates.crt"
  ca_from="ca-certificates $(dpkg-query -W -f '${Version}' ca-certificates) ($(grep -c 'BEGIN CERTIFICATE' "$files/ca-certificates.crt") certificates)"
else
  die "Debian's ca-certificates package is not installed (apt-get install ca-certificates)"
fi
chmod 0644 "$files"/*
common=(--user 65532:65532 --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  "$files/passwd:/etc/passwd" "$files/group:/etc/group" "$files/nsswitch.conf:/etc/nsswitch.conf"
  "$files/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt")
oci=tests/cluster/images/oci-image.py

# The Dockerfile's LABELs, ENTRYPOINT, CMD and EXPOSE.
recur_digest=$("$oci" --name "recur.test/recur:$version" --out "$out/recur.tar" \
  --entrypoint /recur --cmd run --expose 8080 \
  --label org.opencontainers.image.title=recur \
  --label "org.opencontainers.image.description=Kubernetes operator for recurring tasks and reminders, delivered through Dapr" \
  --label org.opencontainers.image.source=https://github.com/recur-dev/recur \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label "org.opencontainers.image.version=$version" --label "dev.recur.libc=$libc" \
  "${common[@]}" "$rel/recur:/recur" "$rel/kubectl-recur:/kubectl-recur")
dev_digest=$("$oci" --name "recur.test/recur-dev:$version" --out "$out/recur-dev.tar" \
  --entrypoint /recur-dev \
  --label org.opencontainers.image.title=recur-dev \
  --label "org.opencontainers.image.version=$version" --label "dev.recur.libc=$libc" \
  "${common[@]}" "$rel/recur-dev:/recur-dev")
log "CA bundle from $ca_from"
{
  echo "recur.test/recur:$version $recur_digest $(stat -c %s "$out/recur.tar") $out/recur.tar"
  echo "recur.test/recur-dev:$version $dev_digest $(stat -c %s "$out/recur-dev.tar") $out/recur-dev.tar"
} | tee "$out/images.txt"

if [ -n "$import" ]; then
  bin=${RECUR_BIN_DIR:-$(RECUR_NODE=1 tests/cluster/build.sh)}
  [ -x "$bin/ctr" ] || die "$bin/ctr is missing (RECUR_NODE=1 tests/cluster/build.sh builds it)"
  ctr_() { "$bin/ctr" --address "$sock" --namespace k8s.io "$@"; }
  for image in recur recur-dev; do
    ctr_ images import "$out/$image.tar" >&2 || die "ctr images import $out/$image.tar failed"
  done
  # The digests containerd now holds under the names must be the ones just built.
  listed=$(ctr_ images ls 2>/dev/null)
  for pair in "recur.test/recur:$version $recur_digest" "recur.test/recur-dev:$version $dev_digest"; do
    grep -q "^${pair%% *} .* ${pair##* } " <<<"$listed" || die "containerd does not list ${pair%% *} as ${pair##* } after the import"
  done
  log "imported into the node's containerd of $import (namespace k8s.io)"
fi
