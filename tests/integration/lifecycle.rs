//! Start-up, readiness, the CLI surface, and shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{model_dir, payload, send_signal, Server};

#[test]
fn ping_is_503_while_loading_then_200() {
    let dir = model_dir("xgboost");
    // Many large warm-up runs make loading take seconds, so the loading state is observable.
    let s = Server::start(&[
        "--model-dir",
        dir.to_str().unwrap(),
        "--warmup-runs",
        "60",
        "--warmup-rows",
        "4000",
    ]);
    let first = s.get("/ping");
    assert_eq!(first.status, 503, "{}", first.body);
    let v = first.json();
    assert_eq!(v["status"], "loading");
    assert!(
        v["reason"].as_str().unwrap().contains("xgboost"),
        "{}",
        first.body
    );
    let r = s.post(Some("text/csv"), None, &payload("xgboost", "rows.csv"));
    assert_eq!(r.status, 503);
    assert_eq!(r.error().0, "not_ready");
    assert!(r.retry_after.is_some());

    // Pings stay fast while the loader is busy.
    let t = Instant::now();
    for _ in 0..20 {
        s.get("/ping");
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "20 pings took {:?}",
        t.elapsed()
    );

    s.wait_ready(Duration::from_secs(120));
    let v = s.get("/ping").json();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["kind"], "classifier");
}

#[test]
fn missing_model_is_503_with_the_reason_and_the_process_stays_up() {
    let s = Server::start(&["--model-dir", "/nonexistent/opt/ml/model"]);
    let until = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let r = s.get("/ping");
        assert_eq!(r.status, 503);
        if r.json()["status"] == "failed" {
            break r.json();
        }
        assert!(Instant::now() < until, "still loading");
        std::thread::sleep(Duration::from_millis(20));
    };
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("/nonexistent/opt/ml/model") && reason.contains("does not exist"),
        "{reason}"
    );
    let r = s.post(Some("text/csv"), None, b"1,2\n");
    assert_eq!(r.status, 503);
    assert!(r.error().1.contains("does not exist"), "{}", r.body);
}

#[test]
fn corrupt_model_is_503_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("model.onnx"),
        b"this is not an ONNX protobuf",
    )
    .unwrap();
    let s = Server::start(&["--model-dir", tmp.path().to_str().unwrap()]);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get("/ping");
        assert_eq!(r.status, 503);
        let v = r.json();
        if v["status"] == "failed" {
            let reason = v["reason"].as_str().unwrap();
            assert!(
                reason.contains("ONNX Runtime could not load") && reason.contains("model.onnx"),
                "{reason}"
            );
            break;
        }
        assert!(Instant::now() < until, "still loading");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn loading_never_writes_into_the_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["model.onnx", "mlapp.json"] {
        std::fs::copy(model_dir("mlp").join(f), tmp.path().join(f)).unwrap();
    }
    let before: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    use std::os::unix::fs::PermissionsExt;
    // As on SageMaker, the folder is read-only (root ignores this, so the listing is compared
    // afterwards as well).
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let s = Server::ready(tmp.path(), &[]);
    assert_eq!(
        s.post(Some("text/csv"), None, &payload("mlp", "rows.csv"))
            .status,
        200
    );
    drop(s);
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let after: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len());
}

#[test]
fn starts_with_no_command_from_sagemaker_env() {
    let dir = model_dir("logreg");
    let s = Server::start_with(
        None,
        &[],
        &[
            ("MLAPP_MODEL_DIR", dir.to_str().unwrap()),
            ("MLAPP_HOST", "127.0.0.1"),
            ("SAGEMAKER_BIND_TO_PORT", "0"),
        ],
    );
    s.wait_ready(Duration::from_secs(30));
    assert_eq!(
        s.post(Some("text/csv"), None, &payload("logreg", "rows.csv"))
            .status,
        200
    );
}

