# 算力商城: the README's commands. `make run` starts the platform embedded; `make test` runs lint and the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
REQUIREMENTS := requirements/base.txt
TEST_REQUIREMENTS := requirements/dev.txt

.PHONY: run test serve setup setup-dev lint lock messages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-base: $(REQUIREMENTS) | $(BIN)/python
	@echo "==> Installing the locked Python dependencies ($(REQUIREMENTS))"
	$(BIN)/pip install --progress-bar on --require-hashes -r $(REQUIREMENTS)
	touch $@

$(VENV)/.installed-dev: $(TEST_REQUIREMENTS) | $(BIN)/python
	@echo "==> Installing the locked Python dependencies ($(TEST_REQUIREMENTS))"
	$(BIN)/pip install --progress-bar on --require-hashes -r $(TEST_REQUIREMENTS)
	touch $@ $(VENV)/.installed-base

node_modules/.installed: package.json package-lock.json $(VENV)/.installed-base
	@echo "==> Installing the front-end assets from the npm registry (package-lock.json)"
	$(BIN)/npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed-base node_modules/.installed
	@echo "==> Collecting static files"
	$(BIN)/python manage.py collectstatic --noinput -v 0

setup-dev: $(VENV)/.installed-dev node_modules/.installed
	@echo "==> Collecting static files"
	$(BIN)/python manage.py collectstatic --noinput -v 0

run: setup
	PORT=$(PORT) ./scripts/run-embedded.sh

serve: setup
	PORT=$(PORT) ./scripts/serve.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

test: setup-dev lint
	$(BIN)/pytest $(PYTEST_ARGS)

lock:
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -q -o $(REQUIREMENTS)
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -q -o $(TEST_REQUIREMENTS)

messages: $(VENV)/.installed-dev
	$(BIN)/python manage.py makemessages -l zh_Hans --no-location --no-obsolete --ignore=.venv --ignore=node_modules --ignore=staticfiles
	$(BIN)/python manage.py compilemessages -l zh_Hans --ignore=.venv

clean:
	rm -rf $(VENV) node_modules staticfiles
