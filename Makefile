# The two commands a fresh machine needs (see README):
#   make serve   serve the bundled example model on port 8080
#   make test    install what the tests need and run them all

MODEL ?= examples/gender/models/pipeline
ORT_LIB := .ort/lib/libonnxruntime.so.1.31.1

.PHONY: serve test ort build lint examples

$(ORT_LIB):
	scripts/install-onnxruntime.sh

ort: $(ORT_LIB)

build: ort
	cargo build --release --locked

serve: build
	./target/release/mlapp serve --model-dir $(MODEL)

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

test: ort lint
	cargo test --locked

# Regenerates the example data, models, payloads and golden outputs (needs Python + pip).
examples:
	python3 -m venv .venv-examples
	.venv-examples/bin/pip install -q -r examples/gender/requirements.txt
	.venv-examples/bin/python examples/gender/generate.py
