# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
REQUIREMENTS := infra/requirements-test.txt
# The venv is keyed on the requirements' hash, so a second run skips the install.
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum $(REQUIREMENTS) | cut -c1-16)

.PHONY: run test lint bench venv

## run: the service and the RD Station sandbox on localhost (in-memory store)
run:
	@echo "Building the local run (the first build takes a few minutes)..."
	cargo run --quiet -p local-run

## test: install test tools, start moto on loopback, lint, run every test, stop moto
test: $(VENV_STAMP)
	scripts/test.sh

## lint: formatting, clippy and the SAM template
lint: $(VENV_STAMP)
	scripts/test.sh --lint-only

## bench: the refresher benchmark on moto (release build; see docs/benchmarks.md)
bench: $(VENV_STAMP)
	scripts/bench.sh

venv: $(VENV_STAMP)

$(VENV_STAMP): $(REQUIREMENTS)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS)
	rm -f $(VENV)/.installed-*
	touch $@
