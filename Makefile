# Fresh machine:  make demo   (CPU miniature: every table + the figure + report.html)
#                 make test   (unit tests + pipeline tests, including the demo end to end)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
SNAKEMAKE := $(BIN)/snakemake --workflow-profile none

.PHONY: demo test test-fast lint dag study-dry-run plan clean-demo

# The environment is the lock's exact versions (Linux x86-64, CPython 3.11), then the checkout
# without its dependencies; pyproject.toml keeps the ranges. `make lock` re-resolves the lock from
# pyproject.toml with EXTRAS (LOCK_ARGS=--upgrade: newest allowed versions); tests/test_lock.py reads both.
EXTRAS := dev,pipeline,peft,tensorboard
LOCK   := requirements/lock-linux-x86_64-py311.txt

$(BIN)/mopeft: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

.PHONY: lock
lock:
	PYTHON=$(PYTHON) bash scripts/lock.sh $(LOCK) $(EXTRAS) $(LOCK_ARGS)

demo: $(BIN)/mopeft
	$(SNAKEMAKE) --cores $(CORES) --configfile config/demo.yaml --rerun-incomplete
	$(SNAKEMAKE) --cores $(CORES) --configfile config/demo.yaml --report results/demo/report.html
	@echo "tables: results/demo/tables/  figure: results/demo/figures/  report: results/demo/report.html"

# docs/demo.md's numbers from the finished demo's tables (between its <!-- demo:tables --> markers):
# computed, never typed, so the page cannot claim what the run's tables do not show.
.PHONY: demo-doc
demo-doc: $(BIN)/mopeft
	$(BIN)/python scripts/update_demo_doc.py results/demo

# config/README.md's key tables from the schema's descriptions and defaults (between its
# <!-- config-docs --> markers): one source, so the documentation cannot drift from what is validated.
.PHONY: config-docs
config-docs: $(BIN)/mopeft
	$(BIN)/python scripts/config_docs.py

# Two workers by default (the CI machine's cores); each takes whole files, so a file's fixtures run once.
TEST_WORKERS ?= 2
test: $(BIN)/mopeft
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(BIN)/mopeft
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(BIN)/mopeft
	$(BIN)/ruff check mopeft tests scripts
	$(SNAKEMAKE) --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules/

# How long Snakemake takes to plan the study (wall and CPU seconds, printed; a benchmark, not a test).
.PHONY: bench-dag
bench-dag: $(BIN)/mopeft
	$(BIN)/python scripts/bench_dag.py

# The whole study's plan (no execution): job counts per rule.
study-dry-run: $(BIN)/mopeft
	$(SNAKEMAKE) -n --quiet rules

# The study's resource plan (no GPU, no data; ~10 min of CPU per GPU model): docs/plan/ and
# README's cost section. `mopeft plan` with no --json writes results/study/plan.json, which the
# pipeline's GPU jobs take their resources from.
PLAN_GPUS ?= h100 a100-40
plan: $(BIN)/mopeft
	mkdir -p docs/plan
	for gpu in $(PLAN_GPUS); do \
	  $(BIN)/mopeft plan --configfile config/config.yaml --gpu $$gpu --json results/study/plan-$$gpu.json \
	    --md docs/plan/study_$$gpu.md --csv docs/plan/study_$$gpu.csv --summary docs/plan/study_$$gpu.summary.json \
	    --all-gpus > /dev/null || exit 1; \
	done
	$(BIN)/python scripts/update_cost_section.py docs/plan/*.summary.json

# The main table on ViT-L (config/vit_l.yaml on top of the study's): docs/plan/vit_l/ (README,
# "Larger backbones").
.PHONY: plan-vit-l
plan-vit-l: $(BIN)/mopeft
	mkdir -p docs/plan/vit_l
	for gpu in $(PLAN_GPUS); do \
	  $(BIN)/mopeft plan --configfile config/config.yaml config/vit_l.yaml --gpu $$gpu \
	    --json results/study_vit_l/plan-$$gpu.json --md docs/plan/vit_l/study_vit_l_$$gpu.md \
	    --csv docs/plan/vit_l/study_vit_l_$$gpu.csv --summary docs/plan/vit_l/study_vit_l_$$gpu.summary.json \
	    --all-gpus > /dev/null || exit 1; \
	done

clean-demo:
	rm -rf results/demo data/demo logs/demo
