# The two commands a newcomer needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test venv lint bench bench-cases bench-outbound clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

## make run: install into .venv and start the whole platform on its embedded default
run: venv
	$(BIN)/mailcase --data-dir var serve

## make test: install what the tests need (Debian packages included) and run the whole suite
test: venv
	bash scripts/install-test-deps.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	REQUIRE_TEST_PEERS=1 $(BIN)/pytest -q -p no:cacheprovider

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

## make bench: the inbound benchmark against Postfix (not part of the tests)
bench: venv
	bash scripts/install-test-deps.sh
	$(BIN)/python bench/inbound.py

## make bench-cases: Email-to-Case emails -> cases per second at 10k and 1M existing cases
bench-cases: venv
	$(BIN)/python bench/cases.py

## make bench-outbound: delivery to smtp-sink (plain) and a TLS receiver, beside Postfix
bench-outbound: venv
	bash scripts/install-test-deps.sh
	$(BIN)/python bench/outbound.py

clean:
	rm -rf $(VENV) var build *.egg-info
