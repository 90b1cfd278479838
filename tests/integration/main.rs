//! Integration tests: the real binary, real ONNX Runtime, a real HTTP client, loopback only.
//! ONNX Runtime must be installed first (`scripts/install-onnxruntime.sh`; `make test` does it).

mod auth;
mod batch;
mod batching;
mod clients;
mod common;
mod decoding;
mod errors;
mod fixed_batch;
mod functions;
mod golden;
mod hostile;
mod isolation;
mod large;
mod lifecycle;
mod limits;
mod metrics;
mod models;
mod monitoring;
mod openapi;
mod portal;
mod portal_cli;
mod portal_fuzz;
mod reload;
mod replicas;
mod report_page;
mod scripts;
mod shadow;
mod sources;
mod streaming;
mod tls;
mod transform;
mod v2;
mod warmup;
