//! Integration tests: the real binary, real ONNX Runtime, a real HTTP client, loopback only.
//! ONNX Runtime must be installed first (`scripts/install-onnxruntime.sh`; `make test` does it).

mod batch;
mod batching;
mod common;
mod errors;
mod fixed_batch;
mod golden;
mod hostile;
mod large;
mod lifecycle;
mod metrics;
mod reload;
mod scripts;
mod sources;
mod transform;
mod warmup;
