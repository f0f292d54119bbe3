# The two commands the README gives: `make run` (the example app) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test setup-test lint typecheck pytest conformance schema clean bench bench-quick setup-bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Gateway + in-process echo/chat upstream + console page on http://127.0.0.1:8000 (no Redis needed).
run: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[example]"
	$(BIN)/python -m example_app

# Installs everything the suite needs (Python packages; Debian's chromium, nginx, publicsuffix; Redis), then lints, type-checks
# and runs every test, the Autobahn conformance cases 1-10 included.
test: setup-test lint typecheck pytest

setup-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	./scripts/install-chromium.sh
	./scripts/install-nginx.sh
	./scripts/install-publicsuffix.sh
	./scripts/ensure-redis.sh

lint:
	$(BIN)/ruff check src tests example_app scripts bench
	$(BIN)/ruff format --check src tests example_app scripts bench
	$(BIN)/lint-imports  # the layers of docs/architecture.md: no import runs back up, no circle

typecheck:
	$(BIN)/mypy

# Three workers on two cores: most of a test's time is waiting on sockets and processes (2026-12-05:
# two workers took 11 min, three 8). Whole modules go to one worker (--dist loadfile), so module
# fixtures such as the bench results are built once. The 25 slowest tests are listed at the end: the suite
# took 15 min in CI on 2026-12-06 (more tests, a slower VM), where it should stay well under 10. Four workers
# (2026-12-07): 1,047 s against three's 1,092 s, the CPU 91 % busy against 82 %, and two tests failed on timing
# (Autobahn 5.7/5.8 echoed too late through the splice, a keepalive): not worth it.
# Bytecode written first, and by pytest: where PYTHONDONTWRITEBYTECODE is set (this machine's environment sets
# it), every gateway process the tests start compiled the package again (test_run_cli.py's processes: 32.8 CPU-s
# against 22.9 with it compiled), and every worker rewrote the assertions of all 500 modules at each run's
# collection (19.7 CPU-s against 7.5 from pytest's cache of them).
pytest:
	$(BIN)/python -m compileall -q src tests bench example_app scripts > /dev/null
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -n 3 --dist loadfile --durations=25

# The full side-by-side Autobahn run (cases 1-10, both uvicorn implementations, four targets).
conformance: $(BIN)/python
	$(BIN)/python scripts/conformance.py

# The benchmarks (docs/performance.md): every default path and scenario, interleaved rounds (<= 20 minutes), then the
# 30-minute soak across three gateway processes (bench/soak.py; docs/performance.md has its figures).
# Writes bench/results/results.{json,png} and the table in docs/performance.md.
bench: setup-bench
	$(BIN)/python -m bench
	$(BIN)/python -m bench.soak --out bench/results/soak.json

# A smoke run of the same (a few seconds per scenario) into reports/bench-quick/.
bench-quick: setup-bench
	$(BIN)/python -m bench --quick
	$(BIN)/python -m bench.soak --quick --out reports/bench-quick/soak.json

setup-bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"
	./scripts/install-nginx.sh

schema: $(BIN)/python
	$(BIN)/asgi-ws-gateway schema > schema/gateway.schema.json
	cp schema/gateway.schema.json src/asgi_ws_gateway/gateway.schema.json  # shipped in the wheel

clean:
	rm -rf $(VENV) reports .mypy_cache .pytest_cache .ruff_cache
