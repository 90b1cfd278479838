//! Batch Transform mode: `/execution-parameters` and the limits SageMaker's batch variables set.

use crate::common::{model_dir, xgboost_rows, Server};

fn start(envs: &[(&str, &str)]) -> Server {
    let dir = model_dir("xgboost");
    let s = Server::start_with(
        Some("serve"),
        &["--model-dir", dir.to_str().unwrap(), "--workers", "2"],
        envs,
    );
    s.wait_ready(std::time::Duration::from_secs(60));
    s
}

#[test]
fn execution_parameters_follow_the_sessions_and_the_job() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("SAGEMAKER_BATCH", "True")],
            r#"{"MaxConcurrentTransforms":2,"BatchStrategy":"MULTI_RECORD","MaxPayloadInMB":50}"#,
        ),
        (
            &[
                ("SAGEMAKER_BATCH", "true"),
                ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "80"),
            ],
            r#"{"MaxConcurrentTransforms":1,"BatchStrategy":"MULTI_RECORD","MaxPayloadInMB":80}"#,
        ),
        (
            &[
                ("SAGEMAKER_BATCH", "true"),
                ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "4"),
                ("SAGEMAKER_BATCH_STRATEGY", "SINGLE_RECORD"),
            ],
            r#"{"MaxConcurrentTransforms":4,"BatchStrategy":"SINGLE_RECORD","MaxPayloadInMB":25}"#,
        ),
        // Outside batch mode too, for a job that asks before sending anything.
        (
            &[],
            r#"{"MaxConcurrentTransforms":2,"BatchStrategy":"MULTI_RECORD","MaxPayloadInMB":50}"#,
        ),
    ];
    for (envs, want) in cases {
        let s = start(envs);
        let r = s.get("/execution-parameters");
        assert_eq!(r.status, 200, "{envs:?}");
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.body, want, "{envs:?}");
    }
}

#[test]
fn batch_mode_takes_the_suggested_payload() {
    // About 10 MB: over the real-time default of 6 MiB, under the 50 MiB suggested for two
    // concurrent transforms.
    let body = xgboost_rows(15_000);
    assert!(body.len() > 6 << 20);
    let online = start(&[]);
    assert_eq!(online.post(Some("text/csv"), None, &body).status, 413);
    let batch = start(&[("SAGEMAKER_BATCH", "true")]);
    let r = batch.post(Some("text/csv"), Some("text/csv"), &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.split('\n').count(), 15_000);
}
