# dmg: the two commands the README documents are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: setup run test lint dev benchmark-data benchmark-trainer benchmark-contention clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

run: setup
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/python -m dmg_assets.run

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q

dev: setup
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml

benchmark-data: setup
	$(BIN)/python benchmarks/data_layer.py

benchmark-trainer: setup
	$(BIN)/python benchmarks/trainer_speed.py

benchmark-contention: setup
	$(BIN)/python benchmarks/contention.py --compare

clean:
	rm -rf data .dagster_home
