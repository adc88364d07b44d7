# `make demo`, `make test` and `make docs` set up their own virtual environment (.venv) first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/omniglot_protonet.py --output-dir runs/omniglot_protonet
	for figure in history episode embeddings accuracy_vs_shots; do \
		cp runs/omniglot_protonet/$$figure.png docs/images/demo_$$figure.png; done

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadgroup

docs: $(STAMP)
	$(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) runs site *.egg-info
