# The two commands a newcomer needs. Both set up .venv first (only when pyproject.toml changed).
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test setup

run: $(STAMP)
	$(PY) main.py $(ARGS)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)
