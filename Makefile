# certpilot — run `make help` for the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
export GOTOOLCHAIN ?= local
export GOFLAGS ?= -buildvcs=false

BIN := $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
# envtest finds kube-apiserver, etcd and kubectl here (built by hack/build-test-binaries.sh).
export KUBEBUILDER_ASSETS := $(BIN)/k8s

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Development

$(CONTROLLER_GEN):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(BIN)/controller-gen $(CONTROLLER_GEN)

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC into config/ (and the chart's CRDs).
	$(CONTROLLER_GEN) crd rbac:roleName=certpilot-manager paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@mkdir -p charts/certpilot/crds
	cp config/crd/bases/*.yaml charts/certpilot/crds/
	cp config/rbac/role.yaml charts/certpilot/files/manager-role.yaml

.PHONY: fmt
fmt: ## Format the Go code.
	$(GO) fmt ./...

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: fmt vet ## Check formatting and vet (fails when gofmt would change a file).
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

.PHONY: verify
verify: generate manifests ## Fail when generated files (or go.mod) are stale or the tree is dirty after generation.
	$(GO) mod tidy -diff
	@if [ -n "$$(git status --porcelain -- api config charts)" ]; then \
		echo "generated files are stale; run 'make generate manifests' and commit:"; \
		git status --porcelain -- api config charts; git --no-pager diff --stat -- api config charts; exit 1; fi

##@ Test

.PHONY: test-binaries
test-binaries: ## Build kube-apiserver, etcd, kubectl and Pebble from pinned versions into bin/ (cached).
	bash hack/build-test-binaries.sh all

.PHONY: test-deps
test-deps: ## Install BIND 9, openssl, containerd, runc, the CNI plugins, iptables and conntrack from Debian's packages when missing (as root or with sudo).
	bash hack/install-test-deps.sh

.PHONY: test
.PHONY: check-node
check-node: ## Stop with one line when this machine cannot run the single-node cluster (root, cgroups, bridge, iptables).
	@bash hack/check-node.sh

test: test-deps check-node test-binaries ## Run every test on real parts (envtest, Pebble, BIND, a single-node cluster); builds or installs each part first.
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

# The reliability suite (test/reliability): crashes, a second replica, a flaky CA, a flaky API,
# hostile input. Its quick part (one round) runs in `make test`; this runs RELIABILITY_ROUNDS.
RELIABILITY_ROUNDS ?= 3
.PHONY: test-reliability
test-reliability: test-deps test-binaries ## Run the reliability suite with RELIABILITY_ROUNDS rounds (default 3; bounded, loopback only); FIGURE lines are the figures in docs/reliability.md.
	RELIABILITY_ROUNDS=$(RELIABILITY_ROUNDS) $(GO) test -count=1 -v -timeout 60m ./test/reliability/

.PHONY: test-short
test-short: ## Run only the tests that need no real parts.
	$(GO) test -short ./...

# Fuzzing: every Fuzz target in a *_fuzz_test.go file, each for FUZZTIME, one after another.
FUZZTIME ?= 20s
FUZZPARALLEL ?= 1
FUZZ_PACKAGES = $(sort $(patsubst %/,%,$(dir $(shell find . -name '*_fuzz_test.go' -not -path './bin/*'))))
.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 20s); new failing inputs land in the package's testdata/fuzz.
	@for pkg in $(FUZZ_PACKAGES); do \
		for target in $$($(GO) test -short -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "--- fuzz $$pkg $$target for $(FUZZTIME)"; \
			$(GO) test -short -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s \
				-parallel $(FUZZPARALLEL) $$pkg; \
		done; \
	done

.PHONY: test-e2e
test-e2e: test-deps test-binaries ## Run the end-to-end tests only.
	$(GO) test -count=1 -timeout 30m ./test/e2e/...

# The renewal simulator at full size: SIM_CERTIFICATES per lifetime (90, 45 and 6 days) for
# SIM_DAYS simulated days. `go test ./...` runs it smaller (test/sim's flag defaults).
SIM_CERTIFICATES ?= 100
SIM_DAYS ?= 730
SIM_WORKERS ?= 8
.PHONY: test-sim
test-sim: test-binaries ## Run the renewal simulator: SIM_CERTIFICATES (100) per lifetime for SIM_DAYS (730) days, printing its figures.
	$(GO) test -count=1 -timeout 12h -run TestRenewalSimulator -v ./test/sim \
		-args -sim.certificates=$(SIM_CERTIFICATES) -sim.days=$(SIM_DAYS) -sim.workers=$(SIM_WORKERS)

.PHONY: helm-lint
helm-lint: ## Lint and render the Helm chart with helm's Go packages (pinned in go.mod); no cluster needed.
	$(GO) test -count=1 -short -run '^TestChart' ./test/install

# make bench: issuance at scale against the floor (test/bench, docs/benchmarks.md). Override on
# the command line, e.g. make bench BENCH_N=1000, or BENCH_SOLVER=dns-01 BENCH_KEY=rsa2048
# BENCH_N=100, or BENCH_N=10000 BENCH_ALWAYS_VALID=1 BENCH_IDLE=5m. More knobs (BENCH_FLOOR,
# BENCH_CONCURRENCY, BENCH_MANAGER_ARGS, BENCH_TIMEOUT, BENCH_RECORD, BENCH_NOTE) are read from
# the environment as well; docs/benchmarks.md lists them.
BENCH_N ?= 200
BENCH_SOLVER ?= tls-alpn-01
BENCH_KEY ?= ecdsa
BENCH_NAMES ?= 1
BENCH_ALWAYS_VALID ?= 0
BENCH_IDLE ?= 1m
export BENCH_N BENCH_SOLVER BENCH_KEY BENCH_NAMES BENCH_ALWAYS_VALID BENCH_IDLE

.PHONY: bench
bench: test-deps test-binaries ## Benchmark issuance of BENCH_N Certificates against a bare ACME client (appends to docs/benchmarks.md).
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkIssuance$$' -benchtime 1x -timeout 6h ./test/bench/

.PHONY: bench-go
bench-go: test-deps test-binaries ## Run the Go micro-benchmarks and the manager memory benchmark (everything but make bench).
	$(GO) test -run '^$$' -bench . -benchmem -count 6 $$($(GO) list ./... | grep -v /test/bench)

.PHONY: bench-edge
bench-edge: ## Benchmark the edge against nginx over loopback with wrk (installs nginx and wrk with apt-get when missing).
	bash hack/bench-edge.sh

##@ Build

.PHONY: build
build: ## Build the manager, the edge and the kubectl plugin into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/manager .
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/edge ./cmd/edge
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/kubectl-certpilot ./cmd/kubectl-certpilot

.PHONY: plugin
plugin: ## Build the kubectl plugin into bin/; with bin/ on PATH, `kubectl certpilot ls` runs it.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/kubectl-certpilot ./cmd/kubectl-certpilot

.PHONY: demo
demo: test-binaries ## Run a local control plane and Pebble and issue a real certificate end to end.
	$(GO) run ./hack/demo

LOCAL_DIR := $(BIN)/local
.PHONY: local-up
local-up: test-binaries ## Start the demo environment in the background; writes bin/local/{kubeconfig,env}.
	@mkdir -p $(LOCAL_DIR)
	@if [ -f $(LOCAL_DIR)/pid ] && kill -0 $$(cat $(LOCAL_DIR)/pid) 2>/dev/null; then \
		echo "already up (pid $$(cat $(LOCAL_DIR)/pid)); source $(LOCAL_DIR)/env"; exit 0; fi
	rm -f $(LOCAL_DIR)/env
	$(GO) build -o $(LOCAL_DIR)/demo ./hack/demo
	nohup $(LOCAL_DIR)/demo --keep --state-dir $(LOCAL_DIR) > $(LOCAL_DIR)/log 2>&1 & echo $$! > $(LOCAL_DIR)/pid
	@for i in $$(seq 1 240); do [ -f $(LOCAL_DIR)/env ] && break; \
		kill -0 $$(cat $(LOCAL_DIR)/pid) 2>/dev/null || { cat $(LOCAL_DIR)/log; exit 1; }; sleep 0.5; done
	@[ -f $(LOCAL_DIR)/env ] || { echo "not up after 2 minutes; see $(LOCAL_DIR)/log"; exit 1; }
	@echo "up: . $(LOCAL_DIR)/env && \$$KUBECTL get certificates -A   (log: $(LOCAL_DIR)/log; stop: make local-down)"

.PHONY: local-down
local-down: ## Stop the environment started by local-up.
	@if [ -f $(LOCAL_DIR)/pid ] && kill -0 $$(cat $(LOCAL_DIR)/pid) 2>/dev/null; then \
		kill -TERM $$(cat $(LOCAL_DIR)/pid); \
		for i in $$(seq 1 60); do kill -0 $$(cat $(LOCAL_DIR)/pid) 2>/dev/null || break; sleep 0.5; done; \
		echo "stopped"; else echo "not running"; fi
	@rm -f $(LOCAL_DIR)/pid $(LOCAL_DIR)/env

# make cluster-up: a single-node cluster (etcd, apiserver, controller-manager, scheduler, kubelet,
# kube-proxy, containerd) with certpilot installed by Helm and Pebble beside it (docs/cluster.md).
CLUSTER_DIR := $(BIN)/cluster
.PHONY: cluster-up
cluster-up: test-deps test-binaries ## Start a single-node cluster (root) with a registry holding the image, certpilot installed by Helm, Pebble, BIND and two ClusterIssuers; writes bin/cluster/{kubeconfig,env}.
	@if [ -f $(BIN)/cluster.pid ] && kill -0 $$(cat $(BIN)/cluster.pid) 2>/dev/null; then \
		echo "already up (pid $$(cat $(BIN)/cluster.pid)); . $(CLUSTER_DIR)/env"; exit 0; fi
	$(GO) build -o $(BIN)/cluster-harness ./hack/cluster
	@mkdir -p $(CLUSTER_DIR) && rm -f $(CLUSTER_DIR)/env
	nohup $(BIN)/cluster-harness up --dir $(CLUSTER_DIR) > $(BIN)/cluster.log 2>&1 & echo $$! > $(BIN)/cluster.pid
	@for i in $$(seq 1 600); do [ -f $(CLUSTER_DIR)/env ] && break; \
		kill -0 $$(cat $(BIN)/cluster.pid) 2>/dev/null || { cat $(BIN)/cluster.log; exit 1; }; sleep 0.5; done
	@[ -f $(CLUSTER_DIR)/env ] || { echo "not up after 5 minutes; see $(BIN)/cluster.log"; exit 1; }
	@tail -1 $(BIN)/cluster.log
	@echo "up: . $(CLUSTER_DIR)/env && kubectl get pods -A   (log: $(BIN)/cluster.log, components: $(CLUSTER_DIR)/logs; stop: make cluster-down)"

.PHONY: cluster-down
cluster-down: ## Stop the cluster of cluster-up and remove everything it made (processes, mounts, iptables chains, cgroups, bridge).
	@if [ -f $(BIN)/cluster.pid ] && kill -0 $$(cat $(BIN)/cluster.pid) 2>/dev/null; then \
		kill -TERM $$(cat $(BIN)/cluster.pid); \
		for i in $$(seq 1 240); do kill -0 $$(cat $(BIN)/cluster.pid) 2>/dev/null || break; sleep 0.5; done; fi
	@rm -f $(BIN)/cluster.pid
	@if [ -x $(BIN)/cluster-harness ]; then $(BIN)/cluster-harness down --dir $(CLUSTER_DIR); fi
	@echo "down"

IMG ?= certpilot:dev
IMAGE_DIR := $(BIN)/image
.PHONY: image
image: ## Build the image (/manager, /edge, non-root, trusted roots) with no container engine: $(IMAGE_DIR)/certpilot.tar (OCI layout).
	IMG=$(IMG) bash hack/build-image.sh certpilot

.PHONY: docker-build
docker-build: ## Build the container image with a Docker engine (the same layout as make image).
	docker build -t $(IMG) .
