# Fresh machine:  make demo   (CPU miniature: every table + the figure + report.html)
#                 make test   (unit tests + pipeline tests, including the demo end to end)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
SNAKEMAKE := $(BIN)/snakemake --workflow-profile none

.PHONY: demo test test-fast lint dag study-dry-run clean-demo

$(BIN)/mopeft: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,pipeline]'
	touch $@

demo: $(BIN)/mopeft
	$(SNAKEMAKE) --cores $(CORES) --configfile config/demo.yaml --rerun-incomplete
	$(SNAKEMAKE) --cores $(CORES) --configfile config/demo.yaml --report results/demo/report.html
	@echo "tables: results/demo/tables/  figure: results/demo/figures/  report: results/demo/report.html"

test: $(BIN)/mopeft
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/mopeft
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(BIN)/mopeft
	$(BIN)/ruff check mopeft tests
	$(SNAKEMAKE) --lint

# The whole study's plan (no execution): job counts per rule.
study-dry-run: $(BIN)/mopeft
	$(SNAKEMAKE) -n --quiet rules

clean-demo:
	rm -rf results/demo data/demo logs/demo
