//! What the server reports about itself.

pub mod metrics;

pub use metrics::{Live, Metrics, ModelInfo, Route, Stage};
