# Two commands: `make demo` and `make test`. Both set up .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
GENERATED := frameproof/v1/farm_pb2.py

.PHONY: demo test lint proto clean

demo: $(GENERATED)
	$(VENV)/bin/frameproof demo

test: $(GENERATED)
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# proto/ is the contract; the Python code is generated from it, old output first deleted.
proto $(GENERATED): $(STAMP) $(wildcard proto/frameproof/v1/*.proto)
	rm -rf frameproof/v1
	mkdir -p frameproof/v1
	touch frameproof/v1/__init__.py
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. \
		proto/frameproof/v1/*.proto

clean:
	rm -rf frameproof/v1 .pytest_cache
