# descriptor_gen — `make install`, `make test`, `make demo`; each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DESCGEN := $(VENV)/bin/descgen
STAMP := $(VENV)/.installed
DEMO_DIR ?= results/demo

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	@mkdir -p $(DEMO_DIR)
	@echo "== the default prompt (Menon & Vondrick) for 'tench'"
	$(DESCGEN) prompt tench
	@echo "== a study-style answer, parsed into descriptors"
	$(DESCGEN) parse data/fixtures/tench_answer.txt --class-name tench
	@echo "== a published-format file imported into a descriptor store"
	$(DESCGEN) import data/fixtures/mini_dclip.json --format dclip \
		--classes data/fixtures/mini_classes.txt --out $(DEMO_DIR)/mini.jsonl
	$(DESCGEN) show $(DEMO_DIR)/mini.jsonl
	@echo "== descriptors generated through the openai backend (against the local dev server)"
	$(PY) -m descriptor_gen.demo $(DEMO_DIR)

bench: install
	$(PY) bench/bench_generate.py
	$(PY) bench/bench_eval.py --images 200

clean:
	rm -rf $(VENV) results .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
