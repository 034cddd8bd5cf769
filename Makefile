# The whole set-up on a fresh machine is `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/buf/node_modules/.bin/buf
PROTOS := $(shell find proto -name '*.proto' | sort)

.PHONY: install run migrate test lint proto proto-check buf-lint bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools/buf @bufbuild/buf@$(BUF_VERSION)

## Serve on :50051 with the embedded SQLite database (migrated first).
run: $(STAMP)
	$(BIN)/onboarding migrate
	$(BIN)/onboarding serve

migrate: $(STAMP)
	$(BIN)/onboarding migrate

## Everything CI checks: stubs up to date, buf lint, ruff, the test suite.
test: $(STAMP) proto-check buf-lint lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

## Our RPCs against a bare grpc.aio server on SQLite and PostgreSQL: table + bench/results/latest.json.
bench: $(STAMP)
	$(BIN)/python -m bench.run

## Mixed traffic for 10 minutes; RSS must grow less than 10% after the first minute.
soak: $(STAMP)
	$(BIN)/python -m bench.soak --minutes 10

buf-lint: $(BUF)
	$(BUF) lint

## Regenerate the Python stubs (with .pyi type stubs) from proto/.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto \
		--python_out=src --grpc_python_out=src \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=src \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=src \
		$(PROTOS)

## Fail when the committed stubs differ from what `make proto` makes.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -Iproto \
		--python_out=$$tmp --grpc_python_out=$$tmp \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=$$tmp \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=$$tmp \
		$(PROTOS) && \
	for f in $$(cd $$tmp && find . -type f -name '*_pb2*'); do \
		cmp -s $$tmp/$$f src/$$f || { echo "stale stub: src/$$f (run make proto)"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "stubs up to date"

clean:
	rm -rf $(VENV) .tools .pytest_cache onboarding.db*
