# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   -- set up .venv and run the main job on the simulated microscope
#   make test   -- set up .venv (with torch==2.13.0) and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[engine,gui]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev,train,engine,gui]"
	# the tritonserver binary for tests/test_triton.py; --no-deps: nvidia-pytriton pins numpy<2,
	# which zarr 3 cannot use, and the server needs none of its Python dependencies (docs/triton.md)
	$(BIN)/python -m pip install -q --no-deps "nvidia-pytriton==0.7.0"
	# its python backend stub is built against numpy 1.x: the server runs in its own small
	# environment (export/triton_server.py, stub_environment)
	$(PYTHON) -m venv $(VENV)-triton
	$(VENV)-triton/bin/python -m pip install -q "numpy<2" "onnxruntime>=1.18"
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/scopecast demo

# the suite in TEST_WORKERS processes, each test file in one (~10 min on 2 cores; 18 in one process)
TEST_WORKERS ?= 2

test: $(VENV)/.test-installed
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

bench: $(VENV)/.demo-installed
	$(BIN)/python benchmarks/bench_simulator.py

clean:
	rm -rf $(VENV) $(VENV)-triton demo-output data
