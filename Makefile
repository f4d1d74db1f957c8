# echobench: two commands do everything on a fresh machine.
#   make bench   run the standard profile and write the report
#   make test    lint and run the test suite
# Both create .venv and install the project (editable, with dev deps) when it is missing or stale.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= standard
RESUME  ?=
CLUSTER ?=
RUN     ?=
A       ?=
B       ?=

.PHONY: help venv test lint typecheck pytest bench bench-quick bench-full bench-loadgen bench-servers \
        report compare check-report native clean

help:
	@echo "make bench [PROFILE=standard|quick|full|path.toml] [RESUME=results/<run>] [CLUSTER=tcp://host:8786]"
	@echo "make bench-quick | bench-full | bench-loadgen | bench-servers"
	@echo "make test          ruff + mypy + pytest"
	@echo "make report RUN=results/<run>   make compare A=<run> B=<run>   make check-report RUN=..."

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

# C programs: the book's servers in C (c-process, c-thread, c-epoll, c-uring), the floor for fork
# and pipe round trips, and the C load generator; skipped with one line when there is no C
# compiler. c-uring needs liburing's headers: installed here when we are root on Debian, else
# servers/c/Makefile skips it with one line.
native:
	@if [ ! -f /usr/include/liburing.h ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburing-dev >/dev/null 2>&1 \
	   || (apt-get update -qq >/dev/null 2>&1 \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburing-dev >/dev/null 2>&1)) \
	  || echo "native: could not install liburing-dev: c-uring will be skipped"; fi
	@if command -v $${CC:-cc} >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory -C microbench/c && $(MAKE) --no-print-directory -C loadgen/native \
	  && $(MAKE) --no-print-directory -C servers/c && $(MAKE) --no-print-directory -C bench/native; \
	else echo "native: no C compiler (cc) found: the C servers and C reference figures will be skipped"; fi

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy records servers loadgen bench analysis microbench

pytest: $(STAMP) native
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP) native
	$(PY) -m bench run --profile $(PROFILE) $(if $(RESUME),--resume $(RESUME)) \
	  $(if $(CLUSTER),--cluster $(CLUSTER))

bench-quick:
	@$(MAKE) --no-print-directory bench PROFILE=quick

bench-full:
	@$(MAKE) --no-print-directory bench PROFILE=full

bench-loadgen: $(STAMP) native
	$(PY) -m bench.selfbench

# Every Python server against its minimal twin (bench/twins), C client, alternated (issue 13).
bench-servers: $(STAMP) native
	$(PY) -m bench twins

report: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make report RUN=results/<run>" >&2; exit 2; }
	$(PY) -m analysis report $(RUN)

compare: $(STAMP)
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make compare A=<run> B=<run>" >&2; exit 2; }
	$(PY) -m analysis compare $(A) $(B) --chart $(B)/compare-vs-$(notdir $(patsubst %/,%,$(A))).png

check-report: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make check-report RUN=results/<run>" >&2; exit 2; }
	$(PY) -m analysis check-report $(RUN)

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	-$(MAKE) --no-print-directory -C microbench/c clean
	-$(MAKE) --no-print-directory -C loadgen/native clean
	-$(MAKE) --no-print-directory -C bench/native clean
	-$(MAKE) --no-print-directory -C servers/c clean
