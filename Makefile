# The README's commands. Each target sets itself up: a .venv with the project and its test tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: test test-unit check lint demo sandbox bench clean setup dist man

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library("magic") else 1)' \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq libmagic1 >/dev/null; } \
	  || { echo "libmagic is missing: sudo apt-get install -y libmagic1" >&2; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) \
	  || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); } \
	  || { echo "cannot create a venv: sudo apt-get install -y python3-venv" >&2; exit 1; }
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@# The fleet's tests start a real PostgreSQL server; they skip, saying so, where it is missing.
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
	  || echo "PostgreSQL is missing: its tests will be skipped (sudo apt-get install -y postgresql)" >&2
	@# The status page's tests drive Debian's headless Chromium; they skip, saying so, without it.
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "Chromium is missing: the page's browser tests will be skipped (sudo apt-get install -y chromium chromium-driver)" >&2
	@rm -f $(VENV)/.installed-* && touch $@

check: $(STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/mypy --strict daemon

test: check
	$(BIN)/python -m pytest -n 2

# The fast tier: no server, no subprocess (a few seconds); `make test` runs every tier.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# An sdist and a wheel in dist/ (the page, the units and config.example.toml inside).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist

# The man page, made from the command line's own --help texts: man/tlwatch.1 (man -l to read).
man: $(STAMP)
	mkdir -p man
	$(BIN)/argparse-manpage --module tlwatch.cli --function build_parser --prog tlwatch \
	  --project-name tlwatch --version "$$($(BIN)/python -c 'import tlwatch; print(tlwatch.__version__)')" \
	  --manual-title "tlwatch manual" --output man/tlwatch.1

demo: $(STAMP)
	$(BIN)/python -m tlwatch.demo

sandbox: $(STAMP)
	$(BIN)/tlwatch sandbox

bench: $(STAMP)
	$(BIN)/python bench/direct_upload.py
	$(BIN)/python bench/multipart_memory.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/idle_cpu.py
	$(BIN)/python bench/small_files.py
	$(BIN)/python bench/big_tree.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/bandwidth.py
	$(BIN)/python bench/hash_while_uploading.py
	$(BIN)/python bench/store_trips.py
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/postgres.py
	$(BIN)/python bench/page_idle.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache daemon/*.egg-info build dist man
