# Every target creates the virtualenv and installs the project first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SEGMENTATION_HOME ?= $(CURDIR)/.segmentation
export DAGSTER_HOME ?= $(SEGMENTATION_HOME)/dagster_home
# No network at run time: MLflow's usage telemetry stays off (both switches it honours)
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1

# the tests also need the Spark engine's extra (pyspark); `make install` stays light
SPARK_STAMP := $(VENV)/.installed-spark

.PHONY: install system-deps test lint run ui mlflow clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

$(SPARK_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,spark]"
	touch $(SPARK_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# The browser tests (tests/ui) drive Debian's Chromium, the Spark engine's tests a Java
# runtime: each installed when missing (CI is root)
system-deps:
	command -v chromium >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	command -v java >/dev/null || \
		(apt-get update -q && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless)

test: $(SPARK_STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(SEGMENTATION_HOME)

# Dagster keeps run history in DAGSTER_HOME; its dagster.yaml (telemetry off, a queue of
# one run at a time, run monitoring) is written by segmentation_dagster.instance.
$(DAGSTER_HOME)/dagster.yaml: $(STAMP)
	$(BIN)/python -c "from segmentation_dagster.instance import write_dagster_yaml; write_dagster_yaml('$(DAGSTER_HOME)')"

# `make run JOB=segmentation` runs one job (segmentation, nmf, unicon, case_study, all);
# without JOB, SEGMENTATION_JOB, else all
run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	SEGMENTATION_JOB=$(or $(JOB),$(SEGMENTATION_JOB),all) $(BIN)/python -m segmentation_dagster.run

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

mlflow: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(SEGMENTATION_HOME)/mlflow.db --port 5000
