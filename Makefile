# multi-bridge: `sudo make demo` runs the seed demo in network namespaces,
# `sudo make test` runs every test. Both install what they need first.

# sudo resets PATH (secure_path), which on most machines drops Go's own
# directory: look there too, so `sudo make demo` works as the README says.
export PATH     := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO              ?= go
BIN             := $(CURDIR)/bin
CNI_BIN         := $(BIN)/cni
# Pinned versions of what tests and the demo run besides our own code.
PLUGINS_VERSION := v1.10.0
CNITOOL_VERSION := v1.3.1
VERSION         ?= $(shell hack/version.sh)
LDFLAGS         := -X main.Version=$(VERSION)

export GOFLAGS  := -buildvcs=false

.PHONY: all build deps ipam-plugins cnitool demo test test-unit test-integration vet fmt fuzz clean bench reference-plugins

all: build

build:
	@mkdir -p $(CNI_BIN)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(CNI_BIN)/multi-bridge ./cmd/multi-bridge
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/multi-bridge-agent ./cmd/multi-bridge-agent

deps:
	@hack/install-deps.sh

# The real IPAM plugins the tests and the demo drive, at a pinned version.
ipam-plugins: $(CNI_BIN)/.plugins-$(PLUGINS_VERSION)
$(CNI_BIN)/.plugins-$(PLUGINS_VERSION):
	@mkdir -p $(CNI_BIN)
	GOBIN=$(CNI_BIN) $(GO) install \
		github.com/containernetworking/plugins/plugins/ipam/host-local@$(PLUGINS_VERSION) \
		github.com/containernetworking/plugins/plugins/ipam/static@$(PLUGINS_VERSION)
	@touch $@

cnitool: $(BIN)/.cnitool-$(CNITOOL_VERSION)
$(BIN)/.cnitool-$(CNITOOL_VERSION):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)
	@touch $@

demo: deps build ipam-plugins cnitool
	test/demo/seed-demo.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run: make fmt"; exit 1; }

fmt:
	gofmt -w $$(git ls-files '*.go')

# Unit tests need no root; integration tests skip without it.
test-unit:
	$(GO) test ./pkg/... ./cmd/...

# The integration suite runs once per spec version; version-independent
# (heavy) tests run in the 1.1.0 pass only.
OLDER_CNI_VERSIONS := 1.0.0 0.4.0 0.3.1

test-integration: deps ipam-plugins cnitool
	$(GO) test -count=1 ./test/...
	@for v in $(OLDER_CNI_VERSIONS); do \
		echo "integration suite, cniVersion $$v"; \
		MULTI_BRIDGE_TEST_CNI_VERSION=$$v $(GO) test -count=1 ./test/integration/ || exit 1; \
	done

# Unit + integration + end-to-end: the e2e suite needs the kube-apiserver
# harness (see the node agent block below). CI runs this.
test: deps ipam-plugins cnitool vet
	$(GO) test -count=1 ./...
	@for v in $(OLDER_CNI_VERSIONS); do \
		echo "integration suite, cniVersion $$v"; \
		MULTI_BRIDGE_TEST_CNI_VERSION=$$v $(GO) test -count=1 ./test/integration/ || exit 1; \
	done
	$(MAKE) test-e2e

# Fuzz the configuration loader and the node policy for a few minutes each
# (FUZZTIME=...). A crasher lands in pkg/<package>/testdata/fuzz/<target>/;
# commit it and every `go test` replays it as a regression test.
FUZZTIME ?= 2m
fuzz:
	$(GO) test ./pkg/config -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/policy -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME)

clean:
	rm -rf $(BIN)

# ---------------------------------------------------------------------------
# Performance against the reference chain (BENCHMARKS.md): bridge + sbr
# (+ host-local) of containernetworking/plugins v1.10.0, in bin/reference,
# and cnitool v1.3.0 there too (the issue's measurements used it; the
# benchmark drives both through libcni). `sudo make bench` runs everything
# in throwaway namespaces and rewrites the results block of BENCHMARKS.md.
# Quick run: `sudo make bench BENCH_PODS=100 BENCH_PARALLEL=50 BENCH_SAMPLES=20`.
# Micro-benchmarks without root: `make bench-go`.
# ---------------------------------------------------------------------------
REFERENCE_BIN          := $(BIN)/reference
REFERENCE_CNITOOL      := v1.3.0
BENCH_PODS            ?= 1000
BENCH_PARALLEL        ?= 200
BENCH_SAMPLES         ?= 100
BENCH_PARALLEL_ROUNDS ?= 2
BENCH_OUT             ?= BENCHMARKS.md

