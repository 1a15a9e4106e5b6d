# Set-up and checks. `make demo` and `make test` each do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# PyTorch (CPU build) is only the independent reference for the logits test; use a local wheel
# when the machine has one, otherwise the reference tests are skipped.
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-*+cpu-cp311-*.whl))

.PHONY: setup model llamacpp kernels demo test test-slow lint docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(if $(TORCH_WHEEL),$(BIN)/pip install --quiet $(TORCH_WHEEL) 'transformers>=4.50' accelerate \
	  || echo "PyTorch reference not installed: reference tests will be skipped")
	touch $@

setup: $(STAMP)

model: kernels
	$(BIN)/ppl fetch-model

# llama-cpp-python with its OpenAI-compatible server, built from source into .venv-bench (the
# served-backend tests start it; reused once built).
llamacpp:
	bash benchmarks/setup_llamacpp.sh

# The runtime's CPU kernels (models/lm/kernels: quantized-GGUF matmuls and decode attention),
# compiled into one library in the user cache with the machine's C++ compiler (CXX, default
# g++); the first call of either builds it otherwise. `make model` (so demo and test) runs it.
kernels: setup
	$(BIN)/python -m ppl.models.lm.qmatmul

demo: model
	$(BIN)/ppl generate "What is the capital of France?" --chat --max-new-tokens 32 --temperature 0

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docs: setup
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site

test: model llamacpp lint docs
	$(BIN)/pytest -q -n 2 --dist loadgroup -m "not slow"

test-slow: model llamacpp
	$(BIN)/pytest -q -m slow

bench: model
	$(BIN)/python benchmarks/lm_throughput.py

clean:
	rm -rf $(VENV) .venv-bench build .pytest_cache .mypy_cache .ruff_cache
