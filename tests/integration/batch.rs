//! Batch Transform mode: `/execution-parameters` and the limits SageMaker's batch variables set.

use crate::common::{assert_csv_row, golden, model_dir, payload, xgboost_rows, Server};

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

/// Ten example rows with row 3 one value short and row 7 holding a word, `eol`-terminated.
fn rows_with_two_bad(eol: &str) -> (Vec<String>, Vec<u8>) {
    let text = String::from_utf8(xgboost_rows(10)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = lines[2].rsplit_once(',').unwrap().0.to_string();
    let mut cells: Vec<&str> = lines[6].split(',').collect();
    cells[4] = "abc";
    lines[6] = cells.join(",");
    let body = lines
        .iter()
        .map(|l| format!("{l}{eol}"))
        .collect::<String>();
    (lines, body.into_bytes())
}

#[test]
fn bad_records_fail_the_request_by_default() {
    let s = start(&[("SAGEMAKER_BATCH", "true")]);
    let (_, body) = rows_with_two_bad("\n");
    let r = s.post(Some("text/csv"), Some("text/csv"), &body);
    assert_eq!(r.status, 422);
    assert!(
        r.error().1.starts_with("row 3: expected 64 values"),
        "{}",
        r.body
    );
}

#[test]
fn placeholder_mode_answers_every_line_and_scores_the_good_ones() {
    let s = start(&[
        ("SAGEMAKER_BATCH", "true"),
        ("MLAPP_BAD_RECORDS", "placeholder"),
    ]);
    let gold = golden("xgboost");
    for eol in ["\n", "\r\n"] {
        let (_, body) = rows_with_two_bad(eol);
        let r = s.post(Some("text/csv"), Some("text/csv"), &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let out: Vec<&str> = r.body.split('\n').collect();
        assert_eq!(out.len(), 10, "{}", r.body);
        assert!(
            out[2].starts_with("ERROR: row 3: expected 64 values"),
            "{}",
            out[2]
        );
        assert_eq!(
            out[6],
            "ERROR: row 7, column 5 (feature \"input_4\"): expected a number (float32), got \"abc\""
        );
        for (i, line) in out.iter().enumerate().filter(|(i, _)| *i != 2 && *i != 6) {
            assert_csv_row(&gold, line, i, "placeholder mode");
        }
    }
    // JSON Lines, with a line that is not JSON, answered in JSON Lines.
    let jsonl = String::from_utf8(payload("xgboost", "rows.jsonl")).unwrap();
    let mut lines: Vec<&str> = jsonl.lines().take(5).collect();
    lines[3] = "[1, 2,";
    let r = s.post(
        Some("application/jsonlines"),
        Some("application/jsonlines"),
        lines.join("\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let out: Vec<serde_json::Value> = r
        .body
        .split('\n')
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), 5);
    let reason = out[3]["error"].as_str().unwrap();
    assert!(reason.starts_with("row 4: invalid JSON"), "{reason}");
    assert!(out[4]["label"].is_number());
    // A bad record deep in a large (chunked) body: its row counts from the body's start.
    let text = String::from_utf8(xgboost_rows(10_000)).unwrap();
    let mut rows: Vec<&str> = text.lines().collect();
    rows[8999] = "1,2";
    let r = s.post(
        Some("text/csv"),
        Some("text/csv"),
        rows.join("\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    let out: Vec<&str> = r.body.split('\n').collect();
    assert_eq!(out.len(), 10_000);
    assert!(
        out[8999].starts_with("ERROR: row 9000: expected 64 values"),
        "{}",
        out[8999]
    );
    assert_csv_row(&gold, out[9000], 9000 % 25, "after the bad record");
}

#[test]
fn one_answer_line_per_record_for_small_bodies_with_or_without_a_blank_last_line() {
    let s = start(&[("SAGEMAKER_BATCH", "true")]);
    let csv = String::from_utf8(xgboost_rows(2)).unwrap();
    let csv: Vec<&str> = csv.lines().collect();
    let jsonl = String::from_utf8(payload("xgboost", "rows.jsonl")).unwrap();
    let jsonl: Vec<&str> = jsonl.lines().collect();
    for (ctype, lines) in [("text/csv", &csv), ("application/jsonlines", &jsonl)] {
        for n in [1, 2] {
            for ending in ["", "\n", "\n\n", "\r\n"] {
                let body = lines[..n].join("\n") + ending;
                for accept in ["text/csv", "application/jsonlines"] {
                    let r = s.post(Some(ctype), Some(accept), body.as_bytes());
                    assert_eq!(r.status, 200, "{ctype} {n} {ending:?}: {}", r.body);
                    assert_eq!(
                        r.body.split('\n').count(),
                        n,
                        "{ctype} {n} {ending:?} -> {accept}"
                    );
                    assert!(!r.body.ends_with('\n'));
                }
            }
        }
    }
}

#[test]
fn chunked_request_bodies_are_read_and_limited() {
    let s = start(&[
        ("SAGEMAKER_BATCH", "true"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "10"),
    ]);
    // No Content-Length: ureq sends a reader with Transfer-Encoding: chunked.
    let post = |body: Vec<u8>| {
        crate::common::reply(
            crate::common::agent()
                .post(&format!("{}/invocations", s.base))
                .set("Content-Type", "text/csv")
                .set("Accept", "text/csv")
                .send(std::io::Cursor::new(body)),
        )
    };
    let r = post(xgboost_rows(10_000));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.split('\n').count(), 10_000);
    // Over the limit, with no length declared up front: refused once it passes the limit.
    let r = post(xgboost_rows(20_000));
    assert_eq!(r.status, 413, "{}", &r.body[..r.body.len().min(200)]);
    assert_eq!(r.error().0, "payload_too_large");
}

/// `rows` example CSV rows, made as they are read, so a test can send more than it holds.
struct Rows {
    lines: Vec<String>,
    left: usize,
    pending: Vec<u8>,
}

impl std::io::Read for Rows {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.len() < buf.len() && self.left > 0 {
            self.left -= 1;
            let line = &self.lines[self.left % self.lines.len()];
            self.pending.extend_from_slice(line.as_bytes());
            self.pending.push(b'\n');
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// `field` of /proc/PID/status (VmHWM: the peak resident set), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb / 1024.0
}

#[test]
fn max_payload_0_takes_a_body_of_any_size_as_it_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    // Live monitoring's fixed cost (the model's baseline, a sketch per feature and thread) is
    // measured in bench/monitoring.py; this bound is about the body.
    let s = start(&[
        ("SAGEMAKER_BATCH", "true"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0"),
        ("TMPDIR", tmp.path().to_str().unwrap()),
        ("MLAPP_MONITORING", "off"),
    ]);
    // Another local user taking the spool's name: a predictable one would turn the answer
    // into a 500.
    let planted = tmp.path().join(format!("mlapp-answer-{}-0", s.pid()));
    // What the process holds before the body: the binary's pages, ONNX Runtime, the model.
    let idle = status_mib(s.pid(), "VmHWM:");
    std::fs::write(&planted, b"not yours").unwrap();
    let text = String::from_utf8(payload("xgboost", "rows.csv")).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let row_bytes = lines.iter().map(|l| l.len() + 1).sum::<usize>() / lines.len();
    // More than the 100 MiB that a body read whole may have.
    let rows = (110 << 20) / row_bytes;
    let body = Rows {
        lines,
        left: rows,
        pending: Vec::new(),
    };
    let resp = crate::common::agent()
        .post(&format!("{}/invocations", s.base))
        .set("Content-Type", "text/csv")
        // JSON Lines answers (about 10 MB here) are large enough to be spooled to disk.
        .set("Accept", "application/jsonlines")
        .send(body);
    let resp = match resp {
        Ok(resp) => resp,
        Err(ureq::Error::Status(code, r)) => panic!("{code}: {}", r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut resp.into_reader(), &mut answer).unwrap();
    assert!(answer.len() > 8 << 20);
    let lines: Vec<&str> = answer.split('\n').collect();
    assert_eq!(lines.len(), rows);
    assert!(lines[rows - 1].starts_with("{\"label\":"));
    // The spooled answer is whole and in order: row k is example row (rows - 1 - k) % 25.
    let gold = golden("xgboost");
    for (k, line) in lines.iter().enumerate() {
        if k >= 25 {
            assert_eq!(*line, lines[k - 25], "answer line {k}");
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = &v["probabilities"];
        let csv = format!("{},{},{}", v["label"], p["0"], p["1"]);
        assert_csv_row(&gold, &csv, (rows - 1 - k) % 25, "spooled answer");
    }
    // ...and the spool left nothing behind (tempfile's names start with .tmp).
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| *p != planted)
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("mlapp-answer") || name.starts_with(".tmp")
        })
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");

    // Neither the body nor its columns were held whole: the peak grew by far less than the
    // body (measured from the idle process, so that the binary's own size does not count).
    let peak = status_mib(s.pid(), "VmHWM:");
    eprintln!("peak RSS {peak:.0} MiB (idle {idle:.0} MiB) for a 110 MiB body");
    assert!(
        peak - idle < 40.0,
        "peak RSS {peak:.0} MiB from {idle:.0} MiB idle for a 110 MiB body"
    );
}

#[test]
fn batch_mode_answers_line_bodies_line_for_line_when_no_type_is_asked_for() {
    let gold = golden("xgboost");
    let csv = payload("xgboost", "rows.csv");
    let jsonl = payload("xgboost", "rows.jsonl");
    let rows = String::from_utf8(csv.clone()).unwrap().lines().count();
    let check = |r: &crate::common::Reply, what: &str, json: bool| {
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        let out: Vec<&str> = r.body.split('\n').collect();
        assert_eq!(out.len(), rows, "{what}");
        for (i, line) in out.iter().enumerate() {
            let line = if json {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let p = &v["probabilities"];
                format!("{},{},{}", v["label"], p["0"], p["1"])
            } else {
                line.to_string()
            };
            assert_csv_row(&gold, &line, i, what);
        }
    };
    let s = start(&[("SAGEMAKER_BATCH", "true")]);
    for accept in [None, Some("*/*")] {
        let r = s.post(Some("text/csv"), accept, &csv);
        assert_eq!(r.content_type, "text/csv", "CSV, Accept {accept:?}");
        check(&r, &format!("CSV, Accept {accept:?}"), false);
        let r = s.post(Some("application/jsonlines"), accept, &jsonl);
        assert_eq!(r.content_type, "application/jsonlines");
        check(&r, &format!("JSON Lines, Accept {accept:?}"), true);
    }
    // A JSON document is still answered with one, and an asked-for type is still given.
    let r = s.post(None, None, &payload("xgboost", "instances.json"));
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "application/json")
    );
    let r = s.post(Some("text/csv"), Some("application/jsonlines"), &csv);
    check(&r, "CSV asked for as JSON Lines", true);

    // A default the user set wins, in batch mode too; outside it nothing changes.
    let set = start(&[
        ("SAGEMAKER_BATCH", "true"),
        ("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json"),
    ]);
    let online = start(&[]);
    for (s, what) in [(&set, "default set"), (&online, "online")] {
        for accept in [None, Some("*/*")] {
            let r = s.post(Some("text/csv"), accept, &csv);
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            assert_eq!(r.content_type, "application/json", "{what}, {accept:?}");
            let n = r.json()["predictions"].as_array().map(Vec::len);
            assert_eq!(n, Some(rows), "{what}");
        }
    }
}
