//! Several mlapp processes sharing jobs through one PostgreSQL: a job started through one
//! replica, checked through another, finished by all, one of them killed mid-item.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::moto::{pairs, Moto};
use crate::common::{model_dir, payload, send_signal, Server};
use crate::portal::{call, create, files, invoke, transform, wait_for, Backend};

fn replica(backend: &Backend, id: &str, envs: &[(&str, &str)]) -> Server {
    // Short, so that a killed replica's item is taken over soon; not so short that a busy
    // machine's late renewal loses it.
    replica_with_lease(backend, id, envs, "5")
}

fn replica_with_lease(backend: &Backend, id: &str, envs: &[(&str, &str)], lease: &str) -> Server {
    let mut args = backend.args();
    args.extend(
        [
            "--model-dir",
            model_dir("logreg").to_str().expect("utf-8"),
            "--portal-poll-seconds",
            "0.1",
            "--portal-lease-seconds",
            lease,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut envs = envs.to_vec();
    envs.push(("MLAPP_REPLICA_ID", id));
    let s = Server::start_with(Some("serve"), &args, &envs);
    s.wait_ready(Duration::from_secs(60));
    crate::portal::wait_for_portal(&s);
    s
}

/// Waits (checking through `s`) until `replica` scores an item of `job`; that item's input.
fn wait_until_held(s: &Server, job: &str, replica: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let v = call(
            s,
            "GET",
            &format!("/api/providers/prediction/check?name={job}"),
            None,
        )
        .json();
        let items = v["items"].as_array().expect("items");
        if let Some(i) = items
            .iter()
            .find(|i| i["status"] == "running" && i["replica"] == replica)
        {
            return i["input"].clone();
        }
        assert_ne!(
            v["status"], "Completed",
            "{job} ended before {replica} took an item: {v}"
        );
        assert!(Instant::now() < until, "{replica} never held an item: {v}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `files` files of `rows` example records each.
fn input(dir: &Path, files: usize, rows: usize) {
    let one = payload("logreg", "rows.csv");
    let lines: Vec<&[u8]> = one
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    std::fs::create_dir_all(dir).expect("mkdir");
    for f in 0..files {
        let mut body = Vec::new();
        for r in 0..rows {
            // Each file its own rotation of the rows, so that a file in the wrong place shows.
            body.extend_from_slice(lines[(r + f) % lines.len()]);
            body.push(b'\n');
        }
        std::fs::write(dir.join(format!("part-{f:03}.csv")), body).expect("write");
    }
}

#[test]
fn three_replicas_share_a_job_and_one_killed_mid_item_loses_nothing() {
    let backend = Backend::postgres();
    let work = tempfile::tempdir().expect("temp dir");
    let (inp, out) = (work.path().join("in"), work.path().join("out"));
    input(&inp, 12, 30_000);
    let r1 = replica(&backend, "r1", &[]);
    let r2 = replica(&backend, "r2", &[]);
    let mut r3 = Some(replica(&backend, "r3", &[]));
    let spec = json!({"name": "monthly", "model": model_dir("logreg"), "input": inp, "output": out,
                      "labels": {"series": "gender"}});
    let r = create(&r1, &spec);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = invoke(&r2, "monthly");
    assert_eq!(r.status, 202, "{}", r.body);

    // Kill r3 (SIGKILL: no drain, no goodbye) while it scores an item.
    let killed_input = wait_until_held(&r1, "monthly", "r3");
    let r3 = r3.take().expect("r3");
    send_signal(r3.pid(), libc::SIGKILL);
    drop(r3);

    let v = wait_for(
        &r2,
        "monthly",
        &["Completed", "PartiallyCompleted", "Failed"],
        Duration::from_secs(300),
    );
    assert_eq!(v["status"], "Completed", "{v}");
    let items = v["items"].as_array().unwrap();
    let item = items.iter().find(|i| i["input"] == killed_input).unwrap();
    assert!(
        item["attempts"].as_i64().unwrap() >= 2,
        "the killed item was not redone: {item}"
    );
    assert_ne!(item["replica"], "r3", "{item}");
    let by: std::collections::BTreeSet<&str> =
        items.iter().filter_map(|i| i["replica"].as_str()).collect();
    assert!(
        by.contains("r1") && by.contains("r2"),
        "the items were not shared: {by:?}"
    );
    assert_eq!(v["progress"]["records_ok"], 12 * 30_000);

    // Byte for byte what one `mlapp transform` writes, and nothing else in the folder (no
    // half-written output of the killed replica).
    let expected = work.path().join("expected");
    transform(&inp, &expected, &[]);
    let (got, want) = (files(&out), files(&expected));
    assert_eq!(
        got.len(),
        want.len(),
        "{:?}",
        got.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((gn, gb), (wn, wb)) in got.iter().zip(&want) {
        assert_eq!(gn, wn);
        assert!(gb == wb, "{gn} differs from mlapp transform's");
    }
    // The history names the replicas and the moves.
    let moves: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(moves, ["Created", "Queued", "InProgress", "Completed"]);
    assert_eq!(v["events"][0]["replica"], "r1");
    assert_eq!(v["events"][1]["replica"], "r2");
}

#[test]
fn replicas_read_and_write_jobs_on_s3() {
    let backend = Backend::postgres();
    let moto = Moto::start();
    moto.create_bucket("data");
    let env = moto.env();
    let envs = pairs(&env);
    let work = tempfile::tempdir().expect("temp dir");
    let inp = work.path().join("in");
    input(&inp, 4, 500);
    for (name, body) in files(&inp) {
        moto.put("data", &format!("monthly/in/{name}"), body);
    }
    let r1 = replica(&backend, "s1", &envs);
    let r2 = replica(&backend, "s2", &envs);
    let spec = json!({"name": "on-s3", "model": model_dir("logreg"),
                      "input": "s3://data/monthly/in/", "output": "s3://data/monthly/out/",
                      "id_columns": []});
    assert_eq!(create(&r1, &spec).status, 201);
    assert_eq!(invoke(&r2, "on-s3").status, 202);
    let v: Value = wait_for(
        &r1,
        "on-s3",
        &["Completed", "Failed"],
        Duration::from_secs(120),
    );
    assert_eq!(v["status"], "Completed", "{v}");
    let expected = work.path().join("expected");
    transform(&inp, &expected, &[]);
    for (name, body) in files(&expected) {
        let got = moto.get("data", &format!("monthly/out/{name}"));
        assert!(
            got == body,
            "s3://data/monthly/out/{name} differs from mlapp transform's"
        );
    }
}

/// SIGTERM gives an item back at once (no lease to wait out, no attempt spent), and `stop`
/// on a running job waits for the items being scored, keeps what is done, and resumes.
#[test]
fn a_replica_shutting_down_gives_its_item_back_and_stop_resume_loses_nothing() {
    let backend = Backend::postgres();
    let work = tempfile::tempdir().expect("temp dir");
    let (inp, out) = (work.path().join("in"), work.path().join("out"));
    input(&inp, 8, 30_000);
    // Leases far longer than the job: only a given-back item is scored again in time.
    let r1 = replica_with_lease(&backend, "t1", &[], "120");
    let mut r2 = Some(replica_with_lease(&backend, "t2", &[], "120"));
    let spec =
        json!({"name": "rolling", "model": model_dir("logreg"), "input": inp, "output": out});
    assert_eq!(create(&r1, &spec).status, 201);
    assert_eq!(invoke(&r1, "rolling").status, 202);
    let held = wait_until_held(&r1, "rolling", "t2");
    let mut t2 = r2.take().expect("t2");
    send_signal(t2.pid(), libc::SIGTERM);
    assert!(
        t2.wait_exit(Duration::from_secs(30)).is_some(),
        "t2 did not exit on SIGTERM"
    );
    // Stop while r1 scores; it ends Stopped, and the done files are kept.
    let r = call(
        &r1,
        "POST",
        "/api/providers/prediction/stop?name=rolling",
        None,
    );
    assert!(matches!(r.status, 200 | 202), "{}", r.body);
    let v = wait_for(
        &r1,
        "rolling",
        &["Stopped", "Completed"],
        Duration::from_secs(60),
    );
    if v["status"] == "Stopped" {
        assert!(
            v["reason"].as_str().unwrap().contains("outputs are kept"),
            "{v}"
        );
        assert_eq!(invoke(&r1, "rolling").status, 202);
    }
    let v = wait_for(
        &r1,
        "rolling",
        &["Completed", "Failed"],
        Duration::from_secs(60),
    );
    assert_eq!(v["status"], "Completed", "{v}");
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["input"] == held)
        .unwrap()
        .clone();
    assert_eq!(item["replica"], "t1", "{item}");
    assert_eq!(
        item["attempts"], 1,
        "a given-back item spent an attempt: {item}"
    );
    let expected = work.path().join("expected");
    transform(&inp, &expected, &[]);
    assert!(
        files(&out) == files(&expected),
        "outputs differ from mlapp transform's"
    );
}
