# A table of contents over tools/: each target is one call. See README.md.
SHELL := /bin/bash

SGLANG_DIR ?=
VENV ?= $(CURDIR)/.venv
PYTHON ?= python3
WHEELHOUSE ?=
PYTEST_ARGS ?=
FORCE ?=
# A user's clone and a venv path come from the command line only, never from
# the environment: the targets write nowhere the caller did not name.
ifeq ($(origin SGLANG_DIR),environment)
SGLANG_DIR :=
endif
ifeq ($(origin VENV),environment)
VENV := $(CURDIR)/.venv
endif
export VENV PYTHON WHEELHOUSE

BASE ?= v0.5.12
UPSTREAM ?=
export BASE UPSTREAM

.PHONY: apply unapply test venv check refresh gpu-wheels bench pr dist rebase clean help

apply: ## fetch + verify + unpack the pin, apply patches/series (or to SGLANG_DIR)
	./apply.sh $(SGLANG_DIR)

unapply: ## reset build/sglang to the pristine pin (refuses unexported work; FORCE=1 discards it)
	./apply.sh --unapply $(if $(FORCE),--force)

venv: ## build the test environment (.venv); offline with WHEELHOUSE=dir
	tools/make_venv.sh

test: ## run the registered tests and ours (CUDA if present, else CPU + Triton interpreter; builds .venv)
	SGLANG_DIR=$(SGLANG_DIR) tools/run_tests.sh $(PYTEST_ARGS)

check: venv ## patch headers, distro application (needs quilt), mirror, every prefix, pre-commit hooks
	tools/check_patches.py
	tools/check_distro.sh
	tools/check_series.sh
	tools/run_tests.sh --tooling -m needs
	tools/lint.sh

refresh: ## regenerate patches/ and the mirror from the commits in build/sglang
	tools/refresh.sh

gpu-wheels: ## download the wheels the GPU machine lacks (Python 3.12) into build/gpu-wheels
	tools/fetch_gpu_wheels.sh

bench: venv ## GPU benchmarks: the metadata kernel vs upstream 0.5.13, per-batch metadata and MoE layer vs 0.5.12, the MoE LoRA hooks at decode
	tools/run_bench.sh

pr: ## apply the series as commits on a new branch of SGLANG_DIR and write the PR body
	tools/pr.sh $(SGLANG_DIR)

dist: ## reproducible release tarball of the series in build/dist/
	tools/dist.sh

rebase: ## try the series on a newer sglang (UPSTREAM=version or path) and report per patch
	tools/rebase.sh $(UPSTREAM)

clean: ## remove build/ and .venv (the pin cache in .cache/ stays)
	rm -rf build .venv

.PHONY: e2e e2e-wheels
e2e-wheels: ## download what sglang's engine needs on the GPU machine: build/gpu-wheels + build/e2e-wheels
	tools/fetch_e2e_wheels.sh

e2e: ## GPU: sglang's engine, pin vs ours (outputs, decode speed; docs/e2e.md); E2E_ARGS=run.py options
	tools/e2e.sh $(E2E_ARGS)

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:[^#]*## /\t/' | expand -t 12
