# Two entry points: `make run` (the app on the bundled checkpoint) and `make test` (the whole suite);
# `make lint` checks the code's style (ruff) and CI runs it first.
# Both create .venv and install requirements.txt on first use; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint benchmark browser

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) app.py

# Debian's headless Chromium for tests/test_browser.py (Playwright cannot download its own browsers offline).
browser:
	@command -v chromium >/dev/null 2>&1 || if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "chromium missing (not root): tests/test_browser.py will be skipped; sudo apt-get install chromium"; fi

test: install browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check .

benchmark: install
	$(PY) -m iqa benchmark --preset lite
