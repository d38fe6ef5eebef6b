# Set-up and the two README commands. Needs only Python 3.11 and git: everything else comes from
# requirements.lock into .venv (uv installs it; uv itself is pinned below).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV_VERSION := 0.13.9
# PyTorch for the test-only NAM reader; pip takes the CPU build where the machine has it on disk.
TORCH_VERSION := 2.13.0
WHEELS := $(wildcard /opt/wheels)

# Telemetry off: these machines are offline and a failing phone-home must not slow or break a run.
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
# DVC's default site cache (/var/tmp/dvc) may not be writable on CI: keep it inside the repo.
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/tmp/site-cache
# uv trusts the system's certificate store, as pip and curl do here (a proxy's CA may be installed there).
export UV_SYSTEM_CERTS := 1
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test browser bench bench-quality bench-panel gpu-kit demo-capture clean-outputs

setup: $(VENV)/.installed

# neural-amp-modeler's files come in without its dependencies (no PyTorch): `.nam` loudness and gain are
# defined on its reference input, models/_resources/loudness_input.wav (MIT), so a default install writes them
# as NAM computes them. Importing it needs `make test`'s extras; ampsim only reads the file.
$(VENV)/.installed: requirements.lock requirements-verify.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "ampsim needs Python 3.11: set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps $$(grep '^neural-amp-modeler==' requirements-verify.lock)
	touch $@

# The main job: the DVC pipeline, one model per device in params.yaml `devices` (the generated demo included).
repro: setup
	dvc repro
	dvc metrics show

# Test-only extras: the real NAM reader (neural-amp-modeler on PyTorch) that .nam exports are checked against.
$(VENV)/.verify-installed: $(VENV)/.installed requirements-verify.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements-verify.lock
	touch $@

# The listening page's test opens reports/<device>/index.html in headless Chromium: Debian's package (the
# machine's package manager, no browser download by a test tool). AMPSIM_SKIP_BROWSER=1 skips that test instead.
browser:
	@command -v chromium >/dev/null || [ "$$AMPSIM_SKIP_BROWSER" = 1 ] || { \
		echo "installing Chromium (Debian's package) for the listening page's test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: setup $(VENV)/.verify-installed browser
	python -m pytest

# The CPU benchmark (about 20 minutes): prints a table, writes bench/results.json; see bench/RESULTS.md.
bench: setup
	python bench/run.py

# Quality per CPU-minute against NAM's own trainer, side by side (about 35 minutes): bench/quality.py.
bench-quality: setup $(VENV)/.verify-installed
	python bench/quality.py

# What bench/gpu.sh needs on a lent GPU machine (no TensorFlow, no network there): the project's other
# dependencies as wheels, and boss-ds1 already prepared. Carry bench/gpu-kit with the device run.
gpu-kit: setup
	rm -rf bench/gpu-kit && mkdir -p bench/gpu-kit/wheels
	python -m pip download --quiet --only-binary=:all: --python-version 3.11 --no-deps -d bench/gpu-kit/wheels \
		$$(python -c 'import re; print(" ".join(re.split(r"\s", l)[0] for l in open("requirements.lock") if re.match(r"^(keras|absl-py|h5py|ml-dtypes|namex|optree|rich|markdown-it-py|mdurl|pygments|soundfile|cffi|pycparser|soxr|pyyaml|tqdm|packaging)==", l)))')
	python bench/gpu.py --prepare-only --prepared bench/gpu-kit/prepared

# The synthetic demo device alone (deterministic; `dvc repro` makes it too): the virtual amp at three gains.
demo-capture: setup
	dvc repro demo

# Re-lock after editing pyproject.toml dependencies.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 --quiet -o requirements.lock
	$(BIN)/uv pip compile requirements-verify.in -c requirements.lock --python-version 3.11 --quiet \
		$(if $(WHEELS),--find-links $(WHEELS)) --no-emit-package torch -o requirements-verify.lock

# Six real devices (NAM models of them, ../shared/teachers) re-amped with ampsim's signal, both trainers side by
# side, scored on real guitar DI neither trained on (about 2 hours): bench/panel.py.
bench-panel: setup $(VENV)/.verify-installed
	python bench/panel.py
