# The two commands: `make run` (set up + run the whole pipeline on the embedded default)
# and `make test` (set up + the test suite). Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install run test format benchmark ui-prefect ui-mlflow clean

install: $(STAMP)

# torch goes first and pinned: unpinned, deepspeed/trl would pull a CUDA build of several GB.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lifecycle run $(ARGS)

# Lint and format are checked first: a few seconds, before a suite of minutes.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -m 'not benchmark' $(ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

benchmark: $(STAMP)
	$(BIN)/pytest -m benchmark tests/benchmarks $(ARGS)

# The UIs read the same local state the embedded runs write.
ui-prefect: $(STAMP)
	PREFECT_HOME=$${LIFECYCLE_HOME:-.lifecycle}/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/prefect server start

ui-mlflow: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$${LIFECYCLE_HOME:-.lifecycle}/mlflow.db --port 5000

clean:
	rm -rf .lifecycle
