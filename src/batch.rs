//! Batch Transform mode: what `GET /execution-parameters` answers and the limits that follow.
//!
//! SageMaker takes `MaxConcurrentTransforms` and `MaxPayloadInMB` from the transform job when
//! the user set them (and then passes them as `SAGEMAKER_MAX_CONCURRENT_TRANSFORMS` and
//! `SAGEMAKER_MAX_PAYLOAD_IN_MB`), else from this endpoint. The suggestion: one request per
//! inference session, and the largest payload that keeps `n × m ≤ 100` (SageMaker's bound on
//! data in flight per instance).

use serde::Serialize;

/// SageMaker's limit on `MaxConcurrentTransforms × MaxPayloadInMB`.
const IN_FLIGHT_MB: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStrategy {
    MultiRecord,
    SingleRecord,
}

/// What a record that cannot be scored does to its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BadRecords {
    /// The request fails (4xx naming the row); SageMaker then fails the input file.
    Fail,
    /// The record's answer line is a placeholder (`ERROR: reason`, or `{"error": reason}`)
    /// and the other records are scored, as AWS suggests for custom algorithms.
    Placeholder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecutionParameters {
    pub max_concurrent_transforms: usize,
    pub batch_strategy: BatchStrategy,
    #[serde(rename = "MaxPayloadInMB")]
    pub max_payload_in_mb: usize,
}

impl ExecutionParameters {
    /// `sessions`: the requests mlapp scores at once. `transforms` and `payload_mb`: the
    /// values the job set, if it set them (a payload of 0 means chunked, unbounded bodies).
    pub fn suggest(
        sessions: usize,
        transforms: Option<usize>,
        payload_mb: Option<usize>,
        strategy: BatchStrategy,
    ) -> Self {
        let (n, m) = match (transforms, payload_mb) {
            (Some(n), Some(m)) => (n.max(1), m),
            (Some(n), None) => (n.max(1), (IN_FLIGHT_MB / n.max(1)).max(1)),
            (None, Some(0)) => (sessions.max(1), 0),
            (None, Some(m)) => (sessions.clamp(1, (IN_FLIGHT_MB / m).max(1)), m),
            (None, None) => {
                let n = sessions.clamp(1, IN_FLIGHT_MB);
                (n, IN_FLIGHT_MB / n)
            }
        };
        Self {
            max_concurrent_transforms: n,
            batch_strategy: strategy,
            max_payload_in_mb: m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggest(n: Option<usize>, m: Option<usize>) -> (usize, usize) {
        let p = ExecutionParameters::suggest(2, n, m, BatchStrategy::MultiRecord);
        (p.max_concurrent_transforms, p.max_payload_in_mb)
    }

    #[test]
    fn one_transform_per_session_and_the_payload_that_keeps_100_mb_in_flight() {
        assert_eq!(suggest(None, None), (2, 50));
        assert_eq!(
            ExecutionParameters::suggest(3, None, None, BatchStrategy::MultiRecord)
                .max_payload_in_mb,
            33
        );
        assert_eq!(
            ExecutionParameters::suggest(500, None, None, BatchStrategy::MultiRecord)
                .max_concurrent_transforms,
            100
        );
    }

    #[test]
    fn values_the_job_set_are_kept_and_the_other_fits_them() {
        assert_eq!(suggest(None, Some(80)), (1, 80));
        assert_eq!(suggest(None, Some(20)), (2, 20));
        assert_eq!(suggest(Some(4), None), (4, 25));
        assert_eq!(suggest(Some(4), Some(60)), (4, 60));
        assert_eq!(suggest(None, Some(0)), (2, 0));
    }

    #[test]
    fn serializes_with_sagemaker_names() {
        let p = ExecutionParameters::suggest(2, None, None, BatchStrategy::SingleRecord);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"MaxConcurrentTransforms":2,"BatchStrategy":"SINGLE_RECORD","MaxPayloadInMB":50}"#
        );
    }
}
