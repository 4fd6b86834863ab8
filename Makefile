# meshwork — the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint clean

install: $(STAMP)
	@$(BIN)/python -m meshwork.accelbuild

# Re-install only when the package metadata changed; an existing venv is reused.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: install
	@$(BIN)/python examples/demo/run.py

# The whole suite: lint, then unit, contract, integration and fault tests, with the
# compiled hot path (meshwork._accel); then the proxy's own tests again as pure Python,
# which is what runs where mypyc is not installed.
test: install lint
	@$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	@MESHWORK_PURE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/proxy tests/unit/core/test_http1*.py tests/integration/proxy tests/fuzz

# Unit tests only: no sockets, no processes.
test-fast: install
	@$(BIN)/python -m pytest -q tests/unit tests/fuzz

bench: install
	@scripts/need-deb etcd-server wrk haproxy nginx-light
	@$(BIN)/python -m bench $(BENCH)

lint: install
	@$(BIN)/ruff check src tests bench
	@$(BIN)/mypy --no-error-summary

clean:
	rm -rf $(VENV) build dist src/*.egg-info
