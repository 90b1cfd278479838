//! Slow, stalled, idle and malformed clients over raw TCP, and handlers that fail: each is
//! cut off by a documented timeout or limit while other clients keep being served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::batching::metric;
use crate::common::{self, model_dir, xgboost_rows, Server};

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// A normal request meanwhile: answered, and quickly.
fn served_quickly(s: &Server) {
    let t = Instant::now();
    let r = s.post(Some("text/csv"), None, &xgboost_rows(3));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

/// Reads until the server closes the connection (or `limit` passes); what it sent.
fn read_until_closed(conn: &mut TcpStream, limit: Duration) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match conn.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            // A reset is a close too.
            Err(_) => return Some(String::from_utf8_lossy(&got).into_owned()),
        }
    }
    None
}

#[test]
fn a_head_trickled_one_byte_at_a_time_is_cut_off_after_5_s() {
    let s = Server::ready(&model_dir("xgboost"), &[]);
    let mut conn = TcpStream::connect(addr(&s)).unwrap();
    let head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut cut = None;
    for &b in head.iter() {
        if conn.write_all(&[b]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(3) && started.elapsed() < Duration::from_secs(4)
        {
            served_quickly(&s);
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let cut = cut.or_else(|| {
        read_until_closed(&mut conn, Duration::from_secs(5)).map(|answer| {
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
                "{answer}"
            );
            started.elapsed()
        })
    });
    let cut = cut.expect("a head trickled for 15 s was never cut off");
    assert!(cut < Duration::from_secs(12), "cut off only after {cut:?}");
    served_quickly(&s);
}

#[test]
fn a_stalled_body_gets_408_and_the_connection_is_closed() {
    let s = Server::ready(&model_dir("xgboost"), &["--body-idle-timeout", "1"]);
    let mut conn = TcpStream::connect(addr(&s)).unwrap();
    conn.write_all(
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 1000\r\n\r\n0.5,0.25,",
    )
    .unwrap();
    let started = Instant::now();
    served_quickly(&s);
    let answer = read_until_closed(&mut conn, Duration::from_secs(10))
        .expect("the stalled request was never answered");
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(answer.contains("--body-idle-timeout"), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    served_quickly(&s);
    let m = s.get("/metrics").body;
    assert_eq!(
        metric(&m, "mlapp_rejected_requests_total{reason=\"body_timeout\"}"),
        1.0
    );
}

#[test]
fn a_stalled_streamed_body_in_batch_mode_gets_408_too() {
    let s = Server::ready(
        &model_dir("xgboost"),
        &["--batch", "--body-idle-timeout", "1"],
    );
    let mut conn = TcpStream::connect(addr(&s)).unwrap();
    let mut req = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\n".to_vec();
    req.extend_from_slice(&xgboost_rows(3));
    conn.write_all(&req).unwrap();
    let answer = read_until_closed(&mut conn, Duration::from_secs(10))
        .expect("the stalled request was never answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    served_quickly(&s);
}

#[test]
fn thousands_of_idle_connections_do_not_stop_service_and_are_closed() {
    // The test process's descriptor limit (inherited by the server) must hold them.
    let want: u64 = 2_000;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want * 3 && lim.rlim_max >= want * 3 {
            lim.rlim_cur = want * 3;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    let n = (want.min(lim.rlim_cur / 3)) as usize;
    assert!(n >= 500, "descriptor limit too low here: {}", lim.rlim_cur);
    let s = Server::ready(&model_dir("xgboost"), &[]);
    let mut idle: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    let opened = Instant::now();
    for _ in 0..5 {
        served_quickly(&s);
    }
    // Connections that never send a request head are closed after the 5 s head timeout.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(opened.elapsed()));
    let mut closed = 0;
    for c in idle.iter_mut() {
        if read_until_closed(c, Duration::from_secs(5)).is_some() {
            closed += 1;
        }
    }
    assert_eq!(
        closed, n,
        "idle connections still open after the head timeout"
    );
    served_quickly(&s);
}

#[test]
fn a_body_longer_than_announced_is_cut_at_its_length() {
    let s = Server::ready(&model_dir("xgboost"), &[]);
    let row = xgboost_rows(1);
    let mut conn = TcpStream::connect(addr(&s)).unwrap();
    let mut req = format!(
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
        row.len()
    )
    .into_bytes();
    req.extend_from_slice(&row);
    // What follows the announced length is read as the next request: not HTTP, so refused.
    req.extend_from_slice(&[b'9'; 5000]);
    conn.write_all(&req).unwrap();
    let answer = read_until_closed(&mut conn, Duration::from_secs(10)).expect("no close");
    let first = answer.split("HTTP/1.1 ").nth(1).unwrap_or("");
    assert!(first.starts_with("200"), "{answer}");
    // The extra bytes did not join the first body: its answer has one line.
    let body = first.split("\r\n\r\n").nth(1).unwrap_or("");
    assert_eq!(body.trim().lines().count(), 1, "{answer}");
    served_quickly(&s);
}

#[test]
fn bodies_being_read_are_bounded_in_bytes() {
    let s = Server::ready(
        &model_dir("xgboost"),
        &[
            "--body-memory-mb",
            "3",
            "--max-payload-mb",
            "2.5",
            "--body-idle-timeout",
            "20",
        ],
    );
    // Announcing a size holds nothing: only bytes that arrived count. Many connections that
    // announce 2 MiB and send nothing leave the budget free.
    let mut idle: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = TcpStream::connect(addr(&s)).unwrap();
            c.write_all(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 2097152\r\n\r\n1,",
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    served_quickly(&s);
    assert_eq!(
        s.post(Some("text/csv"), None, &xgboost_rows(2_000)).status,
        200,
        "announced sizes took the budget"
    );
    idle.clear();
    // A slow upload that sent 1.9 MiB of its 2 MiB holds that much.
    let mut slow = TcpStream::connect(addr(&s)).unwrap();
    let mut head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 2097152\r\n\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'1', 1_990_000));
    slow.write_all(&head).unwrap();
    // Give the server time to take it, and check that it did (no answer to it yet).
    std::thread::sleep(Duration::from_millis(500));
    slow.set_nonblocking(true).unwrap();
    let mut peek = [0u8; 64];
    assert!(
        matches!(slow.read(&mut peek), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the slow upload was answered already"
    );
    // Until the server has read the slow body the budget may still fit this one (and it is
    // then answered 422: ones are no rows for this model); retry until refused.
    let big = vec![b'1'; 2 << 20];
    let until = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let r = s.post(Some("text/csv"), None, &big);
        if r.status == 503 || Instant::now() > until {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(refused.status, 503, "{}", refused.body);
    let (code, msg) = refused.error();
    assert_eq!(code, "overloaded");
    assert!(msg.contains("--body-memory-mb"), "{msg}");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    // Small bodies still fit.
    served_quickly(&s);
    drop(slow);
    // Once the slow client is gone, its bytes are free again.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.post(Some("text/csv"), None, &xgboost_rows(2_000));
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < until, "budget not released: {}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_request_that_timed_out_holds_its_ticket_until_its_decode_ends() {
    let s = Server::ready(
        &model_dir("xgboost"),
        &["--queue-capacity", "1", "--max-payload-mb", "32"],
    );
    let rows = String::from_utf8(xgboost_rows(40_000)).unwrap();
    let rows: Vec<String> = rows.lines().map(|l| format!("[{l}]")).collect();
    let big = format!("[{}]", rows.join(","));
    let r = common::reply(
        common::agent()
            .post(&format!("{}/invocations", s.base))
            .set("Content-Type", "application/json")
            .set("X-Mlapp-Timeout-Ms", "400")
            .send_bytes(big.as_bytes()),
    );
    assert_eq!(r.status, 504, "{}", r.body);
    // The body arrives in well under 400 ms, its decode (over a second in a debug build)
    // does not: the deadline passed while it ran. It is still running on the blocking pool
    // and still counts against capacity.
    assert_eq!(
        metric(
            &s.get("/metrics").body,
            "mlapp_stage_duration_seconds_count{stage=\"decode\"}"
        ),
        0.0,
        "the decode ended before the deadline: the test shows nothing"
    );
    // Its decode is still running on the blocking pool and still counts against capacity.
    let next = s.post(Some("text/csv"), None, &xgboost_rows(1));
    assert_eq!(next.status, 503, "{}", next.body);
    assert_eq!(next.error().0, "overloaded");
    let until = Instant::now() + Duration::from_secs(30);
    while s.post(Some("text/csv"), None, &xgboost_rows(1)).status != 200 {
        assert!(Instant::now() < until, "capacity never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_panicking_handler_answers_500_with_the_error_shape_and_is_counted() {
    let s = Server::start_with(
        Some("serve"),
        &["--model-dir", model_dir("xgboost").to_str().unwrap()],
        &[("MLAPP_TEST_PANICS", "1")],
    );
    s.wait_ready(Duration::from_secs(60));
    for _ in 0..3 {
        let r = common::reply(
            common::agent()
                .post(&format!("{}/invocations", s.base))
                .set("Content-Type", "text/csv")
                .set("X-Mlapp-Test-Panic", "1")
                .send_bytes(&xgboost_rows(1)),
        );
        assert_eq!(r.status, 500, "{}", r.body);
        let (code, msg) = r.error();
        assert_eq!(code, "internal_error");
        assert!(msg.contains("a test asked for a panic"), "{msg}");
    }
    served_quickly(&s);
    let m = s.get("/metrics").body;
    assert_eq!(metric(&m, "mlapp_handler_panics_total"), 3.0);
}

#[test]
fn refused_requests_are_summarized_in_the_log_not_logged_one_by_one() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let s = Server::start_logging(
        Some("serve"),
        &["--model-dir", model_dir("xgboost").to_str().unwrap()],
        &[("RUST_LOG", "warn")],
        Stdio::from(log.reopen().unwrap()),
    );
    s.wait_ready(Duration::from_secs(60));
    for _ in 0..300 {
        assert_eq!(s.post(Some("text/plain"), None, b"x").status, 415);
    }
    served_quickly(&s);
    let text = std::fs::read_to_string(log.path()).unwrap();
    let warned = text.lines().filter(|l| l.contains("WARN")).count();
    assert!(warned <= 2, "{warned} warnings for 300 refusals:\n{text}");
    assert!(text.contains("refused"), "no summary:\n{text}");
}