reference-plugins: $(REFERENCE_BIN)/.reference-$(PLUGINS_VERSION)
$(REFERENCE_BIN)/.reference-$(PLUGINS_VERSION):
	@mkdir -p $(REFERENCE_BIN)
	GOBIN=$(REFERENCE_BIN) $(GO) install \
		github.com/containernetworking/plugins/plugins/main/bridge@$(PLUGINS_VERSION) \
		github.com/containernetworking/plugins/plugins/meta/sbr@$(PLUGINS_VERSION) \
		github.com/containernetworking/plugins/plugins/ipam/host-local@$(PLUGINS_VERSION)
	GOBIN=$(REFERENCE_BIN) $(GO) install github.com/containernetworking/cni/cnitool@$(REFERENCE_CNITOOL)
	@touch $@

bench: deps build ipam-plugins reference-plugins
	CGO_ENABLED=0 $(GO) build -o $(BIN)/bench ./test/bench
	$(BIN)/bench -plugin-dir $(CNI_BIN) -reference-dir $(REFERENCE_BIN) \
		-pods $(BENCH_PODS) -parallel $(BENCH_PARALLEL) -samples $(BENCH_SAMPLES) \
		-parallel-rounds $(BENCH_PARALLEL_ROUNDS) -out $(BENCH_OUT) -version '$(VERSION)' \
		-command 'sudo make bench BENCH_PODS=$(BENCH_PODS) BENCH_PARALLEL=$(BENCH_PARALLEL) BENCH_SAMPLES=$(BENCH_SAMPLES) BENCH_PARALLEL_ROUNDS=$(BENCH_PARALLEL_ROUNDS)'

.PHONY: bench-go
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/config ./pkg/rules

# The container image (images/Dockerfile): the agent and the plugin it
# installs. Needs a container engine; says so when there is none.
IMAGE     ?= ghcr.io/multi-bridge-cni/multi-bridge
IMAGE_TAG ?= $(subst +,-,$(VERSION))
.PHONY: image
image:
	@engine=""; \
	for e in docker podman; do \
		if command -v $$e >/dev/null 2>&1 && $$e info >/dev/null 2>&1; then engine=$$e; break; fi; \
	done; \
	if [ -z "$$engine" ]; then \
		echo "make image: no usable container engine (docker or podman with a running daemon/service) on this machine;" >&2; \
		echo "  install one, or build elsewhere: docker build -f images/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(IMAGE_TAG) ." >&2; \
		exit 1; \
	fi; \
	echo "$$engine build -f images/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(IMAGE_TAG) ."; \
	$$engine build -f images/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(IMAGE_TAG) .

# ---------------------------------------------------------------------------
# Node agent (many nodes): end-to-end tests, cluster demo and benchmark
# against a real kube-apiserver + etcd (hack/apiserver.sh). The first
# `hack/apiserver.sh build` compiles kube-apiserver (several minutes); later
# runs reuse bin/kube-apiserver.
# ---------------------------------------------------------------------------
.PHONY: deps-e2e kube-apiserver test-e2e demo-cluster bench-agent

deps-e2e:
	@hack/install-deps.sh e2e

kube-apiserver: deps-e2e
	hack/apiserver.sh build

test-e2e: deps-e2e kube-apiserver build ipam-plugins
	MULTI_BRIDGE_E2E=1 $(GO) test -count=1 -timeout 20m ./test/e2e/...

# The seed's cluster demo with the agent: three nodes, a pod on each,
# routes, rules and pings printed; everything removed afterwards.
demo-cluster: deps-e2e kube-apiserver build ipam-plugins
	bash -o pipefail -c "MULTI_BRIDGE_E2E=1 MULTI_BRIDGE_DEMO=1 $(GO) test -count=1 -timeout 10m -run '^TestCluster$$' -v ./test/e2e/ | grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS$$' -e '^ok '"

# Route convergence for 1,000 Nodes x 3 networks (not a timed test: prints
# numbers). NODES=... overrides the node count.
bench-agent: deps-e2e kube-apiserver build
	MULTI_BRIDGE_E2E=1 MULTI_BRIDGE_BENCH_NODES=$${NODES:-1000} $(GO) test -count=1 -timeout 30m -run '^$$' -bench BenchmarkRouteConvergence -benchtime 1x -v ./test/e2e/
