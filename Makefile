# make demo   - set up and run the main job on the embedded local DPU (no cluster needed)
# make test   - set up, start the real services the tests need, lint, run every test
# make lint   - ruff + mypy
# make docs   - the architecture page and the API reference (mkdocs build --strict: warnings fail)
# make bench  - print the performance figures
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit docs bench cluster-up cluster-down clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[web,test,browser,dev,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check dpu_slurm tests examples bench tools docs/hooks.py
	$(VENV)/bin/mypy dpu_slurm

unit: $(STAMP)
	$(PY) -m pytest -q -m "not slurm and not sshd and not sge and not pbs and not chromium and not users" tests

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test: $(STAMP) lint docs cluster-up
	$(PY) -m pytest -q tests

# Real services for the integration tests (Debian packages, started by hand; idempotent).
cluster-up:
	bash harness/slurm-up.sh
	bash harness/sshd-up.sh >/dev/null
	bash harness/chromium-up.sh
	bash harness/sge-up.sh
	bash harness/torque-up.sh
	bash harness/users-up.sh

cluster-down:
	bash harness/sshd-down.sh
	bash harness/slurm-down.sh
	bash harness/sge-down.sh
	bash harness/torque-down.sh

bench: $(STAMP) cluster-up
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
