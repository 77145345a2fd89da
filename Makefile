# The two commands (README): `make demo` sets up and runs the default job; `make test`
# runs the test suite. Both create .venv and install parity with every runtime first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test heavy lint bench clean

$(STAMP): pyproject.toml setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	@# editable_mode=compat: the repository on sys.path (a .pth line) rather than setuptools'
	@# import hook, which a user project's own parity/ folder (what `parity init` makes)
	@# shadows as a namespace package whenever the working directory is on sys.path.
	$(VENV)/bin/python -m pip install --progress-bar off -e '.[dev]' \
	  --config-settings editable_mode=compat
	@# Headless Chromium renders the HTML report in tests; without it that one test skips.
	@command -v chromium >/dev/null || (apt-get install -y -q chromium >/dev/null 2>&1 \
	  || echo "note: chromium not installed (apt-get install -y chromium); the HTML render test will skip")
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/parity run

# Two pytest-xdist workers, a test file's tests on one (its module fixtures build once), one
# artifact cache for both (bench/suite.md: 15.0 -> 9.5 min on 2 cores). `-n 0` runs serially.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile

heavy: $(STAMP)
	$(VENV)/bin/python -m pytest -m heavy

lint: $(STAMP)
	$(VENV)/bin/ruff check parity tests bench fixtures tools
	$(VENV)/bin/ruff format --check parity tests bench fixtures tools
	$(VENV)/bin/mypy parity
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(VENV)/bin/python bench/noise_floor.py
	$(VENV)/bin/python bench/bench_onnx.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
