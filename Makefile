# The two commands a fresh machine needs (see README):
#   make serve   serve the bundled example model on port 8080
#   make test    install what the tests need and run them all

MODEL ?= examples/gender/models/pipeline
ORT_LIB := .ort/lib/libonnxruntime.so.1.31.1
PROMTOOL := .tools/bin/promtool
MOTO := .tools/moto/bin/moto_server
APICLIENTS := .tools/apiclients/bin/python
SHELLCHECK := /usr/bin/shellcheck
CHROMIUM := /usr/bin/chromium
DENY := .tools/bin/cargo-deny

.PHONY: serve test test-rust test-container container-images ort build lint examples bench bench-batch soak fuzz

$(ORT_LIB):
	scripts/install-onnxruntime.sh

$(PROMTOOL):
	scripts/install-promtool.sh

$(MOTO):
	scripts/install-moto.sh

# Other projects' API clients (tritonclient, openapi-spec-validator, schemathesis), from PyPI.
$(APICLIENTS): scripts/install-api-clients.sh
	scripts/install-api-clients.sh

# cargo-deny, built from crates.io (no usable prebuilt binary is in the registries here).
$(DENY): scripts/install-cargo-deny.sh
	scripts/install-cargo-deny.sh

# Debian's PostgreSQL, for the portal's tests (each starts its own server as user postgres).
POSTGRES := .tools/postgres.stamp
$(POSTGRES): scripts/install-postgres.sh
	scripts/install-postgres.sh
	mkdir -p .tools && touch $@

# Debian's shellcheck, for the test that keeps the shell scripts clean.
$(SHELLCHECK):
	apt-get install -y -qq shellcheck || (apt-get update -qq && apt-get install -y -qq shellcheck)

# Debian's Chromium, for the test that renders the monitoring report headless.
$(CHROMIUM):
	apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)

ort: $(ORT_LIB)

build: ort
	cargo build --release --locked

serve: build
	./target/release/mlapp serve --model-dir $(MODEL) --state-dir .mlapp-state

lint: $(DENY)
	cargo fmt --check
	cargo clippy --locked --all-targets --test container -- -D warnings
	$(DENY) --locked check --hide-inclusion-graph licenses bans sources

test: test-rust test-container

test-rust: ort $(PROMTOOL) $(MOTO) $(APICLIENTS) $(SHELLCHECK) $(CHROMIUM) $(POSTGRES) lint
	cargo test --locked

# The image users run, with a real Docker Engine (tests/container): built from the Dockerfile,
# served, stopped, and three replicas behind nginx with one stopped and restarted under load.
container-images:
	container/build-images.sh mlapp:test mlapp-nginx:test mlapp-gpu:test

# Without a reachable Docker Engine these tests cannot run at all: that is said loudly, and the
# rest of `make test` still counts.
test-container:
	@if ! docker info >/dev/null 2>&1; then \
		echo "!!! CONTAINER TESTS NOT RUN: no Docker Engine is reachable here (docker info failed)."; \
		echo "!!! The image, its drain, the GPU image and the scale-out behind nginx are NOT verified."; \
		exit 0; \
	fi; \
	$(MAKE) container-images && \
	MLAPP_IMAGE=mlapp:test MLAPP_NGINX_IMAGE=mlapp-nginx:test MLAPP_GPU_IMAGE=mlapp-gpu:test \
		cargo test --locked --test container -- --test-threads 1 --nocapture

# The benchmark against the reference stacks (bench/README.md); not part of `make test`.
bench: ort
	bench/run.sh

# 30 minutes of S1 load with a SIGHUP reload every minute; RSS and answers checked (bench/soak.py).
soak: ort
	bench/soak.sh

# Batch Transform figures: mlapp transform on 1M rows, a 100 MB body (bench/batch.py).
bench-batch: ort
	bench/batch.sh

# Coverage-guided fuzzing of the parsers (FUZZING.md); not part of `make test`. Each target
# runs FUZZ_SECONDS, FUZZ_JOBS at a time; FUZZ_TARGETS picks some (default: all).
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?=
fuzz:
	scripts/install-fuzz.sh
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) scripts/fuzz.sh $(FUZZ_TARGETS)

# Regenerates the example data, models, payloads and golden outputs (needs Python + pip).
examples:
	python3 -m venv .venv-examples
	.venv-examples/bin/pip install -q -r examples/gender/requirements.txt
	.venv-examples/bin/python examples/gender/generate.py
