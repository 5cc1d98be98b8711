# The two commands of the README:
#   make run    the portal on http://127.0.0.1:8000 (SQLite, development CA and admin made on first start)
#               and its mail worker; `make run PORT=8001` for another port (HOST=... for another address)
#   make test   the whole test suite: lint, types, tests on SQLite, then again on a throwaway PostgreSQL
#               (real-server tests only there); it prints how long it took (`make test COVERAGE=1`: with
#               the coverage of both passes, a few minutes longer)
# Also: make bench (benchmark figures), make fixtures (regenerate test keys/CSRs), make lint (ruff and the
# import contracts of pyproject.toml [tool.importlinter]).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where `make run` serves: another port for a second checkout, or HOST=0.0.0.0 to be reached from the
# network (then set DJANGO_ALLOWED_HOSTS to the name people use, and ENROLL_PUBLIC_URL to its URL).
HOST ?= 127.0.0.1
PORT ?= 8000
# The URL in certificates (CRL, CA certificate) and in mailed links; follows HOST and PORT unless set.
ENROLL_PUBLIC_URL ?= http://$(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(HOST)):$(PORT)
DEV_ENV := DJANGO_DEBUG=true ENROLL_CA_PASSPHRASE_FILE=var/dev-ca-passphrase ENROLL_PUBLIC_URL=$(ENROLL_PUBLIC_URL)
# The server and the mail worker sign through the signer (manage.py signer, docs/OPERATIONS.md "The
# signer"), which alone has the passphrase: their environment has the socket and no passphrase.
SIGNER_SOCKET := var/run/signer.sock
WEB_ENV := DJANGO_DEBUG=true ENROLL_PUBLIC_URL=$(ENROLL_PUBLIC_URL) ENROLL_SIGNER_SOCKET=$(SIGNER_SOCKET)

.PHONY: run test test-steps lint typecheck pytest pytest-postgres coverage system-packages messages catalogue bench fixtures clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

var/dev-ca-passphrase: | $(VENV)/.installed
	mkdir -p var && chmod 700 var
	umask 077 && $(PY) -c "import secrets; print(secrets.token_urlsafe(32))" > $@

# The signer (manage.py signer) holds the development CA's key and signs for the server on var/run/signer.sock;
# the mail worker (manage.py db_worker, docs/MAIL.md) runs beside the server and sends what the pages
# queue (to this terminal, in development, and kept for the page /dev/mail/); it stops with the server
# (Ctrl-C). Without --reload: restart `make run` after changing code that the mail tasks run.
run: $(VENV)/.installed var/dev-ca-passphrase messages
	$(DEV_ENV) $(PY) manage.py migrate --noinput -v 0
	$(DEV_ENV) $(PY) manage.py dev_setup
	@# SCEP's RA certificate (docs/DEVICES.md): the web side never makes one behind the signer
	$(DEV_ENV) ENROLL_SIGNER_SOCKET=$(SIGNER_SOCKET) $(PY) manage.py scep_ra
	@echo "Mail: nothing leaves this machine. The mail worker prints each message in this terminal;"
	@echo "      $(ENROLL_PUBLIC_URL)/dev/mail/ lists them (kept in var/dev-mail)."
	@echo "Users: DJANGO_DEBUG=true $(PY) manage.py create_user NAME --email ADDRESS --verified (password printed once)"
	mkdir -p var/run && chmod 700 var/run
	$(DEV_ENV) $(PY) manage.py signer --socket $(SIGNER_SOCKET) & signer=$$!; \
	$(WEB_ENV) $(PY) manage.py db_worker --no-reload & worker=$$!; \
	trap 'kill $$worker $$signer 2>/dev/null; wait $$worker $$signer 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	$(WEB_ENV) $(PY) manage.py runserver $(if $(findstring :,$(HOST)),[$(HOST)],$(HOST)):$(PORT)

system-packages:
	bash .ci/system-packages

# The German catalogue (enroll/locale; `manage.py makemessages` updates it), compiled with GNU gettext's
# msgfmt (Debian package gettext, in .ci/system-packages); the .mo files are build output, not in git.
messages: $(VENV)/.installed
	@if command -v msgfmt >/dev/null; then \
	    DJANGO_DEBUG=true $(PY) manage.py compilemessages --ignore '$(VENV)' --ignore var -v 0; \
	else echo "msgfmt (Debian package gettext) is missing: pages and mails stay in English" >&2; \
	    [ "$${ENROLL_REQUIRE_REAL_CLIENTS:-}" != 1 ]; fi

