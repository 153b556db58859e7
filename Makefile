# Two entry points: `make run` (the app on the bundled checkpoint) and `make test` (the whole suite).
# Both create .venv and install requirements.txt on first use; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test benchmark

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) app.py

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

benchmark: install
	$(PY) -m iqa benchmark --preset lite
