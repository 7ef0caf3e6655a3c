# Developer entry points for recur. `make help` lists the targets.
#
# The local control plane (etcd, kube-apiserver, kube-controller-manager, kubectl, helm) is built
# from pinned Go modules by tests/cluster/build.sh into a cache directory; the first build takes
# minutes, later ones nothing.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

BUILD_TOOLS := tests/cluster/build.sh
CLUSTER_DIR := $(CURDIR)/.cluster
# Bin directory of the pinned tools, as printed by build.sh (which builds what is missing first).
# Recursively expanded on purpose: only recipes that use it trigger a build.
# NODE=1 (make cluster NODE=1) also builds the node of tests/cluster/node.sh.
BIN_DIR = $(shell $(if $(filter 1,$(NODE)),RECUR_NODE=1 )$(BUILD_TOOLS))
# Recipe prologue: `bin` = BIN_DIR, checked (make ignores the exit status of $(shell ...)).
need_bin = bin='$(BIN_DIR)'; [ -x "$$bin/kube-apiserver" ] || { echo "make: $(BUILD_TOOLS) did not produce the tools (see above)" >&2; exit 1; }

.PHONY: help demo tools cluster cluster-down test lint crds chaos bench observability images

help: ## list the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

demo: ## the main job on a local default: control plane, Dapr sidecars, demo backend, recur, examples/ (Ctrl-C stops); NODE=1: on a real node, Dapr and recur from their Helm charts (root)
	@$(if $(filter 1,$(NODE)),scripts/demo-node.sh,scripts/demo.sh)

crds: ## regenerate crds/ and charts/recur/crds/ from the Rust types
	@cargo run --quiet -p recur --bin recur -- crd --out-dir crds
	cp crds/*.yaml charts/recur/crds/

tools: ## build the pinned control-plane tools (cached; NODE=1 also the node's); prints their bin directory
	@$(if $(filter 1,$(NODE)),RECUR_NODE=1 )$(BUILD_TOOLS)

cluster: ## start a control plane in .cluster/ (a stale one is torn down first), with NODE=1 also a node that runs pods (root); prints export KUBECONFIG=...
	@$(need_bin)
	if [ -e '$(CLUSTER_DIR)' ]; then tests/cluster/down.sh '$(CLUSTER_DIR)'; fi
	RECUR_BIN_DIR="$$bin" tests/cluster/up.sh $(if $(filter 1,$(NODE)),--node )'$(CLUSTER_DIR)'
	if [ '$(NODE)' = 1 ]; then
	  RECUR_BIN_DIR="$$bin" tests/cluster/node.sh '$(CLUSTER_DIR)' >/dev/null || { tests/cluster/down.sh '$(CLUSTER_DIR)'; exit 1; }
	fi

images: ## OCI images recur.test/recur:VERSION and recur.test/recur-dev:VERSION (static binaries, no Docker) in target/images/; NODE=1 also loads them into the node of .cluster/ (root); LIBC=musl as the Dockerfile links
	@scripts/images.sh $(if $(LIBC),--libc '$(LIBC)') $(if $(filter 1,$(NODE)),--import '$(CLUSTER_DIR)')

cluster-down: ## stop the control plane (and its node) in .cluster/ and remove the directory
	@tests/cluster/down.sh '$(CLUSTER_DIR)'

# The tools of make test include the node (tests/node.rs starts one; RECUR_NODE=0 skips that test).
test: NODE = 1
test: ## build the tools, start a throwaway control plane, run cargo test --workspace --all-targets against it, tear it down
	@$(need_bin)
	# The tests run recur-dev, another package's binary: cargo test builds only recur's.
	cargo build --workspace --bins
	# tests/node.rs runs recur's chart on the node with the images of this checkout.
	if [ "$${RECUR_NODE:-1}" != 0 ]; then scripts/images.sh; fi
	dir=$$(mktemp -d "$${TMPDIR:-/tmp}/recur-cluster.XXXX")
	trap 'tests/cluster/down.sh "$$dir"' EXIT
	# --watch-parent: the cluster also goes when this shell is killed before its trap can run.
	RECUR_BIN_DIR="$$bin" tests/cluster/up.sh --watch-parent $$$$ "$$dir" >/dev/null
	export KUBECONFIG="$$dir/kubeconfig" RECUR_BIN_DIR="$$bin" PATH="$$bin:$$PATH"
	status=0
	cargo test --workspace --all-targets --no-fail-fast || status=$$?
	exit $$status

chaos: ## the long fault-injection run (50 SIGKILLs, minutes of backend faults, leader kills, apiserver restarts) on its own control plane
	@$(need_bin)
	cargo build --workspace --bins
	dir=$$(mktemp -d "$${TMPDIR:-/tmp}/recur-chaos.XXXX")
	trap 'tests/cluster/down.sh "$$dir"' EXIT
	RECUR_BIN_DIR="$$bin" tests/cluster/up.sh --watch-parent $$$$ "$$dir" >/dev/null
	export KUBECONFIG="$$dir/kubeconfig" RECUR_BIN_DIR="$$bin" PATH="$$bin:$$PATH" RECUR_CHAOS=long
	cargo test --test chaos -- --nocapture --test-threads=1 2>&1 | tee target/chaos-long.log | grep -E '^chaos |test result|panicked'

lint: ## cargo fmt --check and cargo clippy with warnings denied (and shellcheck when installed)
	@cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	if command -v shellcheck >/dev/null; then
	  shellcheck -x -P SCRIPTDIR -S warning $(filter-out %/versions.sh,$(wildcard tests/cluster/*.sh)) $(wildcard scripts/*.sh tests/alerts/*.sh) .ci/run
	else
	  echo "shellcheck is not installed: shell scripts not checked (apt-get install shellcheck)" >&2
	fi

bench: ## the scale benchmark on a local control plane (heavy; BENCH_FLAGS='--tasks 10000 --idle 300', or '--fairness' for fairness between namespaces alone): prints a table, writes target/bench/ and docs/bench/
	@scripts/bench.sh $(BENCH_FLAGS)

observability: ## a real run scraped by a real Prometheus (pinned module), every dashboard panel's query drawn into docs/observability/ (OBS_FLAGS='--minutes 3')
	@scripts/observability.sh $(OBS_FLAGS)
