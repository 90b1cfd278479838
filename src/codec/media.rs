//! Content negotiation: which decoder a Content-Type selects and which encoder an Accept list
//! selects. One exhaustive match each; a rejection lists what is accepted.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Csv { header: bool },
    Json,
    JsonLines,
    Npy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Csv,
    JsonLines,
}

impl OutputFormat {
    pub fn mime(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv",
            Self::JsonLines => "application/jsonlines",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime())
    }
}

pub const ACCEPTED_CONTENT_TYPES: &str =
    "text/csv, application/json, application/jsonlines, application/x-npy";
pub const ACCEPTED_ACCEPT_TYPES: &str = "application/json, text/csv, application/jsonlines";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("unsupported Content-Type \"{0}\"; mlapp accepts {ACCEPTED_CONTENT_TYPES}")]
    UnsupportedContentType(String),
    #[error(
        "cannot answer in any type of Accept \"{0}\"; mlapp answers in {ACCEPTED_ACCEPT_TYPES}"
    )]
    NotAcceptable(String),
}

/// Splits `type/subtype; k=v; ...` into the lower-cased essence and its parameters.
fn split_media(raw: &str) -> (String, Vec<(String, String)>) {
    let mut parts = raw.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_ascii_lowercase(),
            ))
        })
        .collect();
    (essence, params)
}

fn input_of(essence: &str, params: &[(String, String)], csv_header: bool) -> Option<InputFormat> {
    Some(match essence {
        "text/csv" | "application/csv" => InputFormat::Csv {
            header: csv_header || params.iter().any(|(k, v)| k == "header" && v == "present"),
        },
        "application/json" => InputFormat::Json,
        "application/jsonlines"
        | "application/x-jsonlines"
        | "application/jsonl"
        | "application/x-ndjson"
        | "application/json-lines" => InputFormat::JsonLines,
        "application/x-npy" | "application/npy" => InputFormat::Npy,
        _ => return None,
    })
}

/// The decoder for a request. A missing Content-Type, or `application/octet-stream` (what
/// AWS SDKs send when the caller set none), means `default`, unless the body is an .npy file.
pub fn input_format(
    content_type: Option<&str>,
    default: &str,
    csv_header: bool,
    body_prefix: &[u8],
) -> Result<InputFormat, MediaError> {
    let raw = content_type.map(str::trim).filter(|s| !s.is_empty());
    let (essence, params) = split_media(raw.unwrap_or(default));
    if essence == "application/octet-stream" {
        if body_prefix.starts_with(super::npy::MAGIC) {
            return Ok(InputFormat::Npy);
        }
        let (essence, params) = split_media(default);
        return input_of(&essence, &params, csv_header)
            .ok_or_else(|| MediaError::UnsupportedContentType(default.to_string()));
    }
    input_of(&essence, &params, csv_header)
        .ok_or_else(|| MediaError::UnsupportedContentType(raw.unwrap_or(default).to_string()))
}

fn output_of(essence: &str) -> Option<OutputFormat> {
    Some(match essence {
        "application/json" => OutputFormat::Json,
        "text/csv" | "application/csv" => OutputFormat::Csv,
        "application/jsonlines"
        | "application/x-jsonlines"
        | "application/jsonl"
        | "application/x-ndjson"
        | "application/json-lines" => OutputFormat::JsonLines,
        _ => return None,
    })
}

/// Parses the server's default answer type (`SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`).
pub fn parse_output(raw: &str) -> Option<OutputFormat> {
    output_of(&split_media(raw).0)
}

/// The line format that answers a line-oriented body one line per record, in the body's own
/// format: what Batch Transform's `AssembleWith=Line` (and `mlapp transform`'s output files)
/// need when no answer type was asked for. None for a JSON document or an .npy array.
pub fn line_answer(input: InputFormat) -> Option<OutputFormat> {
    match input {
        InputFormat::Csv { .. } => Some(OutputFormat::Csv),
        InputFormat::JsonLines => Some(OutputFormat::JsonLines),
        InputFormat::Json | InputFormat::Npy => None,
    }
}

/// Picks the answer type: a missing or `*/*` Accept gets `default`; otherwise the supported
/// type with the highest q, earlier entries winning ties (the SageMaker toolkits take the
/// first supported one).
pub fn output_format(
    accept: Option<&str>,
    default: OutputFormat,
) -> Result<OutputFormat, MediaError> {
    let Some(raw) = accept.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(default);
    };
    let mut best: Option<(f32, OutputFormat)> = None;
    for entry in raw.split(',') {
        let (essence, params) = split_media(entry);
        let q = params
            .iter()
            .find(|(k, _)| k == "q")
            .and_then(|(_, v)| v.parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let format = match essence.as_str() {
            "*/*" | "" => Some(default),
            "application/*" if default != OutputFormat::Csv => Some(default),
            "application/*" => Some(OutputFormat::Json),
            "text/*" => Some(OutputFormat::Csv),
            e => output_of(e),
        };
        if let Some(f) = format {
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, f));
            }
        }
    }
    best.map(|(_, f)| f)
        .ok_or_else(|| MediaError::NotAcceptable(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_parameters_are_ignored_except_csv_header() {
        let f = |ct| input_format(Some(ct), "application/json", false, b"");
        assert_eq!(
            f("text/csv; charset=utf-8"),
            Ok(InputFormat::Csv { header: false })
        );
        assert_eq!(
            f("Text/CSV;header=present"),
            Ok(InputFormat::Csv { header: true })
        );
        assert_eq!(f("application/json; charset=UTF-8"), Ok(InputFormat::Json));
        assert_eq!(f("application/jsonlines"), Ok(InputFormat::JsonLines));
        assert_eq!(f("application/x-npy"), Ok(InputFormat::Npy));
    }

    #[test]
    fn missing_content_type_uses_the_default() {
        assert_eq!(
            input_format(None, "text/csv", false, b""),
            Ok(InputFormat::Csv { header: false })
        );
        assert_eq!(
            input_format(
                Some("application/octet-stream"),
                "application/json",
                false,
                b"{}"
            ),
            Ok(InputFormat::Json)
        );
        assert_eq!(
            input_format(
                Some("application/octet-stream"),
                "text/csv",
                false,
                b"\x93NUMPY\x01"
            ),
            Ok(InputFormat::Npy)
        );
    }

    #[test]
    fn unknown_content_type_lists_the_accepted_ones() {
        let err = input_format(Some("image/png"), "application/json", false, b"").unwrap_err();
        assert!(err.to_string().contains("image/png"));
        assert!(err.to_string().contains("text/csv"));
    }

    #[test]
    fn accept_negotiation() {
        let j = OutputFormat::Json;
        assert_eq!(
            output_format(None, OutputFormat::Csv),
            Ok(OutputFormat::Csv)
        );
        assert_eq!(
            output_format(Some("*/*"), OutputFormat::Csv),
            Ok(OutputFormat::Csv)
        );
        assert_eq!(output_format(Some("text/csv"), j), Ok(OutputFormat::Csv));
        assert_eq!(
            output_format(Some("image/png, text/csv"), j),
            Ok(OutputFormat::Csv)
        );
        assert_eq!(
            output_format(Some("text/csv;q=0.5, application/jsonlines"), j),
            Ok(OutputFormat::JsonLines)
        );
        assert!(output_format(Some("image/png"), j).is_err());
        assert!(output_format(Some("text/csv;q=0"), j).is_err());
    }
}
