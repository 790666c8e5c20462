# descriptor_gen — `make install`, `make test`, `make demo`; each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DESCGEN := $(VENV)/bin/descgen
STAMP := $(VENV)/.installed
DEMO_DIR ?= results/demo

# Experiments of the study: `make exp-count DATASET=/data/imagenet/val LLM_MODEL=... CLIP_MODEL=...`
# a dataset card (under DATA_ROOT, else $DESCRIPTOR_GEN_DATA), an image folder or a CSV
DATASET ?= imagenet1k
CLASSES ?= data/classes/imagenet.txt
LLM_BACKEND ?= openai
LLM_MODEL ?= gpt-3.5-turbo-instruct
LLM_API ?= completions
LLM_BASE_URL ?=
CLIP_MODEL ?= ViT-B-32
CLIP_PRETRAINED ?= openai
PRECISION ?= fp16
RESULTS ?= results/experiments
# `make exp-dclip_imagenet`: also score Menon & Vondrick's published ImageNet file when given
# (classify_by_description_release/descriptors/descriptors_imagenet.json)
DCLIP_DESCRIPTORS ?=
DCLIP_STORE = --set 'stores={published: {path: $(DCLIP_DESCRIPTORS), format: dclip}}'
# `make reproduce-dclip` / `reproduce-waffle`: the benchmark suites. DATA_ROOT holds the datasets
# as their downloads unpack (else $DESCRIPTOR_GEN_DATA); DESCRIPTOR_DIR holds the references'
# published descriptors_*.json files.
DATA_ROOT ?=
DESCRIPTOR_DIR ?=
SUITE_FLAGS = $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) \
	$(if $(DESCRIPTOR_DIR),--set descriptor_dir=$(DESCRIPTOR_DIR)) \
	--set clip.model=$(CLIP_MODEL) --set clip.pretrained=$(CLIP_PRETRAINED) \
	--set model_key=$(CLIP_MODEL) --set clip.precision=$(PRECISION) \
	$(if $(LLM_BASE_URL),--set generation.base_url=$(LLM_BASE_URL))
SWEEP_FLAGS = --out $(RESULTS) --set dataset=$(DATASET) --set classes=$(CLASSES) \
	$(if $(DATA_ROOT),--set data_root=$(DATA_ROOT)) \
	--set generation.backend=$(LLM_BACKEND) --set generation.model=$(LLM_MODEL) \
	--set generation.api=$(LLM_API) $(if $(LLM_BASE_URL),--set generation.base_url=$(LLM_BASE_URL)) \
	--set clip.model=$(CLIP_MODEL) --set clip.pretrained=$(CLIP_PRETRAINED) \
	--set clip.precision=$(PRECISION)

.PHONY: install test test-oldest demo refer-demo bench clean report exp-base2novel exp-base2novel-demo exp-count exp-instruction exp-examples exp-baselines exp-dclip_imagenet exp-methods exp-fewshot reproduce-dclip reproduce-waffle reproduce-comparative reproduce-robustness

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The suite again with the lowest versions pyproject.toml allows (tests/oldest.txt) put in front
# of .venv's. Left out: test_serve.py (transformers' server, FastAPI, needs a newer pydantic) and
# the `hf` extra's test (.venv's `datasets` needs a newer huggingface-hub).
OLDEST := $(VENV)/oldest
test-oldest: install
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(OLDEST) -r tests/oldest.txt
	PYTHONPATH=$(OLDEST) $(PY) -m pytest -q --ignore tests/test_serve.py \
		--deselect tests/test_datasets.py::test_hf_datasets_saved_and_imagefolder

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
	@echo "== end to end: generate descriptors, score them with CLIP, report"
	$(PY) -m descriptor_gen.experiments.demo $(DEMO_DIR)

exp-count exp-instruction exp-examples exp-baselines: exp-%: install
	$(DESCGEN) sweep data/experiments/$*.yaml $(SWEEP_FLAGS)

report: install
	$(DESCGEN) report $(RESULTS)

# Menon & Vondrick on ImageNet as released: their prompt and generation (the dclip preset), their
# text forms and class names; the published descriptors beside ours when DCLIP_DESCRIPTORS is set.
exp-dclip_imagenet: install
	$(DESCGEN) sweep data/experiments/dclip_imagenet.yaml --out $(RESULTS) --set dataset=$(DATASET) \
		$(if $(DATA_ROOT),--set data_root=$(DATA_ROOT)) \
		--set clip.model=$(CLIP_MODEL) --set clip.pretrained=$(CLIP_PRETRAINED) \
		--set clip.precision=$(PRECISION) $(if $(LLM_BASE_URL),--set generation.base_url=$(LLM_BASE_URL)) \
		$(if $(DCLIP_DESCRIPTORS),$(DCLIP_STORE))
	$(DESCGEN) report $(RESULTS)

# Every method of the harness (WaffleCLIP, controls, CuPL, comparative, AutoCLIP, ...) in one
# table on the demo's images; the dev server answers when OPENAI_API_KEY is not set.
exp-methods: install
	$(PY) -m descriptor_gen.experiments.demo results/methods data/experiments/methods.yaml

# Few-shot learned prompts beside zero-shot descriptors: CoOp, KgCoOp-style CoOp and Tip-Adapter
# at K = 1..16 shots on the demo's images (results/fewshot/report.md and its figure).
exp-fewshot: install
	$(PY) -m descriptor_gen.experiments.demo results/fewshot data/experiments/fewshot.yaml

# CoCoOp's base-to-novel protocol on CoOp's datasets under DATA_ROOT (ViT-B/16, 16 shots, seeds
# 1-3; DESCRIPTOR_DIR for the descriptor columns), MaPLe's published averages beside ours; the
# demo variant runs it on the demo's drawn shapes in minutes on a CPU.
B2N_CLIP ?= ViT-B-16
exp-base2novel: install
	$(DESCGEN) base2novel data/experiments/base2novel.yaml $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) \
		$(if $(DESCRIPTOR_DIR),--set descriptor_dir=$(DESCRIPTOR_DIR)) \
		--set clip.model=$(B2N_CLIP) --set clip.pretrained=$(CLIP_PRETRAINED)

exp-base2novel-demo: install
	$(PY) -m descriptor_gen.experiments.demo base2novel

# The benchmark suites: methods x datasets with the published numbers beside ours.
reproduce-dclip reproduce-waffle reproduce-comparative reproduce-robustness: reproduce-%: install
	$(DESCGEN) suite data/experiments/suite_$*.yaml $(SUITE_FLAGS)

refer-demo: install
	$(PY) -m descriptor_gen.visual.refer_demo results/refer-demo

bench: install
	$(PY) bench/bench_generate.py
	$(PY) bench/bench_eval.py --images 200
	$(PY) bench/bench_scoring.py
	$(PY) bench/bench_sweep.py --images 100
	$(PY) bench/bench_refer.py --images 10
	$(PY) bench/bench_comparative.py
	$(PY) bench/bench_agreement.py --images 200
	$(PY) bench/bench_learn.py
	$(PY) bench/bench_ray.py
	$(PY) bench/bench_gpu.py --small --out results/bench_gpu_small.json
	$(PY) bench/bench_threads.py --images 64 --reps 1

clean:
	rm -rf $(VENV) results .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
