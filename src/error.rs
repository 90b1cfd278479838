//! The errors a request can end in, and the one table that maps them to HTTP statuses.
//! Every error body has the same shape: `{"error": {"code": "...", "message": "..."}}`.

use crate::codec::lines::RecordTooLong;
use crate::codec::media::MediaError;
use crate::codec::DecodeError;
use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("the request body is larger than the limit of {limit} bytes{}", given.map(|g| format!(" ({g} bytes sent)")).unwrap_or_default())]
    PayloadTooLarge { limit: usize, given: Option<u64> },
    #[error(transparent)]
    RecordTooLong(#[from] RecordTooLong),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("{0}")]
    BodyTimeout(String),
    #[error("{0}")]
    BadHeader(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("the model is not ready: {0}")]
    NotReady(String),
    #[error("the server is overloaded: {0}; retry later")]
    Overloaded(String),
    #[error("the request did not finish within the {0:.3} s timeout")]
    Timeout(f64),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Decode(e) if e.is_malformed() => 400,
            Self::Decode(_) => 422,
            Self::BodyRead(_) | Self::BadHeader(_) => 400,
            Self::BodyTimeout(_) => 408,
            Self::Unauthorized(_) => 401,
            Self::Media(MediaError::UnsupportedContentType(_)) => 415,
            Self::Media(MediaError::NotAcceptable(_)) => 406,
            // 413, not 400: the record may be well formed, just more than the server holds.
            Self::PayloadTooLarge { .. } | Self::RecordTooLong(_) => 413,
            Self::NotReady(_) | Self::Overloaded(_) => 503,
            Self::Timeout(_) => 504,
            Self::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.code(),
            Self::BodyRead(_) => "invalid_body",
            Self::BodyTimeout(_) => "body_timeout",
            Self::BadHeader(_) => "invalid_header",
            Self::Unauthorized(_) => "unauthorized",
            Self::Media(MediaError::UnsupportedContentType(_)) => "unsupported_content_type",
            Self::Media(MediaError::NotAcceptable(_)) => "not_acceptable",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RecordTooLong(_) => "record_too_large",
            Self::NotReady(_) => "not_ready",
            Self::Overloaded(_) => "overloaded",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal_error",
        }
    }

    /// Seconds a client should wait before retrying, for statuses where retrying helps.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::Overloaded(_) => Some(1),
            Self::NotReady(_) => Some(5),
            _ => None,
        }
    }

    /// The JSON body. SageMaker copies at most 2048 characters of it to the caller, so the
    /// message is cut to fit.
    pub fn body(&self) -> Vec<u8> {
        let mut message = self.to_string();
        if message.len() > 1900 {
            let mut cut = 1900;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        serde_json::json!({"error": {"code": self.code(), "message": message}})
            .to_string()
            .into_bytes()
    }
}

impl ApiError {
    /// An engine error as the client sees it; a deadline names the configured timeout.
    pub fn from_engine(e: EngineError, timeout: std::time::Duration) -> Self {
        match e {
            EngineError::Overloaded(_) => Self::Overloaded(e.to_string()),
            EngineError::Stopped => Self::NotReady(e.to_string()),
            EngineError::DeadlineExceeded => Self::Timeout(timeout.as_secs_f64()),
            EngineError::Run(m) => Self::Internal(format!("inference failed: {m}")),
        }
    }
}
