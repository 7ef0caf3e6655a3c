# syntax=docker/dockerfile:1
# The recur operator image: a static (musl) binary on distroless, running as user 65532.
#
#   docker build -t ghcr.io/recur-dev/recur:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/recur-dev/recur:0.1.0 .
#
# The Helm chart (charts/recur) runs it as `recur run ...` with runAsUser 65532 and a read-only
# root filesystem; the binary writes no files. The kubectl plugin ships beside it as
# /kubectl-recur, for copying out of the image onto a PATH (`kubectl recur ...` on a workstation).

FROM rust:1-bookworm AS builder
# musl-tools: ring (rustls' crypto) and jemalloc compile C code, which needs musl-gcc for a musl
# target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# The build runs on the image's platform (emulated for a foreign --platform), so the native
# architecture picks the musl target.
RUN case "$(uname -m)" in \
      x86_64) echo x86_64-unknown-linux-musl ;; \
      aarch64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# Only what the build reads (see .dockerignore): the workspace's crates/ must exist for Cargo
# to load it, though only recur (both its binaries, recur and kubectl-recur) and recur-schedule
# are compiled.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# jemalloc (the binaries' allocator) takes the page size it is built for as its smallest: on
# arm64 that is 64 KiB, so one image runs on 4 KiB and 64 KiB page kernels alike.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && if [ "$target" = aarch64-unknown-linux-musl ]; then export JEMALLOC_SYS_WITH_LG_PAGE=16; fi \
 && cargo build --release --locked -p recur --bin recur --bin kubectl-recur --target "$target" \
 && install -D -m 0755 "target/$target/release/recur" /out/recur \
 && install -D -m 0755 "target/$target/release/kubectl-recur" /out/kubectl-recur

# distroless/static: CA certificates and time zone data, no shell, no libc; :nonroot is uid/gid
# 65532 (the binary carries its own IANA zone database through chrono-tz anyway).
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="recur" \
      org.opencontainers.image.description="Kubernetes operator for recurring tasks and reminders, delivered through Dapr" \
      org.opencontainers.image.source="https://github.com/recur-dev/recur" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/recur /recur
COPY --from=builder /out/kubectl-recur /kubectl-recur
USER 65532:65532
# Probes and metrics (/health/live, /health/ready, /metrics).
EXPOSE 8080
ENTRYPOINT ["/recur"]
CMD ["run"]
