# nsbaseline — run `make help` for the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
CLUSTER_DIR ?= .cache/localcluster
# kubectl matching the control plane (the preinstalled one is outside the version skew).
KUBECTL = $$(bash hack/controlplane/build.sh 2>/dev/null | tail -n1)/kubectl

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv with the package and test tools.

.PHONY: fmt
fmt: venv ## Format the code.
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: lint
lint: venv ## Lint, check formatting, types and layers (.importlinter); check crds/ (and its copies) are up to date.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) hack/gen_crd.py --check
	$(PY) hack/sync_deploy.py --check
	$(PY) hack/gen_admission.py --check

.PHONY: crds
crds: venv ## Regenerate crds/ from operator/nsbaseline/spec.py (and its copies in deploy/, charts/).
	$(PY) hack/gen_crd.py
	$(PY) hack/sync_deploy.py

.PHONY: deploy-sync
deploy-sync: venv ## Copy crds/ into deploy/base/crds/ and charts/nsbaseline/crds/ (kustomize and Helm need them inside).
	$(PY) hack/sync_deploy.py

.PHONY: admission
admission: venv ## Regenerate the optional admission components (deploy/components/, chart templates) from hack/gen_admission.py.
	$(PY) hack/gen_admission.py

.PHONY: constraints
constraints: ## Pin the runtime dependencies for the image (constraints.txt) from a fresh resolve.
	rm -rf .cache/constraints && python3 -m venv .cache/constraints
	.cache/constraints/bin/pip install --quiet .
	{ head -n2 constraints.txt; .cache/constraints/bin/pip freeze --exclude nsbaseline; } > .cache/constraints.txt
	mv .cache/constraints.txt constraints.txt

.PHONY: docs
docs: venv ## Regenerate docs/reference.md from operator/nsbaseline/spec.py.
	$(PY) hack/gen_docs.py

##@ Local control plane

.PHONY: helm
helm: ## Build the Helm CLI from Go modules (cached) for the chart tests.
	bash hack/helm/build.sh

.PHONY: gitops
gitops: ## Build Argo CD (controller, repo server), kustomize and the kstatus wrapper from Go modules (cached) for the GitOps tests.
	bash hack/gitops/build.sh
	bash hack/kstatus/build.sh

.PHONY: controlplane
controlplane: ## Build kube-apiserver, kube-controller-manager, etcd and kubectl from Go modules (cached).
	bash hack/controlplane/build.sh

.PHONY: image
image: ## Build the operator image with podman from the Dockerfile (stand-in base here; cached by content).
	bash hack/image/build.sh

.PHONY: up
up: venv controlplane ## Start the local control plane in the background and print the KUBECONFIG line.
	$(PY) hack/localcluster.py up --dir $(CLUSTER_DIR)

.PHONY: down
down: venv ## Stop the local control plane started by `make up`.
	$(PY) hack/localcluster.py down --dir $(CLUSTER_DIR)

.PHONY: demo
demo: up ## The operator's main job on the local control plane: CRDs, an example policy, then run it.
	export KUBECONFIG=$(CURDIR)/$(CLUSTER_DIR)/kubeconfig; \
	$(KUBECTL) apply --server-side -f crds/; \
	$(KUBECTL) wait --for=condition=Established crd/baselinepolicies.nsbaseline.io --timeout=60s; \
	$(KUBECTL) apply -f examples/demo.yaml; \
	echo "Operator starting; in another shell: export KUBECONFIG=$(CURDIR)/$(CLUSTER_DIR)/kubeconfig"; \
	echo "  then: $(KUBECTL) get bp,netpol -A   (Ctrl-C stops the operator; make down stops the cluster)"; \
	$(VENV)/bin/nsbaseline run --standalone --metrics-port 9090

##@ Test

.PHONY: test
test: lint controlplane helm image dataplane gitops ## Unit tests, end-to-end tests on the real local control plane (GitOps included), and the dataplane tests.
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Unit tests only (no cluster).
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-e2e
test-e2e: venv controlplane gitops ## End-to-end tests only.
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

##@ Dataplane (real packets; root, see docs/dataplane.md)

.PHONY: dataplane
dataplane: ## Build kube-router, the NetworkPolicy firewall of the dataplane tests, from Go modules (cached).
	bash hack/dataplane/build.sh

.PHONY: dataplane-test
dataplane-test: venv controlplane dataplane ## Prove the baseline with real packets: truth table, lifecycles, deletion window.
	$(VENV)/bin/pytest tests/dataplane $(PYTEST_ARGS)

##@ Benchmark

N ?= 1000
BENCH_ARGS ?=

.PHONY: bench
bench: venv controlplane ## Benchmark at N namespaces (N=1000; `make bench N=5000`, BENCH_ARGS=...); prints one table.
	$(PY) bench/run.py --namespaces $(N) $(BENCH_ARGS)

.PHONY: bench-smoke
bench-smoke: venv controlplane ## A small, quick bench run (checks that the bench works, not timing).
	$(PY) bench/run.py --namespaces 50 --idle 5 --new-namespaces 10 --tampers 20 --dir .cache/bench-smoke $(BENCH_ARGS)
