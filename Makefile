# `make demo` and `make test` do all the set-up themselves, from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch is enough for everything here and much smaller than the
# default CUDA build; pyproject.toml itself asks only for torch>=2.3.
TORCH  ?= torch==2.13.0
# torchvision's classifiers are the reference the specs are tested against; its
# version must be the one built for $(TORCH), so it is pinned here with it.
TORCHVISION ?= torchvision==0.28.0

.PHONY: install test test-browser test-slow test-export fuzz demo bench zoo docs gallery clean gpu-wheels

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip show torchvision >/dev/null 2>&1 || $(BIN)/python -m pip install --quiet "$(TORCHVISION)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

test: install
	$(BIN)/python -m pytest -m "not slow"

# `dagnet view` in a real browser: Debian's chromium + chromium-driver (installed with
# apt when run as root), selenium from the dev extra. `make test` runs these too
# wherever Chromium is present; elsewhere they skip.
test-browser: install
	@if ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update && apt-get install -y chromium chromium-driver; \
	  else echo "install Chromium and its driver (apt-get install chromium chromium-driver) as root"; exit 1; fi; \
	fi
	$(BIN)/python -m pip show selenium >/dev/null 2>&1 || $(BIN)/python -m pip install --quiet "selenium>=4.20"
	$(BIN)/python -m pytest tests/test_view_browser.py -v

test-slow: install
	$(BIN)/python -m pytest -m slow

# the whole export matrix (docs/backend.md): every spec x format, big specs included
test-export: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/test_export_matrix.py

fuzz: install
	$(BIN)/python tests/fuzz_specs.py --cases 20000 --format yaml --compile
	$(BIN)/python tests/fuzz_specs.py --cases 20000 --format dag --compile

demo: install
	$(BIN)/dagnet check specs/resnet50.yaml
	$(BIN)/dagnet summary specs/resnet50.yaml --dim H=224 --dim W=224 | tail -n 2
	rm -rf runs/demo
	$(BIN)/dagnet train specs/digits_cnn.yaml --out runs/demo
	$(BIN)/dagnet eval runs/demo
	@echo "curves: runs/demo/loss.png runs/demo/metrics.png"

bench: install
	$(BIN)/python bench/run_all.py

zoo: install
	OMP_NUM_THREADS=1 $(BIN)/python bench/zoo.py

gallery: install
	$(BIN)/python -m dagnet.render.gallery

docs: install
	$(BIN)/python -m dagnet.docs > /dev/null

# the pure-Python packages bench/gpu/run.sh needs on a GPU machine that cannot reach a registry:
# carried there in bench/gpu/wheels (git-ignored) and installed into a temporary folder by the script
gpu-wheels:
	mkdir -p bench/gpu/wheels
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m pip download --quiet --no-deps --only-binary=:all: \
		-d bench/gpu/wheels lark pytorch-crf==0.7.2 torch-struct

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
