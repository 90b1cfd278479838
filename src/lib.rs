//! mlapp: serves ONNX models over the SageMaker container contract.
//!
//! The request path: HTTP body → `codec::decode` (typed columns per model input) →
//! `engine` (a bounded, batching queue in front of ONNX Runtime sessions on worker threads) →
//! `model::OutputPlan` (classifier / regressor / raw) → `codec::encode` → HTTP.

pub mod batch;
pub mod codec;
pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod inspect;
pub mod model;
pub mod monitor;
pub mod package;
pub mod pipeline;
pub mod portal;
pub mod registry;
pub mod storage;
pub mod stream;
pub mod transform;
