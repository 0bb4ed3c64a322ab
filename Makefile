# The two commands: `make run` serves every function on 127.0.0.1:8088; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Every dependency, the test tools and the build backend, pinned with their hashes (README,
# "Reproducible installs"). `make lock` regenerates it; `make audit` checks it for advisories.
LOCK := requirements.lock
UV_VERSION := 0.13.9

.PHONY: run test lint bench mutate clean lock audit

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r $(LOCK)
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m local $(ARGS)

test: $(STAMP)
	bash scripts/test.sh $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/python -m bench $(ARGS)

# Mutation testing of the core modules (scripts/mutate.py); MODULES="retry auth" for some of them,
# FRESH=1 to drop the results of earlier runs (kept otherwise: a stopped run goes on where it was).
mutate: $(STAMP)
	$(VENV)/bin/python scripts/mutate.py $(if $(FRESH),--fresh) $(MODULES)
# After changing pyproject.toml's dependencies: resolve for every platform and Python >= 3.11.
lock:
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet 'uv==$(UV_VERSION)'
	printf 'setuptools>=68\n' | .venv-tools/bin/uv pip compile pyproject.toml - --extra test --universal \
		--python-version 3.11 --generate-hashes -o $(LOCK)

# Known vulnerabilities in the locked versions. Needs PyPI's advisory data over the network; --strict
# fails when a package could not be looked up, rather than report "no known vulnerabilities".
audit:
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet pip-audit
	.venv-tools/bin/pip-audit --strict --require-hashes --disable-pip -r $(LOCK)

clean:
	rm -rf $(VENV) .venv-tools var
