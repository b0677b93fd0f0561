# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

VENV_0103 := .venv-ag2-0103
STAMP_0103 := $(VENV_0103)/.installed-stamp

.PHONY: install demo test test-ag2-0103 bench bench-quick soak serve clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $(BENCH_STAMP)

# The oldest supported AG2 in its own venv: the AG2 tests run there too.
$(STAMP_0103): pyproject.toml
	test -x $(VENV_0103)/bin/python || $(PYTHON) -m venv $(VENV_0103)
	$(VENV_0103)/bin/python -m pip install -q --upgrade pip
	$(VENV_0103)/bin/python -m pip install -q -e ".[dev]" "ag2==0.10.3"
	touch $(STAMP_0103)

test-ag2-0103: $(STAMP_0103)
	$(VENV_0103)/bin/python -m pytest -q -m ag2

demo: $(STAMP)
	$(PY) -m cmbagent_events.cli demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not soak"

soak: $(STAMP)
	$(PY) -m pytest -q -s -m soak

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run --profile

bench-quick: $(BENCH_STAMP)
	$(PY) -m benchmarks.run --quick --no-gate

serve: $(STAMP)
	$(PY) -m cmbagent_events.cli serve

clean:
	rm -rf $(VENV) $(VENV_0103) *.egg-info .pytest_cache cmbagent_events.db cmbagent_events.db-*
