# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install omniseg, segment the bundled real demo tiles
#   make test   - create .venv, install omniseg with test tools, run every non-GPU test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test lint clean

$(BIN)/omniseg-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(BIN)/omniseg-installed
	$(BIN)/omniseg demo -o $(DEMO_OUT) --overwrite

test: $(BIN)/omniseg-installed
	$(BIN)/python -m pytest -m "not gpu" -q

lint: $(BIN)/omniseg-installed
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) build dist src/*.egg-info
