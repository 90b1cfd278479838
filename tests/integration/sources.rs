//! Models from every kind of URI: local `.onnx` files and archives, and S3 objects, archives
//! and prefixes on a real S3-compatible server (moto) reached through `aws-sdk-s3`; errors
//! that name the object and what S3 answered.

use std::time::{Duration, Instant};

use crate::common::archives::model_tar_gz;
use crate::common::moto::{pairs, Moto};
use crate::common::{assert_csv_row, golden, model_dir, payload, Server};

/// Every answer line for the example rows equals `model`'s golden predictions.
pub fn assert_serves(s: &Server, model: &str, what: &str) {
    let r = s.post(
        Some("text/csv"),
        Some("text/csv"),
        &payload(model, "rows.csv"),
    );
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let gold = golden(model);
    for (i, line) in r.body.lines().enumerate() {
        assert_csv_row(&gold, line, i, what);
    }
}

/// `/ping`'s reason once the load has failed.
pub fn failure_reason(s: &Server) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.get("/ping");
        assert_ne!(r.status, 200, "{}", r.body);
        if r.json()["status"] == "failed" {
            return r.json()["reason"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < until, "still loading: {}", r.body);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_a_model_from_every_uri_form() {
    let moto = Moto::start();
    moto.create_bucket("models");
    let logreg = model_dir("logreg");
    let xgb = model_dir("xgboost");
    moto.put(
        "models",
        "single/xgb.onnx",
        std::fs::read(xgb.join("model.onnx")).unwrap(),
    );
    moto.put("models", "packed/model.tar.gz", model_tar_gz(&logreg, None));
    for f in ["model.onnx", "mlapp.json"] {
        moto.put(
            "models",
            &format!("folder/v1/{f}"),
            std::fs::read(logreg.join(f)).unwrap(),
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let local_archive = tmp.path().join("model.tar.gz");
    // Packed with a top folder, as `tar czf model.tar.gz model/` does.
    std::fs::write(&local_archive, model_tar_gz(&logreg, Some("model"))).unwrap();
    let local_onnx = xgb.join("model.onnx");

    let env = moto.env();
    let cases = [
        ("s3://models/single/xgb.onnx", "xgboost"),
        ("s3://models/packed/model.tar.gz", "logreg"),
        ("s3://models/folder/v1/", "logreg"),
        // No trailing slash: the key is no object, so it is read as a folder.
        ("s3://models/folder/v1", "logreg"),
        (local_archive.to_str().unwrap(), "logreg"),
        (local_onnx.to_str().unwrap(), "xgboost"),
    ];
    let servers: Vec<(Server, &str, &str)> = cases
        .iter()
        .enumerate()
        .map(|(i, (uri, model))| {
            let cache = tmp.path().join(format!("cache{i}"));
            let s = Server::start_with(
                Some("serve"),
                &[
                    "--model-uri",
                    uri,
                    "--model-cache-dir",
                    cache.to_str().unwrap(),
                    "--workers",
                    "1",
                ],
                &pairs(&env),
            );
            (s, *uri, *model)
        })
        .collect();
    for (s, uri, model) in &servers {
        s.wait_ready(Duration::from_secs(60));
        assert_serves(s, model, uri);
        let info = s.get("/info").json();
        assert_eq!(info["uri"], *uri, "{info}");
        let version = info["model"]["version"].as_str().unwrap_or_default();
        let want = if uri.starts_with("s3://models/folder") {
            "etags:"
        } else if uri.starts_with("s3://") {
            "etag:"
        } else {
            "md5:"
        };
        assert!(version.starts_with(want), "{uri}: {info}");
    }
    // Nothing was written beside the local sources.
    let beside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("cache"))
        .collect();
    assert_eq!(beside, ["model.tar.gz"]);
}

#[test]
fn a_missing_object_is_503_naming_the_bucket_the_key_and_s3s_answer() {
    let moto = Moto::start();
    moto.create_bucket("models");
    let env = moto.env();
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().to_str().unwrap();
    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://models/nope/model.tar.gz",
            "--model-cache-dir",
            cache,
        ],
        &pairs(&env),
    );
    let reason = failure_reason(&s);
    for want in [
        "NoSuchKey",
        "bucket \"models\"",
        "key \"nope/model.tar.gz\"",
    ] {
        assert!(reason.contains(want), "missing {want:?} in {reason}");
    }
    let r = s.post(Some("text/csv"), None, &payload("logreg", "rows.csv"));
    assert_eq!(r.status, 503);
    assert!(r.error().1.contains("NoSuchKey"), "{}", r.body);

    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://no-such-bucket/model.tar.gz",
            "--model-cache-dir",
            cache,
        ],
        &pairs(&env),
    );
    let reason = failure_reason(&s);
    assert!(
        reason.contains("NoSuchBucket") && reason.contains("no-such-bucket"),
        "{reason}"
    );
}

#[test]
fn wrong_credentials_are_503_with_s3s_refusal() {
    let moto = Moto::start_checking_credentials();
    let mut env = moto.env();
    for (k, v) in env.iter_mut() {
        if *k == "AWS_ACCESS_KEY_ID" {
            *v = "AKIAWRONGWRONGWRONG0".into();
        }
    }
    let cache = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://models/live/model.tar.gz",
            "--model-cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &pairs(&env),
    );
    let reason = failure_reason(&s);
    assert!(
        reason.contains("InvalidAccessKeyId")
            || reason.contains("AccessDenied")
            || reason.contains("HTTP 403"),
        "{reason}"
    );
    assert!(reason.contains("s3://models/live/model.tar.gz"), "{reason}");
}

/// A network that drops connections and cuts a download short, or flips a byte of it: the
/// SDK's retries and the checked, retried whole download get the right model loaded anyway,
/// never a damaged one, and say so in the log.
#[test]
fn transient_s3_failures_are_retried() {
    use crate::common::flaky::Fault;
    for (fault, evidence) in [
        (Fault::Cut, "the download failed after"),
        (Fault::Flip, "checksum mismatch"),
    ] {
        let moto = Moto::start();
        moto.create_bucket("models");
        moto.put(
            "models",
            "flaky/model.tar.gz",
            model_tar_gz(&model_dir("xgboost"), None),
        );
        let upstream = moto.endpoint.trim_start_matches("http://").to_string();
        // The archive is a few hundred KB; HEAD and list answers are far smaller.
        let proxy = crate::common::flaky::start(&upstream, 2, 50_000, fault);
        let mut env = moto.env();
        for (k, v) in env.iter_mut() {
            if *k == "AWS_ENDPOINT_URL_S3" {
                *v = proxy.endpoint.clone();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mlapp.log");
        let mut envs = pairs(&env);
        envs.push(("RUST_LOG", "info"));
        let s = Server::start_logging(
            Some("serve"),
            &[
                "--model-uri",
                "s3://models/flaky/model.tar.gz",
                "--model-cache-dir",
                dir.path().join("cache").to_str().unwrap(),
            ],
            &envs,
            std::process::Stdio::from(std::fs::File::create(&log).unwrap()),
        );
        s.wait_ready(Duration::from_secs(60));
        assert_serves(&s, "xgboost", "after retries");
        assert_eq!(proxy.dropped.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(
            proxy.cut.load(std::sync::atomic::Ordering::SeqCst),
            "no fault was made"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("try 1 of 4 failed, retrying") && text.contains(evidence),
            "{text}"
        );
    }
}
