# Every target creates the virtualenv and installs the project first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SEGMENTATION_HOME ?= $(CURDIR)/.segmentation
export DAGSTER_HOME ?= $(SEGMENTATION_HOME)/dagster_home

.PHONY: install test lint run ui mlflow clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(SEGMENTATION_HOME)
