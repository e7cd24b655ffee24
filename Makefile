# Set-up is part of every target: a fresh machine needs only python3 (3.11+), java 17 and mvn.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo screenshot test lint broker-start broker-stop clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)
	bash deploy/kafka/broker.sh fetch
	bash deploy/browser.sh

demo: setup
	$(BIN)/streamrec demo

# The dashboard during the demo's live phase, as README.md shows it (headless Chromium).
screenshot: setup
	$(BIN)/streamrec demo --screenshot docs/images/dashboard.png

# Unit tests, then integration tests against a real Kafka broker that tests/conftest.py starts
# once for the session (or the one named by STREAMREC_TEST_BOOTSTRAP).
test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check streamrec streams encoders tests
	$(BIN)/mypy streamrec streams encoders

broker-start: setup
	$(BIN)/streamrec kafka start

broker-stop:
	$(BIN)/streamrec kafka stop

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
