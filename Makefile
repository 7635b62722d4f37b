# GuildNet — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GUILDNET_DIR   := $(CURDIR)/.guildnet
BIN            := $(GUILDNET_DIR)/bin
K8S_VERSION    := v1.37.2
export GOTOOLCHAIN := local
export GOFLAGS     := -mod=mod -buildvcs=false

# Version stamp so /version and `kubectl version` tell the truth about what we built.
K8S_LDFLAGS := -s -w \
  -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=37 \
  -X k8s.io/component-base/version.gitTreeState=clean \
  -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z
K8S_COMPONENTS := kube-apiserver kube-controller-manager kube-scheduler kubectl etcd

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install what the build needs on a fresh machine (Debian packages, Rust components)
	@scripts/install-deps.sh

# ---- the local control plane -------------------------------------------------------------

.PHONY: cluster-bin
cluster-bin: ## Build kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and KWOK
	@mkdir -p $(BIN)
	cd e2e/testcluster && go build -ldflags '$(K8S_LDFLAGS)' -o $(BIN)/kube ./cmd/kube
	@for c in $(K8S_COMPONENTS); do ln -sf kube $(BIN)/$$c; done
	cd e2e/testcluster/kwok && go build -ldflags '-s -w' -o $(BIN)/kwok sigs.k8s.io/kwok/cmd/kwok
	@scripts/kwok-stages.sh > $(BIN)/kwok-stages.yaml

.PHONY: cluster-up
cluster-up: cluster-bin ## Start the local control plane in the background (KUBECONFIG=.guildnet/kubeconfig)
	@$(BIN)/kube cluster up --dir $(GUILDNET_DIR)

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its state
	@if [ -x $(BIN)/kube ]; then $(BIN)/kube cluster down --dir $(GUILDNET_DIR); fi

# ---- Rust ---------------------------------------------------------------------------------

.PHONY: build
build: ## Build the operator, webhook and proxy
	cargo build --workspace --bins

.PHONY: crds
crds: ## Regenerate crds/ and docs/crd-reference.md from the API types
	cargo run -q -p guildnet-operator --bin crdgen -- crds docs/crd-reference.md

.PHONY: fmt
fmt: ## Format Rust and Go sources
	cargo fmt --all
	cd e2e/testcluster && gofmt -w cmd
	gofmt -w e2e/kstatus

.PHONY: lint
lint: ## cargo fmt --check, clippy and rustdoc with warnings denied, the crate graph, gofmt, go vet
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items -q
	scripts/check-crate-graph.sh
	@test -z "$$(cd e2e/testcluster && gofmt -l cmd)" || { echo "gofmt: run make fmt"; exit 1; }
	cd e2e/testcluster && go vet ./...
	@test -z "$$(gofmt -l e2e/kstatus)" || { echo "gofmt: run make fmt"; exit 1; }
	cd e2e/kstatus && go vet ./...

.PHONY: unit
unit: ## Unit tests (no cluster needed)
	cargo test --workspace --exclude guildnet-e2e

.PHONY: e2e
e2e: cluster-bin helm-bin build ## End-to-end tests against control planes started (and stopped) for them, real IDEs included
	@main=0; scripts/e2e.sh || main=$$?; ides=0; scripts/e2e-ides.sh || ides=$$?; \
	  walk=0; scripts/walkthrough.sh || walk=$$?; \
	  [ $$main -eq 0 ] && [ $$ides -eq 0 ] && [ $$walk -eq 0 ] || \
	  { echo "e2e failed: main suite exit $$main, real-IDE suite exit $$ides, README walk-through exit $$walk"; exit 1; }

.PHONY: bench
bench: cluster-bin build ## Run the benchmarks and write docs/benchmarks.md
	@scripts/bench.sh

.PHONY: test
test: deps lint unit e2e ## All tests: lint, unit, end-to-end

.PHONY: fuzz
fuzz: ## Property tests over untrusted input with many cases (FUZZ_CASES, FUZZ_SECONDS); updates docs/benchmarks.md
	@scripts/fuzz.sh

# ---- running GuildNet ----------------------------------------------------------------------

.PHONY: real-ides
real-ides: deps ## Install code-server (npm) and JupyterLab (PyPI), as e2e/ides pins them, into .guildnet/ides
	@scripts/install-ides.sh

.PHONY: dev
dev: deps build cluster-bin ## Build, start the control plane, install CRDs, run GuildNet in the foreground
	@scripts/dev.sh run

.PHONY: dev-up
dev-up: deps build cluster-bin ## The same stack as `make dev`, in the background
	@scripts/dev.sh up

.PHONY: dev-down
dev-down: ## Stop what `make dev-up` started (and the control plane it started)
	@scripts/dev.sh down

# ---- packaging -----------------------------------------------------------------------------

HELM_VERSION := v3.22.0
HELM_LDFLAGS := -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37 \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37
IMAGE ?= ghcr.io/guildnet/guildnet:dev
CONTAINER_ENGINE ?= $(shell command -v podman || command -v docker)

.PHONY: helm-bin
helm-bin: ## Build helm (from the Go module proxy, like the control plane) into .guildnet/bin
	@mkdir -p $(BIN)
	cd e2e/testcluster/helm && go build -ldflags '$(HELM_LDFLAGS)' -o $(BIN)/helm helm.sh/helm/v3/cmd/helm

.PHONY: chart-crds
chart-crds: ## Copy crds/ and the starter Capabilities into the Helm chart (an e2e test fails when stale)
	rm -f charts/guildnet/crds/*.yaml && cp crds/*.yaml charts/guildnet/crds/
	cp webhook/config/starter-capabilities.yaml charts/guildnet/files/

.PHONY: kustomize-base
kustomize-base: chart-crds helm-bin ## Regenerate kustomize/base from the chart's defaults (an e2e test fails when stale)
	@scripts/kustomize-base.sh

.PHONY: image
image: ## Build the container image (operator, webhook, proxy) with podman or docker: IMAGE=... to name it
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image needs podman or docker"; exit 1; }
	$(CONTAINER_ENGINE) build -t $(IMAGE) .
