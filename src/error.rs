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
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
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
            Self::Registry(e) => e.status(),
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
            Self::Registry(e) => e.code(),
            Self::Internal(_) => "internal_error",
        }
    }

    /// Seconds a client should wait before retrying, for statuses where retrying helps.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::Overloaded(_) => Some(1),
            Self::NotReady(_) => Some(5),
            Self::Registry(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The JSON body. SageMaker copies at most 2048 characters of it to the caller, so the
    /// message is cut to fit. The budget is spent on the escaped text, since a quote or a
    /// control character takes two to six bytes once escaped.
    pub fn body(&self) -> Vec<u8> {
        fit(
            &self.to_string(),
            |message| serde_json::json!({"error": {"code": self.code(), "message": message}}),
        )
    }

    /// The Open Inference Protocol's error object, `{"error": "<message>"}`, cut to the same
    /// size.
    pub fn v2_body(&self) -> Vec<u8> {
        fit(
            &self.to_string(),
            |message| serde_json::json!({"error": message}),
        )
    }
}

/// `json(message)` as bytes, with the message cut (ending in "...") so that the whole fits
/// 2048 bytes.
fn fit(message: &str, json: impl Fn(&str) -> serde_json::Value) -> Vec<u8> {
    const LIMIT: usize = 2048;
    let bytes = |m: &str| json(m).to_string().into_bytes();
    let whole = bytes(message);
    if whole.len() <= LIMIT {
        return whole;
    }
    let mut budget = LIMIT.saturating_sub(bytes("...").len());
    let mut cut = 0;
    for (i, c) in message.char_indices() {
        // The escaped width of one character, as serde_json writes it.
        let width = serde_json::to_string(&c).map_or(6, |s| s.len() - 2);
        if width > budget {
            break;
        }
        budget -= width;
        cut = i + c.len_utf8();
    }
    bytes(&format!("{}...", &message[..cut]))
}

impl ApiError {
    /// An engine error as the client sees it; a deadline names the configured timeout.
    pub fn from_engine(e: EngineError, timeout: std::time::Duration) -> Self {
        match e {
            EngineError::Overloaded(_) => Self::Overloaded(e.to_string()),
            EngineError::Stopped => Self::NotReady(e.to_string()),
            EngineError::DeadlineExceeded => Self::Timeout(timeout.as_secs_f64()),
            EngineError::Run(m) => Self::Internal(format!("inference failed: {m}")),
            EngineError::Rows(m) => Self::Decode(crate::codec::DecodeError::Shape(m)),
        }
    }
}

/// The text a panic was raised with (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_fits_sagemakers_limit_whatever_the_message() {
        // Review L7: the message was cut to 1900 bytes before escaping, and quotes or control
        // characters then doubled (or sextupled) it past 2048.
        let messages = [
            "\"".repeat(3000),
            "\u{1}".repeat(3000),
            "\\".repeat(1500) + &"é".repeat(1000),
            "a".repeat(2040) + "€€€€€€€€",
            "ok".into(),
            "é".repeat(5000),
            "\u{7f}\n\t".repeat(900),
        ];
        for m in messages {
            let e = ApiError::Internal(m.clone());
            // The Open Inference Protocol's body is cut to the same size.
            let v2 = e.v2_body();
            assert!(v2.len() <= 2048, "{} bytes", v2.len());
            let v2: serde_json::Value = serde_json::from_slice(&v2).expect("valid JSON");
            let v2 = v2["error"].as_str().unwrap();
            assert!(
                v2 == m || m.starts_with(v2.trim_end_matches("...")),
                "{v2:?}"
            );
            let body = e.body();
            assert!(body.len() <= 2048, "{} bytes", body.len());
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(v["error"]["code"], "internal_error");
            let got = v["error"]["message"].as_str().unwrap();
            if got == m {
                continue;
            }
            let kept = got.strip_suffix("...").expect("a cut message ends in ...");
            assert!(m.starts_with(kept) && !kept.is_empty(), "{got:?}");
            // Cut no shorter than needed: one more character would not have fitted.
            let next = m[kept.len()..].chars().next().unwrap();
            let longer = serde_json::json!({"error": {"code": "internal_error",
                "message": format!("{kept}{next}...")}});
            assert!(longer.to_string().len() > 2048);
        }
    }
}
