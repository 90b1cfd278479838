//! `--auth-token-file`: every route but /ping needs a listed bearer token, refusals are 401s
//! in the one error shape, counted and not logged, and SIGHUP rotates the tokens.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::batching::metric;
use crate::common::{
    agent, assert_csv_row, golden, model_dir, payload, reply, send_signal, Reply, Server,
};

pub fn get_with(s: &Server, path: &str, token: Option<&str>) -> Reply {
    let mut req = agent().get(&format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    reply(req.call())
}

fn predict_with(s: &Server, token: Option<&str>) -> Reply {
    let mut req = agent()
        .post(&format!("{}/invocations", s.base))
        .set("Content-Type", "text/csv")
        .set("Accept", "text/csv");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    reply(req.send_bytes(&payload("logreg", "rows.csv")))
}

/// The same call through ureq, for the WWW-Authenticate header that `Reply` does not keep.
fn challenge(s: &Server, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut req = agent().get(&format!("{}{path}", s.base));
    if let Some(a) = authorization {
        req = req.set("Authorization", a);
    }
    let resp = match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let header = resp.header("WWW-Authenticate").unwrap_or("").to_string();
    (resp.status(), header)
}

fn assert_predicts(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let gold = golden("logreg");
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(
        lines.len(),
        gold["labels"].as_array().unwrap().len(),
        "{what}"
    );
    for (i, line) in lines.iter().enumerate() {
        assert_csv_row(&gold, line, i, what);
    }
}

fn assert_refused(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    assert!(r.content_type.starts_with("application/json"), "{what}");
    assert_eq!(r.error().0, "unauthorized", "{what}");
}

fn token_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("tokens");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bearer_tokens_guard_every_route_but_ping_and_refusals_are_counted_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(
        dir.path(),
        "# rotated monthly\n\ntoken-a-7f3k\n  token-b-9x2q  \n",
    );
    let log = dir.path().join("log");
    let s = Server::start_logging(
        Some("serve"),
        &[
            "--model-dir",
            model_dir("logreg").to_str().unwrap(),
            "--auth-token-file",
            tokens.to_str().unwrap(),
        ],
        &[("RUST_LOG", "debug,ort=warn")],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    s.wait_ready(Duration::from_secs(60));

    let mut refused = 0;
    for path in [
        "/info",
        "/execution-parameters",
        "/metrics",
        "/no-such-route",
    ] {
        assert_refused(&get_with(&s, path, None), path);
        refused += 1;
    }
    assert_refused(&predict_with(&s, None), "no token");
    assert_refused(
        &predict_with(&s, Some("token-a-7f3")),
        "a prefix of a token",
    );
    assert_refused(&predict_with(&s, Some("wrong-token-zz")), "a wrong token");
    refused += 3;
    let (status, header) = challenge(&s, "/info", None);
    assert_eq!((status, header.as_str()), (401, "Bearer realm=\"mlapp\""));
    let (status, header) = challenge(&s, "/info", Some("Bearer wrong-token-zz"));
    assert_eq!(status, 401);
    assert!(header.contains("error=\"invalid_token\""), "{header}");
    let (status, _) = challenge(&s, "/info", Some("Basic dG9rZW4tYS03ZjNr"));
    assert_eq!(status, 401);
    refused += 3;

    assert_predicts(&predict_with(&s, Some("token-a-7f3k")), "first token");
    assert_predicts(&predict_with(&s, Some("token-b-9x2q")), "second token");
    assert_eq!(get_with(&s, "/info", Some("token-b-9x2q")).status, 200);

    let m = get_with(&s, "/metrics", Some("token-a-7f3k"));
    assert_eq!(m.status, 200);
    let counted = metric(
        &m.body,
        "mlapp_rejected_requests_total{reason=\"unauthorized\"}",
    );
    assert_eq!(counted, refused as f64, "{}", m.body);

    let log = std::fs::read_to_string(&log).unwrap();
    for secret in [
        "token-a-7f3k",
        "token-b-9x2q",
        "wrong-token-zz",
        "dG9rZW4tYS03ZjNr",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    // Refusals are debug lines only, so a scan cannot fill the log at the default level:
    // above debug there is at most the summary of refusals, every 10 s.
    let lines_401: Vec<&str> = log.lines().filter(|l| l.contains(" 401 ")).collect();
    assert!(!lines_401.is_empty(), "no debug line for a 401:\n{log}");
    let summaries = lines_401
        .iter()
        .filter(|l| l.contains("since the last summary"))
        .count();
    assert!(summaries <= 1, "{summaries} summaries:\n{log}");
    for line in lines_401 {
        assert!(
            line.contains(" DEBUG ") || line.contains("since the last summary"),
            "a 401 logged above debug: {line}"
        );
    }
}

/// Polls `token` on /info until it gets `want`, up to 10 s.
fn wait_status(s: &Server, token: &str, want: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get_with(s, "/info", Some(token)).status;
        if got == want {
            return;
        }
        assert!(Instant::now() < until, "{what}: still {got} after 10 s");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn sighup_rotates_the_tokens_and_a_broken_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "old-token\n");
    let log = dir.path().join("log");
    let s = Server::start_logging(
        Some("serve"),
        &[
            "--model-dir",
            model_dir("logreg").to_str().unwrap(),
            "--auth-token-file",
            tokens.to_str().unwrap(),
        ],
        &[("RUST_LOG", "info,ort=warn")],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    s.wait_ready(Duration::from_secs(60));
    assert_eq!(get_with(&s, "/info", Some("old-token")).status, 200);
    assert_eq!(get_with(&s, "/info", Some("new-token")).status, 401);

    // Mid-rotation both are valid; then the old one is dropped.
    std::fs::write(&tokens, "old-token\nnew-token\n").unwrap();
    send_signal(s.pid(), libc::SIGHUP);
    wait_status(&s, "new-token", 200, "new token after the first SIGHUP");
    assert_eq!(get_with(&s, "/info", Some("old-token")).status, 200);
    std::fs::write(&tokens, "new-token\n").unwrap();
    send_signal(s.pid(), libc::SIGHUP);
    wait_status(&s, "old-token", 401, "old token after the second SIGHUP");
    assert_predicts(&predict_with(&s, Some("new-token")), "rotated token");

    // An emptied file is a mistake, not a request to lock everyone out.
    std::fs::write(&tokens, "# nothing yet\n").unwrap();
    send_signal(s.pid(), libc::SIGHUP);
    let until = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("keeping the 1 bearer tokens in force")
    {
        assert!(
            Instant::now() < until,
            "no log of the refused reload:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("holds no token"));
    assert_eq!(get_with(&s, "/info", Some("new-token")).status, 200);
    assert_eq!(get_with(&s, "/ping", None).status, 200);
}

#[test]
fn a_token_file_that_cannot_be_used_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-tokens");
    let empty = token_file(dir.path(), "# no token yet\n\n");
    for (file, want) in [
        (&missing, "cannot read the token file"),
        (&empty, "holds no token"),
    ] {
        let out = crate::common::run_bounded(
            Command::new(env!("CARGO_BIN_EXE_mlapp"))
                .args(["serve", "--port", "0", "--model-dir"])
                .arg(model_dir("logreg"))
                .arg("--auth-token-file")
                .arg(file),
            std::time::Duration::from_secs(30),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want) && err.contains(file.to_str().unwrap()),
            "{err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    }
}
