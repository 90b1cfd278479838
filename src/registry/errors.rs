//! What a registry operation can end in, and the status SageMaker expects for each.

#[derive(Clone, Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("model {0:?} is already loaded; unload it first (DELETE /models/{0})")]
    Conflict(String),
    #[error("model {name:?} needs about {needs_mib:.1} MiB and the models' memory budget is {budget_mib:.1} MiB (--model-memory-mb)")]
    Memory {
        name: String,
        needs_mib: f64,
        budget_mib: f64,
    },
    /// The model's files are wrong (or missing): the client's URL or the repository's content.
    #[error("model {name:?} failed to load from {url}: {why}")]
    Load {
        name: String,
        url: String,
        why: String,
    },
    /// A load failed for lack of memory or of the device: SageMaker should unload others.
    #[error("model {name:?} could not be loaded for lack of resources: {why}")]
    Resources { name: String, why: String },
    #[error("{0}")]
    Invalid(String),
    /// Worth retrying shortly: other loads hold the budget, a listing failed, too many loads.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Internal(String),
    #[error("the server is shutting down")]
    Closed,
}

impl RegistryError {
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            // SageMaker unloads unused models when a load answers 507.
            Self::Memory { .. } | Self::Resources { .. } => 507,
            Self::Load { .. } | Self::Invalid(_) => 400,
            Self::Busy(_) | Self::Closed => 503,
            Self::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "model_not_found",
            Self::Conflict(_) => "model_already_loaded",
            Self::Memory { .. } | Self::Resources { .. } => "insufficient_memory",
            Self::Load { .. } => "model_load_failed",
            Self::Invalid(_) => "invalid_model_request",
            Self::Busy(_) => "busy",
            Self::Internal(_) => "internal_error",
            Self::Closed => "not_ready",
        }
    }

    /// Seconds to wait before retrying, where retrying helps.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, Self::Busy(_) | Self::Closed).then_some(2)
    }
}
