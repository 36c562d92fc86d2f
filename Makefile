# nodemesh — make targets. Every target works on a fresh machine with Go
# installed; tools come from the Go module proxy, pinned in hack/tools/go.mod.

GO        ?= go
GOTOOL    := $(GO) tool -modfile=hack/tools/go.mod
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/nodemesh/nodemesh/internal/clibase.Version=$(VERSION) -X github.com/nodemesh/nodemesh/internal/testapp.Version=$(VERSION)
IMAGES_OUT ?= _output/images
FUZZTIME  ?= 30s
BENCHCOUNT ?= 6

# The suites that need a Kubernetes API server (see internal/kubetest).
KUBE_PKGS := ./internal/kubetest/... ./internal/workloadcert/... ./xds/watch/... ./xds/kubeauth/... ./internal/cli/... ./migration/... ./install/... ./agent/identity/... ./agent/e2e/...

# The suites that need root and the real kernel (eBPF, netns, cgroups); the agent's also needs the API server.
DATAPATH_PKGS := ./bpf/... ./agent/e2e/...

.PHONY: all build images test test-datapath test-kube kube-binaries istiod kube-up kube-down cluster-up cluster-down test-cluster bench-cluster testdata bench bench-controller bench-bpf bench-datapath bpf-generate bpf-check-generated generate check-generated lint fuzz ci clean

all: build

## build: the nodemesh binaries into bin/
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

## images: nodemesh's images, offline, tagged ghcr.io/nodemesh/<name>:$(VERSION) (the version 'nodemesh version' prints and 'nodemesh install' deploys): controller, agent (with nodemesh-cni), testapp, curl (from this machine's Debian packages: curl, busybox-static) and pause, as OCI archives $(IMAGES_OUT)/<name>.tar ('ctr -n k8s.io images import', 'crane push') and the OCI layout $(IMAGES_OUT)/oci
images:
	$(GO) run ./hack/images --version '$(VERSION)' --out '$(IMAGES_OUT)'

## test: every test, with a summary (root-only and cluster suites skip with a reason when their prerequisites are missing)
test:
	$(GOTOOL) gotestsum --format pkgname-and-test-fails --format-hide-empty-pkg -- -count=1 ./...

## test-datapath: the root-only suites (eBPF programs in the kernel, the agent end to end on netns pods); they fail instead of skipping when root, BPF or the API server is missing
test-datapath: kube-binaries
	@if [ "$$(id -u)" != 0 ]; then echo "test-datapath needs root (eBPF, network namespaces, cgroups): run 'sudo make test-datapath'"; exit 1; fi
	NODEMESH_KUBE=required NODEMESH_DATAPATH=required $(GOTOOL) gotestsum --format testname --format-hide-empty-pkg -- -count=1 -timeout 20m $(DATAPATH_PKGS)

## kube-binaries: build kube-apiserver, etcd and kube-controller-manager from the Go module proxy, cached in ~/.cache/nodemesh
kube-binaries:
	hack/kube-build.sh >/dev/null

## istiod: build istiod (pilot-discovery) from the Go module proxy, cached in ~/.cache/nodemesh/istio: the real Istio CA of internal/workloadcert's tests (NODEMESH_ISTIOD=required: they fail instead of skipping without it)
istiod:
	hack/istiod-build.sh >/dev/null

## kube-up: start kube-apiserver + etcd (WITH_KCM=1: + kube-controller-manager) on 127.0.0.1; admin kubeconfig in _output/kube/kubeconfig
kube-up: kube-binaries
	$(GO) run ./hack/kubeenv up

## cluster-up: a local two-node cluster (root): control plane + two nodes, each a network namespace with containerd, runc and a real kubelet, make images imported; then: export KUBECONFIG=_output/cluster/kubeconfig; bin/nodemesh install -f _output/cluster/values.yaml --wait; bin/nodemesh check
cluster-up: kube-binaries images build
	VERSION='$(VERSION)' hack/cluster/cluster.sh up

## test-cluster: nodemesh as a whole on the local cluster (root): cluster up, install from the built images, check with real curl in real pods, the underlay cut and restored, uninstall, cluster down
test-cluster: kube-binaries
	@if [ "$$(id -u)" != 0 ]; then echo "test-cluster needs root (network namespaces, mounts, cgroups): run 'sudo make test-cluster'"; exit 1; fi
	@mkdir -p _output
	bash -o pipefail -c "NODEMESH_CLUSTER=required $(GO) test -count=1 -v -timeout 40m ./test/cluster/ 2>&1 | tee _output/test-cluster.txt | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|cluster_test.go'"

## bench-cluster: pod start on the local cluster (root): 50 pods at once on one node, creation → Ready p50/p99 (brings the cluster up, installs, measures, tears it down)
bench-cluster: cluster-up
	KUBECONFIG=_output/cluster/kubeconfig bin/nodemesh install -f _output/cluster/values.yaml --wait --timeout 4m
	NODEMESH_CLUSTER=1 VERSION='$(VERSION)' $(GO) test -run '^$$' -bench PodStart -benchtime 1x -count 3 ./test/cluster/ | tee _output/bench-cluster.txt; rc=$$?; hack/cluster/cluster.sh down; exit $$rc

