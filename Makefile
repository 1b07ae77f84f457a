# flowherd: `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv/bin
TRACE ?= out/sample.pcap

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## virtual environment, packages, redis-server if missing
	@scripts/install.sh

demo: install ## install, generate a sample trace, analyse it with local workers, plot it
	@mkdir -p out
	$(VENV)/producer sample $(TRACE)
	$(VENV)/producer submit $(TRACE) --name sample --replace --top 10
	$(VENV)/reporter hist sample --top 100 -o out/sample-flows.png
	@echo "histogram: out/sample-flows.png"

test: ## install test tools and run the whole test suite
	@scripts/install.sh --test
	$(VENV)/python -m pytest -q

test-core: ## the fast core alone: no worker processes, corpus, cluster, faults, hosts, browser or large fuzz run
	@scripts/install.sh --test
	$(VENV)/python -m pytest -q -m "not (e2e or corpus or cluster or faults or hosts or slow or root or browser or fuzz)"

lint: ## ruff and mypy
	$(VENV)/ruff check . && $(VENV)/ruff format --check . && $(VENV)/mypy

lock: ## re-resolve every dependency (all extras) into constraints.txt, which installs use
	@scripts/lock.sh

bench: ## throughput benchmark against the single-process scapy baseline
	$(VENV)/python bench/run.py

clean: ## remove build outputs (not the virtual environment)
	rm -rf out .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install demo test test-core lint lock bench clean
