# Two commands on a fresh machine: `make demo` and `make test`. Every install step lives here.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM := false
# Models built or converted by tests (tiny Llama, Gemma 3 270M) are cached where `make demo`
# keeps its model, so one fresh run converts Gemma once for the tests, notebooks and demo.
export WB_TEST_MODEL_CACHE ?= $(CURDIR)/data/models

.PHONY: env demo test unit lab bench lint clean

env: $(STAMP)
	@bash scripts/stack.sh check $(VENV)

# The stack follows the device: the CUDA set when `nvidia-smi -L` lists a GPU, the CPU set
# otherwise; WORKBENCH_DEVICE=cuda|cpu overrides (scripts/stack.sh; `stack.sh plan` prints it).
$(STAMP): pyproject.toml constraints.txt constraints-cuda.txt Makefile scripts/install-system.sh scripts/stack.sh
	bash scripts/install-system.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	bash scripts/stack.sh install $(BIN)
	touch $@

demo: $(STAMP)
	$(BIN)/python -m workbench.demo

# Tests run as on a new machine: HOME is a fresh empty folder, so state left in ~ (a Ray
# token file, a config, a cache) can never make a test pass. Caches the tests need are
# named explicitly (WB_TEST_MODEL_CACHE above).
test: $(STAMP)
	$(BIN)/ruff check src tests bench
	HOME=$$(mktemp -d) $(BIN)/python -m pytest -p no:nbmake tests -q -rs --durations=15
	HOME=$$(mktemp -d) $(BIN)/python -m pytest --nbmake --nbmake-timeout=600 notebooks -q

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:nbmake tests -q -m "not vllm and not stt and not browser"

lab: $(STAMP)
	# kernels start in notebooks/: point them at the repo's store and model cache
	WORKBENCH_ROOT=$${WORKBENCH_ROOT:-$(CURDIR)/data/wb} \
	WORKBENCH_MODELS=$${WORKBENCH_MODELS:-$(CURDIR)/data/models} \
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/phased.py --quick

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
