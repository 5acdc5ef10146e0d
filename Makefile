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

# The project's own Dagster instance: no telemetry, and one training step at a time (the
# torch_training pool; the driver sets it too, the UI's automation relies on it).
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

run: setup $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m dmg_assets.run

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# The embedded synthetic hub the default source reads (make run writes it too).
data/synthetic/synthetic_hub.json: | setup
	$(BIN)/python -m dmg_ml.synthetic.writer data/synthetic

# dagster dev under a supervisor that stops it on the first Ctrl-C (dmg_assets/dev.py).
dev: setup $(DAGSTER_HOME)/dagster.yaml data/synthetic/synthetic_hub.json
	$(BIN)/dagster instance concurrency set torch_training 1
	$(BIN)/python -m dmg_assets.dev -- $(BIN)/dagster dev -w workspace.yaml

benchmark-data: setup
	$(BIN)/python benchmarks/data_layer.py

benchmark-trainer: setup
	$(BIN)/python benchmarks/trainer_speed.py

benchmark-contention: setup
	$(BIN)/python benchmarks/contention.py --compare

clean:
	rm -rf data .dagster_home