#[test]
fn inspect_prints_the_signature() {
    let out = Command::new(env!("CARGO_BIN_EXE_mlapp"))
        .args(["inspect", model_dir("pipeline").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "inputs (41):",
        "country                  string [N, 1]",
        "price_tier               int64 [N, 1]",
        "label                    string   [N]",
        "answers as: classifier",
        "classes: female, male",
        "(application/x-npy cannot carry this model's string features)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn missing_onnx_runtime_exits_saying_how_to_install_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_mlapp"))
        .args([
            "serve",
            "--port",
            "0",
            "--model-dir",
            model_dir("logreg").to_str().unwrap(),
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scripts/install-onnxruntime.sh") && err.contains("ORT_DYLIB_PATH"),
        "{err}"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut s = Server::ready(
        &model_dir("xgboost"),
        &["--workers", "1", "--max-payload-mb", "32"],
    );
    let rows = 20_000;
    let body = String::from_utf8(crate::common::xgboost_rows(rows)).unwrap();
    let base = s.base.clone();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (base, body) = (base.clone(), body.clone());
            std::thread::spawn(move || {
                let r = crate::common::reply(
                    crate::common::agent()
                        .post(&format!("{base}/invocations"))
                        .set("Content-Type", "text/csv")
                        .set("Accept", "text/csv")
                        .send_string(&body),
                );
                (r, Instant::now())
            })
        })
        .collect();
    // Wait until all four are admitted (accepted and counted in flight, their bodies perhaps
    // still arriving); with one session they are queued behind each other. A connection still
    // in the listen backlog at SIGTERM is refused, rightly, and would prove nothing here.
    let until = Instant::now() + Duration::from_secs(20);
    while crate::batching::metric(&s.get("/metrics").body, "mlapp_requests_in_flight") < 4.0 {
        assert!(
            Instant::now() < until,
            "the four requests were never in flight together"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = Instant::now();
    send_signal(s.pid(), libc::SIGTERM);
    let mut answered_after_sigterm = 0;
    for c in clients {
        let (r, at) = c.join().unwrap();
        assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(200)]);
        assert_eq!(r.body.split('\n').count(), rows);
        answered_after_sigterm += usize::from(at > sent);
    }
    // Otherwise the signal came after the work and this test proved nothing about draining.
    assert!(
        answered_after_sigterm > 0,
        "every request finished before SIGTERM"
    );
    let status = s
        .wait_exit(Duration::from_secs(25))
        .expect("exited within 25 s");
    assert!(status.success(), "{status:?}");
    assert!(sent.elapsed() < Duration::from_secs(25));
    // Nothing listens any more.
    assert!(crate::common::agent()
        .get(&format!("{base}/ping"))
        .call()
        .is_err());
}

#[test]
fn successful_pings_are_not_logged_at_info() {
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("mlapp.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let dir = model_dir("logreg");
    let mut s = Server::start_logging(
        Some("serve"),
        &["--model-dir", dir.to_str().unwrap()],
        &[("RUST_LOG", "info")],
        log.into(),
    );
    s.wait_ready(Duration::from_secs(30));
    for _ in 0..5 {
        assert_eq!(s.get("/ping").status, 200);
    }
    // A failed request is logged (in the refusals' summary), so the log is known to be
    // captured.
    assert_eq!(s.post(Some("image/png"), None, b"x").status, 415);
    send_signal(s.pid(), libc::SIGTERM);
    s.wait_exit(Duration::from_secs(25)).expect("exited");
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("ready:"), "{text}");
    assert!(text.contains("the latest POST /invocations 415"), "{text}");
    assert!(!text.contains("/ping"), "{text}");
}

/// This machine's ONNX Runtime is the CPU build: `--device cuda` must fail the load saying
/// why (never fall back quietly), and `auto` must serve on the CPU and say so.
#[test]
fn device_cuda_fails_loudly_without_cuda_and_auto_falls_back_to_cpu() {
    let s = Server::start(&[
        "--model-dir",
        model_dir("logreg").to_str().unwrap(),
        "--device",
        "cuda",
    ]);
    let until = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let r = s.get("/ping");
        assert_eq!(r.status, 503, "{}", r.body);
        if r.json()["status"] == "failed" {
            break r.json()["reason"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < until, "still loading");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        reason.contains("--device cuda") && reason.contains("CUDA execution provider"),
        "{reason}"
    );

    let s = Server::ready(&model_dir("logreg"), &["--device", "auto"]);
    assert_eq!(s.get("/ping").json()["provider"], "CPUExecutionProvider");
    let text = s.get("/metrics").body;
    assert!(
        text.contains("mlapp_execution_provider_info{provider=\"CPUExecutionProvider\"} 1"),
        "{text}"
    );
}
