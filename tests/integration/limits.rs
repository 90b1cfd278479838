//! Numbers from outside, in headers or settings, at and past their bounds: an answer or a
//! start-up error naming the option, never a panic.

use std::process::Command;
use std::time::Duration;

use crate::common::{self, model_dir, run_bounded, xgboost_rows, Server};

#[test]
fn any_timeout_header_number_is_capped_by_the_server_timeout() {
    let s = Server::ready(&model_dir("xgboost"), &["--workers", "1"]);
    // 1e23 ms does not fit a Duration; it asked for more than the server allows, so it gets
    // the server's timeout, as any number past it does.
    for asked in ["1e23", "1e300", "18446744073709551616000", "30000", "60000"] {
        let r = common::reply(
            common::agent()
                .post(&format!("{}/invocations", s.base))
                .set("Content-Type", "text/csv")
                .set("X-Mlapp-Timeout-Ms", asked)
                .send_bytes(&xgboost_rows(2)),
        );
        assert_eq!(r.status, 200, "X-Mlapp-Timeout-Ms: {asked}: {}", r.body);
    }
    for bad in ["inf", "NaN", "-1", "0", ""] {
        let r = common::reply(
            common::agent()
                .post(&format!("{}/invocations", s.base))
                .set("Content-Type", "text/csv")
                .set("X-Mlapp-Timeout-Ms", bad)
                .send_bytes(&xgboost_rows(2)),
        );
        assert_eq!(r.status, 400, "X-Mlapp-Timeout-Ms: {bad:?}: {}", r.body);
        assert_eq!(r.error().0, "invalid_header");
    }
}

/// Starts `mlapp serve` with one setting; it must refuse to start, naming the option.
fn refused_at_start(args: &[&str], envs: &[(&str, &str)], names: &str) {
    let dir = model_dir("xgboost");
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mlapp"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model-dir"])
            .arg(&dir)
            .args(args)
            .envs(envs.iter().copied()),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} {envs:?} started");
    assert!(!err.contains("panicked"), "{args:?} {envs:?}: {err}");
    assert!(
        err.contains(names) && err.contains("must be"),
        "{args:?} {envs:?}: {err}"
    );
}

#[test]
fn settings_past_their_bounds_are_refused_at_start_naming_the_option() {
    let huge = "1e25";
    refused_at_start(&["--timeout", "1e20"], &[], "--timeout");
    refused_at_start(
        &[],
        &[("SAGEMAKER_MODEL_SERVER_TIMEOUT", "1e20")],
        "SAGEMAKER_MODEL_SERVER_TIMEOUT",
    );
    // Fits a Duration, but not an Instant plus it: it used to panic at every request.
    refused_at_start(&["--timeout", "1e18"], &[], "--timeout");
    refused_at_start(
        &[],
        &[("MLAPP_MAX_BATCH_DELAY_MS", huge)],
        "MLAPP_MAX_BATCH_DELAY_MS",
    );
    refused_at_start(&["--model-poll-seconds", huge], &[], "--model-poll-seconds");
    refused_at_start(&["--max-payload-mb", "1e30"], &[], "--max-payload-mb");
    refused_at_start(&["--max-payload-mb=-1"], &[], "--max-payload-mb");
    refused_at_start(&["--workers", "0"], &[], "--workers");
    refused_at_start(&["--workers", "1000000"], &[], "--workers");
    refused_at_start(&["--warmup-rows", "1000000000"], &[], "--warmup-rows");
    refused_at_start(&["--queue-capacity", "0"], &[], "--queue-capacity");
    refused_at_start(&["--max-batch-rows", "0"], &[], "--max-batch-rows");
    refused_at_start(
        &["--shutdown-timeout", "99999999"],
        &[],
        "--shutdown-timeout",
    );
}

#[test]
fn transform_settings_past_their_bounds_are_refused_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.csv"), xgboost_rows(3)).unwrap();
    for (args, names) in [
        (["--chunk-mb", "1e12"], "--chunk-mb"),
        (["--chunk-mb", "NaN"], "--chunk-mb"),
        (["--workers", "0"], "--workers"),
    ] {
        let out = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_mlapp"))
                .arg("transform")
                .arg("--model-dir")
                .arg(model_dir("xgboost"))
                .arg("--input")
                .arg(dir.path().join("in.csv"))
                .arg("--output")
                .arg(dir.path().join("out"))
                .args(args),
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains(names) && err.contains("must be"),
            "{args:?}: {err}"
        );
    }
}
