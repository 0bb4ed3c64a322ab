# The two commands: `make run` serves every function on 127.0.0.1:8088; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint bench mutate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m local $(ARGS)

test: $(STAMP)
	bash scripts/test.sh $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/python -m bench $(ARGS)

# Mutation testing of the core modules (scripts/mutate.py); MODULES="retry auth" for some of them.
mutate: $(STAMP)
	$(VENV)/bin/python scripts/mutate.py $(MODULES)

clean:
	rm -rf $(VENV) var
