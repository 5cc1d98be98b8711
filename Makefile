# The two commands of the README:
#   make run    the portal on http://127.0.0.1:8000 (SQLite, development CA and admin made on first start)
#   make test   the whole test suite: lint, types, tests on SQLite, then again on a throwaway PostgreSQL
# Also: make bench (benchmark figures), make fixtures (regenerate test keys/CSRs), make lint (ruff and the
# import contracts of pyproject.toml [tool.importlinter]).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEV_ENV := DJANGO_DEBUG=true ENROLL_CA_PASSPHRASE_FILE=var/dev-ca-passphrase

.PHONY: run test lint typecheck pytest pytest-postgres system-packages bench fixtures clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

var/dev-ca-passphrase: | $(VENV)/.installed
	mkdir -p var && chmod 700 var
	umask 077 && $(PY) -c "import secrets; print(secrets.token_urlsafe(32))" > $@

run: $(VENV)/.installed var/dev-ca-passphrase
	$(DEV_ENV) $(PY) manage.py migrate --noinput -v 0
	$(DEV_ENV) $(PY) manage.py dev_setup
	$(DEV_ENV) $(PY) manage.py runserver 127.0.0.1:8000

system-packages:
	bash .ci/system-packages

test: system-packages $(VENV)/.installed lint typecheck pytest pytest-postgres

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.installed
	$(PY) -m mypy .

pytest: $(VENV)/.installed
	$(PY) -m pytest

pytest-postgres: $(VENV)/.installed
	$(PY) tests/pgserver.py -- $(PY) -m pytest

BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(PY) -m bench --settings tests.settings $(BENCH_ARGS)
	$(PY) tests/pgserver.py -- $(PY) -m bench --settings tests.settings $(BENCH_ARGS)

fixtures: $(VENV)/.installed
	$(PY) tests/fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