## cluster-down: stop the local cluster, delete its namespaces, cgroups and state
cluster-down:
	hack/cluster/cluster.sh down

## kube-down: stop what kube-up started and delete its state (the next kube-up starts empty)
kube-down:
	$(GO) run ./hack/kubeenv down

## test-kube: the suites that need the API server; they fail instead of skipping when it cannot be started
test-kube: kube-binaries istiod
	NODEMESH_KUBE=required NODEMESH_ISTIOD=required $(GOTOOL) gotestsum --format pkgname-and-test-fails --format-hide-empty-pkg -- -count=1 $(KUBE_PKGS)

## testdata: rewrite the golden files from the current code (review the diff!)
testdata:
	UPDATE_GOLDEN=1 $(GO) test -count=1 ./translate/...
	UPDATE_GOLDEN=1 $(GO) test -count=1 -run Golden ./install/

## bench: the translator benchmarks, $(BENCHCOUNT) runs each (benchstat needs 6 for a confidence interval), summarised by benchstat
bench:
	@mkdir -p _output
	$(GO) test -run '^$$' -bench 'BenchmarkTranslate|BenchmarkDecode|BenchmarkAuthorizationPolicies' -benchtime 10x -count $(BENCHCOUNT) ./translate/ | tee _output/bench.txt
	$(GO) test -run '^$$' -bench 'BenchmarkAuthorizationPolicyL4' -benchtime 10x -count $(BENCHCOUNT) ./agent/policy/ | tee -a _output/bench.txt
	@echo
	$(GOTOOL) benchstat _output/bench.txt

## bench-controller: the controller benchmarks (xds; xds/watch against the API server, which they start or reuse): generation, initial sync, convergence, endpoint push, memory
bench-controller: kube-binaries
	@mkdir -p _output
	$(GO) test -run '^$$' -bench . -benchtime 3x ./xds/ | tee _output/bench-controller.txt
	NODEMESH_KUBE=required $(GO) test -run '^$$' -bench 'Convergence|EndpointPush' -benchtime 20x -count 3 -timeout 60m ./xds/watch/ | tee -a _output/bench-controller.txt
	NODEMESH_KUBE=required $(GO) test -run '^$$' -bench 'ControllerMemory' -benchtime 1x -timeout 80m ./xds/watch/ | tee -a _output/bench-controller.txt

## generate: the CRD Go types' deepcopy functions (api/v1alpha1) and the CRDs (install/chart/crds, the only copy) from api/ with controller-gen
generate:
	hack/generate.sh

## check-generated: regenerate what 'make generate' writes into a scratch directory and fail if the committed files differ
check-generated:
	hack/check-generated.sh

## bpf-generate: rebuild the committed eBPF objects and Go bindings from bpf/c (needs clang, llvm, libbpf-dev)
bpf-generate:
	$(GO) generate ./bpf/

## bpf-check-generated: regenerate the eBPF output into a scratch directory and fail if the committed files differ
bpf-check-generated:
	hack/check-bpf-generated.sh

## bench-bpf: the eBPF policy benchmarks (root): per-packet cost with 10,000 entries, BatchUpdate of 10,000 entries
bench-bpf:
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 3 ./bpf/

## bench-datapath: the datapath benchmarks (root; iptables-nft; client and server pinned to CPU 0, NODEMESH_BENCH_CPUS=all to not): pod-to-pod RR/CRR/throughput with no program, nodemesh policy and iptables at 10,000 entries, redirect set-up cost, policy apply and CNI ADD latency, same-node vs cross-node native vs VXLAN; $(DATAPATH_ROUNDS) interleaved rounds, then a summary (median, spread, ratio to the baseline)
DATAPATH_ROUNDS ?= 3
bench-datapath: kube-binaries
	@if [ "$$(id -u)" != 0 ]; then echo "bench-datapath needs root (eBPF, network namespaces, cgroups, iptables): run 'sudo make bench-datapath'"; exit 1; fi
	@mkdir -p _output
	NODEMESH_KUBE=required NODEMESH_DATAPATH=required NODEMESH_BENCH_ROUNDS=$(DATAPATH_ROUNDS) $(GO) test -run '^$$' -bench 'PodToPod|Redirect|PolicyApply|CNIAdd|CrossNode' -benchtime 1x -count 1 -timeout 40m ./agent/e2e/ | tee _output/bench-datapath.txt
	@echo
	@hack/bench-datapath-summary.sh _output/bench-datapath.txt

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOTOOL) staticcheck ./...

## fuzz: fuzz decoding and translation, and the CNI plugin's config/args handling, for $(FUZZTIME) each
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzTranslate -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./translate/
	$(GO) test -run '^$$' -fuzz FuzzPlugin -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./agent/cni/

## ci: what .ci/run runs
ci: lint check-generated test fuzz

clean:
	rm -rf bin _output
