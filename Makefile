# Next Campus Chat — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
VENV_BIN := .venv/bin
PYTEST_ARGS ?=
FANOUT_ARGS ?=
# Test processes of `make test`: most tests wait on real servers, so two share two cores well.
TEST_WORKERS ?= 2

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install what the stack and the tests need (redis-server, node, chromium, prometheus, uv, the locked venv)
	@# Only what is missing: a machine may already have node (and its npm) from elsewhere, and
	@# asking apt for Debian's nodejs beside it fails. node + npm run the reference graphql-ws
	@# client and playwright-core; Debian's chromium is the browser playwright-core drives, and
	@# fonts-nanum gives it Hangul (the page speaks Korean; without a font its screenshots don't),
	@# fonts-noto-color-emoji the reactions' emoji.
	@# promtool (Debian prometheus) checks and unit-tests the alerts, and a real Prometheus
	@# runs every dashboard query; prometheus-redis-exporter is the exporter the chart pins;
	@# shellcheck checks the kind e2e script.
	@missing="$$(command -v redis-server >/dev/null && command -v redis-cli >/dev/null || echo redis-server redis-tools) \
	  $$(command -v node >/dev/null || echo nodejs) $$(command -v npm >/dev/null || echo npm) \
	  $$(test -x /usr/bin/chromium || echo chromium) \
	  $$(fc-list :lang=ko 2>/dev/null | grep -q . || echo fonts-nanum) \
	  $$(fc-list 2>/dev/null | grep -qi emoji || echo fonts-noto-color-emoji) \
	  $$(test -x /usr/bin/promtool && test -x /usr/bin/prometheus || echo prometheus) \
	  $$(test -x /usr/bin/prometheus-redis-exporter || echo prometheus-redis-exporter) \
	  $$(command -v shellcheck >/dev/null || echo shellcheck)"; \
	if [ -n "$${missing// /}" ]; then \
	  echo "installing" $$missing "(Debian packages) …"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
	@# The Debian package starts a server on :6379 we do not use; the stack starts its own.
	@$(UV) --version >/dev/null 2>&1 || { echo "installing uv …"; python3 -m pip install -q uv; }
	@$(UV) sync --all-packages --locked -q

.PHONY: up
up: deps ## start the local topology (Redis Cluster, chat, GraphQL, Envoy) and print the page URL with a dev token
	$(VENV_BIN)/chatctl up $(UP_ARGS)

.PHONY: e2e
e2e: deps ## only the end-to-end suite (through Envoy; E2E_GATEWAY_URL=… targets another stack)
	$(if $(E2E_GATEWAY_URL),NEXTCAMPUS_E2E_GATEWAY_URL=$(E2E_GATEWAY_URL)) $(VENV_BIN)/pytest e2e $(PYTEST_ARGS)

.PHONY: test
test: deps lint typecheck ## run the whole suite (lint, types, generated-code staleness, tests)
	$(VENV_BIN)/pytest -n $(TEST_WORKERS) -m "not containers" $(PYTEST_ARGS)

.PHONY: bench
bench: deps ## measure sends/s, latency, fan-out vs the peers, a policy's TTL change of 100k messages, a simulated campus
	$(VENV_BIN)/chatctl bench
	$(VENV_BIN)/chatctl bench-fanout
	$(VENV_BIN)/chatctl bench-retime
	$(VENV_BIN)/chatctl bench-campus

.PHONY: bench-fanout
bench-fanout: deps ## GraphQL fan-out vs the peers, ours direct and through Envoy (FANOUT_ARGS="--no-gateway --no-peers": ours direct only)
	$(VENV_BIN)/chatctl bench-fanout $(FANOUT_ARGS)

.PHONY: chart-check
chart-check: deps ## the Helm chart: lint, render every ci/ value set, validate objects, Envoy config, alerts, dashboards
	$(VENV_BIN)/pytest -p no:cacheprovider charts/nextcampus-chat/tests $(PYTEST_ARGS)

.PHONY: chart-schema
chart-schema: deps ## regenerate the settings parts of the chart's values.schema.json from the settings classes
	$(VENV_BIN)/python tools/gen_chart_schema.py

.PHONY: graphql-schema
graphql-schema: deps ## regenerate services/graphql/schema.graphql (the API as SDL) from the graphene schema
	$(VENV_BIN)/python -m nextcampus_graphql.schema -o services/graphql/schema.graphql

.PHONY: images-deps
images-deps: ## install podman and debootstrap (Debian packages) unless a Docker engine answers
	@# netavark + aardvark-dns: the container topology's DNS names (netavark sets up its
	@# networks with iptables, which a machine may lack); runc: the runtime that creates
	@# containers on a cgroup v1 host; debootstrap: the Debian base where the official Python
	@# base cannot be pulled.
	@if ! docker info >/dev/null 2>&1; then \
	  missing="$$(command -v podman >/dev/null || echo podman) $$(command -v runc >/dev/null || echo runc) \
	    $$(test -x /usr/lib/podman/netavark || echo netavark) $$(test -x /usr/lib/podman/aardvark-dns || echo aardvark-dns) \
	    $$(command -v iptables >/dev/null || echo iptables) \
	    $$(command -v debootstrap >/dev/null || echo debootstrap)"; \
	  if [ -n "$${missing// /}" ]; then \
	    echo "installing" $$missing "(Debian packages) …"; \
	    $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	    $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; fi

.PHONY: images
images: deps images-deps ## build the chat, graphql and operator images (docker or podman; IMAGES_ARGS="--stand-ins" adds Redis and Envoy)
	$(VENV_BIN)/chatctl images $(IMAGES_ARGS)

.PHONY: e2e-containers
e2e-containers: deps images-deps ## build the images and run the e2e suite against the whole system as containers
	NEXTCAMPUS_E2E_TOPOLOGY=containers $(VENV_BIN)/pytest images/tests/test_build.py e2e --ignore=e2e/kind $(PYTEST_ARGS)

.PHONY: kind-e2e
kind-e2e: deps ## the e2e suite on a kind cluster with the chart installed (skips where docker/kind are missing)
	e2e/kind/run.sh

.PHONY: lint
lint: deps ## ruff lint and format check, and the layer contracts of .importlinter
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/lint-imports --no-cache

.PHONY: fmt
fmt: deps ## apply ruff fixes and formatting
	$(VENV_BIN)/ruff check --fix .
	$(VENV_BIN)/ruff format .

.PHONY: typecheck
typecheck: deps ## mypy over our packages (generated code excluded)
	$(VENV_BIN)/mypy

.PHONY: protos
protos: deps ## regenerate the Python stubs from protos/
	$(VENV_BIN)/python tools/gen_protos.py

.PHONY: clean
clean: ## remove local state (.local/) and caches
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
