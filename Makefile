# The two commands: `make serve` (demo registry on localhost:3000) and `make test` (the whole suite).
# Both need only Python >= 3.11 and make; they create .venv and install into it.

PYTHON ?= python3
VENV ?= .venv
REGISTRY ?= .modelgate/demo
PORT ?= 3000
BIN := $(VENV)/bin

.PHONY: serve test lint install install-dev clean screenshots

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

# the README's pictures of the pages, taken by their browser test (needs Debian's chromium)
screenshots: install-dev
	MODELGATE_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/pytest tests/test_ui_browser.py

clean:
	rm -rf $(VENV) .modelgate .pytest_cache .ruff_cache .mypy_cache
