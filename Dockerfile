# mlapp, CPU image: one Rust binary and ONNX Runtime's CPU libraries on a slim Debian.
#
#   docker build -t mlapp .
#   docker run -p 8080:8080 -v /path/to/model:/opt/ml/model:ro --stop-timeout 30 mlapp serve
#
# The base images are build arguments. Where no registry is reachable,
# container/base-images.sh makes images of these names from Debian's packages. The GPU image
# is container/Dockerfile.gpu.
ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
# PEM certificates to trust while fetching crates and the ONNX Runtime wheel, for builds behind
# a TLS-inspecting proxy. Only this stage sees them; the image that ships does not.
ARG EXTRA_CA_CERTS=""
# Debian's rustc-web (bookworm-security) is recent enough, so no installer is fetched from
# outside the package registries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates rustc-web cargo-web gcc libc6-dev binutils python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" >/usr/local/share/ca-certificates/build-extra.crt \
        && update-ca-certificates; \
    fi
ENV CARGO_HOME=/cargo \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    CARGO_TERM_COLOR=never
WORKDIR /src

# ONNX Runtime from the pinned PyPI wheel, its sha256 checked by the script.
COPY scripts/install-onnxruntime.sh scripts/
RUN scripts/install-onnxruntime.sh /ort

# Dependencies in a layer of their own: rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY bench/trivial_http.rs bench/ort_floor.rs bench/
RUN mkdir src && echo 'fn main() {}' >src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

COPY src src
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked \
    && strip target/release/mlapp \
    && target/release/mlapp --version

FROM ${RUNTIME_IMAGE}
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true \
      org.opencontainers.image.title="mlapp" \
      org.opencontainers.image.description="Serves ONNX tabular models over the SageMaker container contract" \
      org.opencontainers.image.licenses="Apache-2.0"
# CA certificates for S3 over TLS; nothing else is installed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /ort/ /opt/onnxruntime/lib/
COPY --from=build /src/target/release/mlapp /usr/local/bin/mlapp
COPY serve /usr/local/bin/serve
# The prediction-job portal's embedded store (SQLite) lives in /var/lib/mlapp: one container
# needs no setup; replicas that share jobs set MLAPP_DB_URL=postgres://... instead.
RUN mkdir -p /var/lib/mlapp
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.1.31.1 \
    MLAPP_STATE_DIR=/var/lib/mlapp \
    RUST_LOG=info,ort=warn
EXPOSE 8080
# SageMaker runs `docker run IMAGE serve`, which replaces CMD; `serve` execs mlapp, so mlapp
# is PID 1 and receives SIGTERM itself. Runs as root, as SageMaker expects.
CMD ["serve"]
