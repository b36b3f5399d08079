# mobilevision: a newcomer needs `make demo` and `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# glibc malloc tunables: keep freed buffers instead of returning them to the OS (15-20% faster on CPU).
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296

.PHONY: install demo test benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,fast-coco]"
	touch $(STAMP)

demo: install
	$(PY) tools/benchmark.py --quick --out outputs/benchmark

test: install
	$(PY) -m pytest -q tests

benchmark: install
	$(PY) tools/benchmark.py --out outputs/benchmark

clean:
	rm -rf $(VENV) outputs
