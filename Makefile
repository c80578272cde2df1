# The two commands: `make serve` (demo registry on localhost:3000) and `make test` (the whole suite).
# Both need only Python >= 3.11 and make; they create .venv and install into it.

PYTHON ?= python3
VENV ?= .venv
REGISTRY ?= .modelgate/demo
PORT ?= 3000
BIN := $(VENV)/bin

.PHONY: serve test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/modelgate demo --registry $(REGISTRY)
	MODELGATE_ALERT_RULES=$${MODELGATE_ALERT_RULES:-$(CURDIR)/monitoring/alerts-demo.yml} \
		$(BIN)/modelgate serve --registry $(REGISTRY) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict registry monitoring

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .modelgate .pytest_cache .ruff_cache .mypy_cache