# After marking strings (gettext in Python, {% translate %} in templates): the catalogue brought up to date
# (enroll/management/commands/makemessages.py); translate what it added in django.po, then `make messages`.
catalogue: $(VENV)/.installed
	DJANGO_DEBUG=true $(PY) manage.py makemessages

test:
	@start=$$(date +%s); status=0; $(MAKE) --no-print-directory test-steps || status=$$?; \
	elapsed=$$(( $$(date +%s) - start )); \
	echo "make test: $$((elapsed / 60)) min $$((elapsed % 60)) s, $$([ $$status -eq 0 ] && echo passed || echo FAILED)"; \
	exit $$status

test-steps: system-packages $(VENV)/.installed messages lint typecheck pytest pytest-postgres $(if $(COVERAGE),coverage)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.installed
	$(PY) -m mypy .

# COVERAGE=1: each pass keeps its coverage data (.coverage.sqlite, .coverage.postgres) and `make coverage`
# reports both. Off by default: measuring slows the tests by about 45 % (make test took 17 min instead of
# about 14 on 2 cores), and CI's `make test` must stay within 15 minutes.
# The SQLite pass leaves the real-server tests (marker real_server) to the PostgreSQL pass when PostgreSQL
# is installed (tests/conftest.py, --defer-real-servers). The tests that need no real server run on
# TEST_WORKERS processes (pytest-xdist; each has its own test database and data folder), and so do the
# real-server tests that time nothing (each has its own ports and folders); the ones that measure time
# (marker timed: a revoked client refused within 5 s, the load test) run one at a time after them, so
# their timings measure the servers rather than a machine busy with other tests. The 15 slowest tests of
# each run are listed.
COVERAGE ?=
PYTEST_COV := $(if $(COVERAGE),--cov --cov-report=)
PYTEST_COV_APPEND := $(if $(COVERAGE),--cov-append)
TEST_WORKERS ?= 2
PYTEST_OPTS := --durations=15 --durations-min=2

pytest: $(VENV)/.installed messages
	rm -f .coverage.sqlite .coverage.sqlite.*
	COVERAGE_FILE=.coverage.sqlite $(PY) -m pytest -n $(TEST_WORKERS) --defer-real-servers $(PYTEST_OPTS) $(PYTEST_COV)

pytest-postgres: $(VENV)/.installed messages
	rm -f .coverage.postgres .coverage.postgres.*
	COVERAGE_FILE=.coverage.postgres $(PY) tests/pgserver.py -- sh -c '\
	    $(PY) -m pytest -n $(TEST_WORKERS) --real-servers without $(PYTEST_OPTS) $(PYTEST_COV) && \
	    $(PY) -m pytest --real-servers only $(PYTEST_OPTS) $(PYTEST_COV) $(PYTEST_COV_APPEND)'

# Coverage of ca, enroll and accounts over both passes (or the one that ran), after `make test COVERAGE=1`,
# merged into .coverage (the pass files are consumed); per-file figures with the missed lines in
# test-artifacts/coverage.txt.
coverage: $(VENV)/.installed
	@files=$$(ls .coverage.sqlite .coverage.postgres 2>/dev/null); \
	if [ -z "$$files" ]; then echo "coverage: no pass measured it" >&2; exit 1; fi; \
	$(PY) -m coverage combine --quiet $$files
	mkdir -p test-artifacts
	$(PY) -m coverage report --show-missing --sort=cover > test-artifacts/coverage.txt
	@for app in ca enroll accounts; do \
	    echo "coverage $$app: $$($(PY) -m coverage report --include="$$app/*" --format=total)%"; done
	@echo "coverage total: $$($(PY) -m coverage report --format=total)% (per file: test-artifacts/coverage.txt)"

BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(PY) -m bench --settings tests.settings $(BENCH_ARGS)
	$(PY) tests/pgserver.py -- $(PY) -m bench --settings tests.settings $(BENCH_ARGS)

fixtures: $(VENV)/.installed
	$(PY) tests/fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
