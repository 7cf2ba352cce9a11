# The two commands a newcomer needs. Both set up .venv first (only when pyproject.toml changed).
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test test-fast test-postgres lint setup

run: $(STAMP)
	$(PY) main.py $(ARGS)

# Everything: the import contracts and ruff (pyproject.toml), then every test.
test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

# The fast subset (about 45 s): no trained model, LFW, subprocesses, wheel builds or Qt app.
test-fast: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m "not slow"

# The fleet tests against a real PostgreSQL server (started by the tests; skipped without one).
test-postgres: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m postgres

lint: $(STAMP)
	.venv/bin/lint-imports
	.venv/bin/ruff check .

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)
