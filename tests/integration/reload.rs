//! Zero-downtime reload: SIGHUP under continuous load switches to the new version with no
//! failed request; polling finds a new version by itself; a reload to a broken model keeps
//! the old one serving and says why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batching::metric;
use crate::common::archives::{gzip, model_tar_gz, tar, Item};
use crate::common::moto::{pairs, Moto};
use crate::common::{model_dir, payload, send_signal, Server, Traffic};
use crate::sources::assert_serves;

/// Waits until `/info` names a version other than `old`; returns it.
fn wait_version_change(s: &Server, old: &str, limit: Duration) -> String {
    let until = Instant::now() + limit;
    loop {
        let info = s.get("/info").json();
        let v = info["model"]["version"].as_str().unwrap_or_default();
        if !v.is_empty() && v != old {
            return v.to_string();
        }
        assert!(
            Instant::now() < until,
            "still on {old} after {limit:?}: {info}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn version(s: &Server) -> String {
    s.get("/info").json()["model"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn sighup_under_load_switches_models_without_a_failed_request() {
    let moto = Moto::start();
    moto.create_bucket("models");
    let key = "live/model.tar.gz";
    moto.put("models", key, model_tar_gz(&model_dir("logreg"), None));
    let env = moto.env();
    let cache = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://models/live/model.tar.gz",
            "--model-cache-dir",
            cache.path().to_str().unwrap(),
            "--workers",
            "2",
        ],
        &pairs(&env),
    ));
    s.wait_ready(Duration::from_secs(60));
    let v1 = version(&s);

    // Four clients send continuously; every status and every first label is recorded.
    let body = payload("logreg", "rows.csv");
    let client = s.clone();
    let traffic = Traffic::start(4, move || {
        client.post(Some("text/csv"), Some("text/csv"), &body)
    });
    std::thread::sleep(Duration::from_millis(500));
    // Version 2: the XGBoost model, whose labels are 0/1 rather than female/male.
    moto.put("models", key, model_tar_gz(&model_dir("xgboost"), None));
    send_signal(s.pid(), libc::SIGHUP);
    let v2 = wait_version_change(&s, &v1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let seen = traffic.stop();
    let old = seen
        .iter()
        .filter(|(_, l)| l == "female" || l == "male")
        .count();
    let new = seen.iter().filter(|(_, l)| l == "0" || l == "1").count();
    assert!(old > 0 && new > 0, "old {old}, new {new} of {}", seen.len());
    assert_eq!(old + new, seen.len());
    // Once switched, it stays switched.
    let first_new = seen.iter().position(|(_, l)| l == "0" || l == "1").unwrap();
    let late_old = seen[first_new..]
        .iter()
        .filter(|(_, l)| l == "female" || l == "male")
        .count();
    assert!(
        late_old <= 4,
        "{late_old} answers from the old model after the first new one"
    );
    assert_serves(&s, "xgboost", "after the reload");

    let info = s.get("/info").json();
    assert_eq!(info["last_reload"]["ok"], true, "{info}");
    assert_eq!(info["last_reload"]["trigger"], "SIGHUP", "{info}");
    assert_eq!(info["last_reload"]["version"], v2.as_str(), "{info}");
    let text = s.get("/metrics").body;
    assert_eq!(
        metric(&text, "mlapp_model_reloads_total{result=\"success\"}"),
        1.0
    );
    assert!(text.contains(&format!("version=\"{v2}\"")), "{text}");
    // The old version's cache entry is gone, the new one's is there.
    assert_eq!(crate::sources::cache_entries(cache.path()).len(), 1);
}

#[test]
fn polling_finds_a_new_version_in_s3() {
    let moto = Moto::start();
    moto.create_bucket("models");
    moto.put(
        "models",
        "poll/model.onnx",
        std::fs::read(model_dir("xgboost").join("model.onnx")).unwrap(),
    );
    let env = moto.env();
    let cache = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://models/poll/model.onnx",
            "--model-cache-dir",
            cache.path().to_str().unwrap(),
            "--model-poll-seconds",
            "0.2",
            "--workers",
            "1",
        ],
        &pairs(&env),
    );
    s.wait_ready(Duration::from_secs(60));
    assert_serves(&s, "xgboost", "before");
    let v1 = version(&s);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(version(&s), v1, "an unchanged object is not reloaded");
    moto.put(
        "models",
        "poll/model.onnx",
        std::fs::read(model_dir("logreg").join("model.onnx")).unwrap(),
    );
    wait_version_change(&s, &v1, Duration::from_secs(60));
    let info = s.get("/info").json();
    assert_eq!(info["last_reload"]["trigger"], "poll", "{info}");
    // The logreg model without its config: labels 0/1, logreg's probabilities.
    let r = s.post(
        Some("text/csv"),
        Some("text/csv"),
        &payload("logreg", "rows.csv"),
    );
    let gold = crate::common::golden("logreg");
    let p: f64 = r
        .body
        .lines()
        .next()
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let want = gold["probabilities"][0][1].as_f64().unwrap();
    assert!((p - want).abs() < 1e-5, "{p} vs {want}: {}", r.body);
}

