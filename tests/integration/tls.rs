//! `--tls-cert` / `--tls-key`: a real HTTPS client (curl, checking the certificate) gets the
//! same predictions as over HTTP, plain HTTP to the port gets nothing, bad files stop the start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{agent, assert_csv_row, golden, model_dir, repo, run_bounded, Server};

fn tool(name: &str) -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(
        !found.is_empty(),
        "these tests need the {name} CLI (apt-get install -y {name})"
    );
    PathBuf::from(found)
}

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = run_bounded(
        Command::new(tool("openssl"))
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `curl` over HTTPS trusting only `cert`: (status, body).
fn curl(cert: &Path, url: &str, extra: &[&str]) -> (u16, String) {
    let out = run_bounded(
        Command::new(tool("curl"))
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(cert)
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .arg(url),
        Duration::from_secs(40),
    );
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    (code.parse().expect("status"), body.to_string())
}

#[test]
fn https_serves_predictions_and_plain_http_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tls-token\n").unwrap();
    let s = Server::start(&[
        "--model-dir",
        model_dir("logreg").to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--auth-token-file",
        tokens.to_str().unwrap(),
    ]);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let until = Instant::now() + Duration::from_secs(60);
    while curl(&cert, &format!("{}/ping", s.base), &[]).0 != 200 {
        assert!(Instant::now() < until, "not ready after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let rows = repo().join("examples/gender/payloads/logreg/rows.csv");
    let url = format!("{}/invocations", s.base);
    let mut post = vec!["-H", "Content-Type: text/csv", "-H", "Accept: text/csv"];
    let data = format!("@{}", rows.display());
    post.extend(["--data-binary", &data]);
    let (status, body) = curl(&cert, &url, &post);
    assert_eq!(status, 401, "{body}");
    post.extend(["-H", "Authorization: Bearer tls-token"]);
    let (status, body) = curl(&cert, &url, &post);
    assert_eq!(status, 200, "{body}");
    let gold = golden("logreg");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), gold["labels"].as_array().unwrap().len());
    for (i, line) in lines.iter().enumerate() {
        assert_csv_row(&gold, line, i, "over HTTPS");
    }

    let plain = s.base.replacen("https://", "http://", 1);
    match agent().get(&format!("{plain}/ping")).call() {
        Err(ureq::Error::Transport(_)) => {}
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            panic!("plain HTTP to the TLS port got an answer: {}", r.status())
        }
    }
}

fn start_fails(args: &[&str]) -> String {
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mlapp"))
            .args(["serve", "--port", "0", "--model-dir"])
            .arg(model_dir("logreg"))
            .args(args),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "started with {args:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_tls_files_fail_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let garbage = garbage.to_str().unwrap();

    let err = start_fails(&["--tls-cert", missing, "--tls-key", key]);
    assert!(
        err.contains("cannot read the TLS certificate file") && err.contains(missing),
        "{err}"
    );
    let err = start_fails(&["--tls-cert", cert, "--tls-key", garbage]);
    assert!(
        err.contains("TLS key file") && err.contains(garbage) && err.contains("PRIVATE KEY"),
        "{err}"
    );
    // The key where the certificate should be: PEM, but no certificate in it.
    let err = start_fails(&["--tls-cert", key, "--tls-key", key]);
    assert!(
        err.contains("TLS certificate file") && err.contains(key) && err.contains("CERTIFICATE"),
        "{err}"
    );
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, other_key) = self_signed(&other);
    let err = start_fails(&["--tls-cert", cert, "--tls-key", other_key.to_str().unwrap()]);
    assert!(
        err.contains("cannot be used together") && err.contains(cert),
        "{err}"
    );
    let err = start_fails(&["--tls-cert", cert]);
    assert!(
        err.contains("--tls-cert / MLAPP_TLS_CERT needs --tls-key"),
        "{err}"
    );
}
