PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Unleash's cross-SDK test vectors, for the rollout bucket tests.
UNLEASH_SPEC := $(VENV)/unleash-client-specification

.PHONY: test demo bench lint types unit clean

# The virtual environment is rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(UNLEASH_SPEC)/package/specifications/index.json: | $(STAMP)
	bash scripts/fetch-unleash-spec.sh $(UNLEASH_SPEC)

test: $(STAMP) $(UNLEASH_SPEC)/package/specifications/index.json
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# Bytecode is written first (only for what changed): where PYTHONDONTWRITEBYTECODE is set, an
# editable install would otherwise compile every module from source in every command.
demo: $(STAMP)
	$(BIN)/python -m compileall -q src
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: $(STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/promote.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/readiness.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/watch.py
	$(BIN)/python bench/server.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