#[test]
fn a_reload_to_a_broken_model_keeps_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.tar.gz");
    std::fs::write(&file, model_tar_gz(&model_dir("logreg"), None)).unwrap();
    let cache = dir.path().join("cache");
    let s = Server::start(&[
        "--model-uri",
        file.to_str().unwrap(),
        "--model-cache-dir",
        cache.to_str().unwrap(),
    ]);
    s.wait_ready(Duration::from_secs(60));
    let v1 = version(&s);

    // A well-formed archive whose model ONNX Runtime cannot load.
    let broken = gzip(&tar(&[("model.onnx", Item::File(b"not an ONNX protobuf"))]));
    let tmp = dir.path().join("next.tar.gz");
    std::fs::write(&tmp, broken).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    send_signal(s.pid(), libc::SIGHUP);
    let until = Instant::now() + Duration::from_secs(60);
    let info = loop {
        let info = s.get("/info").json();
        if info["reloads"]["failed"] == 1 {
            break info;
        }
        assert!(Instant::now() < until, "{info}");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(info["last_reload"]["ok"], false, "{info}");
    let why = info["last_reload"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("ONNX Runtime could not load"), "{info}");
    assert_eq!(info["model"]["version"], v1.as_str(), "{info}");
    assert_eq!(s.get("/ping").status, 200);
    assert_serves(&s, "logreg", "after the failed reload");
    let text = s.get("/metrics").body;
    assert_eq!(
        metric(&text, "mlapp_model_reloads_total{result=\"failure\"}"),
        1.0
    );
    assert_eq!(metric(&text, "mlapp_model_ready"), 1.0);
}

/// A polled version that fails to load is tried once, not at every poll: the old model
/// keeps serving, `/info` names the version and why, SIGHUP still retries it, and a later
/// good version is picked up.
#[test]
fn a_broken_version_is_tried_once_while_polling() {
    use md5::{Digest, Md5};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.tar.gz");
    std::fs::write(&file, model_tar_gz(&model_dir("logreg"), None)).unwrap();
    let put = |bytes: &[u8]| {
        let tmp = dir.path().join("next.tar.gz");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    let s = Server::start(&[
        "--model-uri",
        file.to_str().unwrap(),
        "--model-cache-dir",
        dir.path().join("cache").to_str().unwrap(),
        "--model-poll-seconds",
        "0.05",
        "--workers",
        "1",
    ]);
    s.wait_ready(Duration::from_secs(60));
    let v1 = version(&s);
    let failures = |s: &Server| {
        metric(
            &s.get("/metrics").body,
            "mlapp_model_reloads_total{result=\"failure\"}",
        )
    };
    let wait_failures = |n: f64| {
        let until = Instant::now() + Duration::from_secs(60);
        while failures(&s) < n {
            assert!(Instant::now() < until, "{}", s.get("/info").body);
            std::thread::sleep(Duration::from_millis(25));
        }
    };

    let broken = gzip(&tar(&[("model.onnx", Item::File(b"not an ONNX protobuf"))]));
    let broken_version = format!("md5:{}", hex(&Md5::digest(&broken)));
    put(&broken);
    wait_failures(1.0);
    // About 30 polls see the same broken version.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(failures(&s), 1.0, "{}", s.get("/info").body);
    let info = s.get("/info").json();
    assert_eq!(
        info["last_failed_version"],
        broken_version.as_str(),
        "{info}"
    );
    let why = info["last_failed_reason"].as_str().unwrap_or_default();
    assert!(why.contains("ONNX Runtime could not load"), "{info}");
    assert_eq!(info["model"]["version"], v1.as_str(), "{info}");
    assert_serves(&s, "logreg", "while the new version is broken");

    send_signal(s.pid(), libc::SIGHUP);
    wait_failures(2.0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(failures(&s), 2.0, "SIGHUP retries once");

    put(&model_tar_gz(&model_dir("xgboost"), None));
    wait_version_change(&s, &v1, Duration::from_secs(60));
    assert_serves(&s, "xgboost", "after the good version");
    let info = s.get("/info").json();
    assert!(info["last_failed_version"].is_null(), "{info}");
    assert_eq!(info["last_reload"]["trigger"], "poll", "{info}");
    assert_eq!(failures(&s), 2.0);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
