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

# The main job on the embedded default data: generate shapes (first run), train SSDLite-MobileNetV2 for a fixed
# number of optimizer steps, evaluate (12 COCO stats -> outputs/demo/metrics.json), draw predictions.
demo: install
	rm -rf outputs/demo
	$(PY) tools/train.py --task ssdlite --backbone mobilenet_v2 --checkpoint.dirpath outputs/demo/checkpoints
	$(PY) tools/eval.py coco --checkpoint outputs/demo/checkpoints/last.ckpt \
	    --json-out outputs/demo/metrics.json --draw outputs/demo/predictions.png

test: install
	$(PY) -m pytest -q tests

benchmark: install
	$(PY) tools/benchmark.py --out outputs/benchmark

clean:
	rm -rf $(VENV) outputs
