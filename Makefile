# The two commands a fresh machine needs (see README):
#   make serve   serve the bundled example model on port 8080
#   make test    install what the tests need and run them all

MODEL ?= examples/gender/models/pipeline
ORT_LIB := .ort/lib/libonnxruntime.so.1.31.1
PROMTOOL := .tools/bin/promtool
MOTO := .tools/moto/bin/moto_server
SHELLCHECK := /usr/bin/shellcheck

.PHONY: serve test ort build lint examples bench bench-batch

$(ORT_LIB):
	scripts/install-onnxruntime.sh

$(PROMTOOL):
	scripts/install-promtool.sh

$(MOTO):
	scripts/install-moto.sh

# Debian's shellcheck, for the test that keeps the shell scripts clean.
$(SHELLCHECK):
	apt-get install -y -qq shellcheck || (apt-get update -qq && apt-get install -y -qq shellcheck)

ort: $(ORT_LIB)

build: ort
	cargo build --release --locked

serve: build
	./target/release/mlapp serve --model-dir $(MODEL)

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

test: ort $(PROMTOOL) $(MOTO) $(SHELLCHECK) lint
	cargo test --locked

# The benchmark against the reference stacks (bench/README.md); not part of `make test`.
bench: ort
	bench/run.sh

# Batch Transform figures: mlapp transform on 1M rows, a 100 MB body (bench/batch.py).
bench-batch: ort
	bench/batch.sh

# Regenerates the example data, models, payloads and golden outputs (needs Python + pip).
examples:
	python3 -m venv .venv-examples
	.venv-examples/bin/pip install -q -r examples/gender/requirements.txt
	.venv-examples/bin/python examples/gender/generate.py
