# Two commands on a fresh machine: `make bench` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the builds this machine has on disk (x86_64, Python 3.11)
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup data bench test lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

# the test extras (pytest, ruff, onnx, onnxruntime, tensorboard): not needed by the bench
$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

data: setup
	$(VENV)/bin/unsup data get fashion-mnist

bench: data
	$(VENV)/bin/unsup bench --data fashion-mnist --out bench-out

test: data $(VENV)/.test-installed
	$(PY) -m pytest -q

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) bench-out runs
