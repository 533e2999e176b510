# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: install demo test test-fast lint bench sample clean browser

install: $(STAMP)

# The report test renders the HTML report in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
	  || echo "could not install chromium: the report rendering test will be skipped"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade-strategy only-if-needed -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/precal demo

# Lint and format settings live in pyproject.toml; `ruff format .` fixes what the second check reports.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) browser lint
	$(BIN)/python -m pytest -q -rs

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/extract_bench.py
	$(BIN)/python benchmarks/incremental_bench.py
	$(BIN)/python benchmarks/train_bench.py

clean:
	rm -rf $(VENV) build *.egg-info

# Rebuild the bundled AV-digits sample from ../shared/data (about 10 s).
sample: $(STAMP)
	$(BIN)/python -c "from pipeline.datasets.avdigits import build_sample; build_sample(); build_sample(perturbed=True)"
