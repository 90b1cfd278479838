//! The prediction-job portal through its routes, the same suite on the embedded SQLite store
//! and on a real PostgreSQL; the store's claiming raced by many claimers on both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::postgres::Postgres;
use crate::common::{agent, model_dir, payload, reply, run_bounded, Reply, Server};
use mlapp::portal::store::{NewItem, Outcome, Store};
use mlapp::portal::{ItemStatus, JobStatus};

pub enum Backend {
    Sqlite(tempfile::TempDir),
    /// The server, kept running as long as the backend.
    Postgres(#[allow(dead_code)] Postgres, String),
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    pub fn postgres() -> Backend {
        let pg = Postgres::start();
        let url = pg.database("portal");
        Backend::Postgres(pg, url)
    }

    pub fn args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite(dir) => vec!["--state-dir".into(), dir.path().display().to_string()],
            Backend::Postgres(_, url) => vec!["--db-url".into(), url.clone()],
        }
    }

    pub fn url(&self) -> String {
        match self {
            Backend::Sqlite(dir) => {
                format!("sqlite://{}?mode=rwc", dir.path().join("race.db").display())
            }
            Backend::Postgres(_, url) => url.clone(),
        }
    }
}

pub fn call(s: &Server, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let req = agent().request(method, &format!("{}{path}", s.base));
    reply(match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    })
}

/// `create` with this definition.
pub fn create(s: &Server, body: &Value) -> Reply {
    call(s, "POST", "/api/providers/prediction/create", Some(body))
}

/// `invoke` of the job named, by the query.
pub fn invoke(s: &Server, name: &str) -> Reply {
    call(
        s,
        "POST",
        &format!("/api/providers/prediction/invoke?name={name}"),
        None,
    )
}

pub fn portal_server(backend: &Backend, extra: &[&str]) -> Server {
    let mut args: Vec<String> = backend.args();
    args.extend(["--portal-poll-seconds", "0.1"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::ready(&model_dir("logreg"), &args);
    wait_for_portal(&s);
    s
}

/// The portal connects to its store after the port is bound: wait until it answers.
pub fn wait_for_portal(s: &Server) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.get("/api/providers/prediction/list");
        if r.status == 200 {
            return;
        }
        assert!(
            Instant::now() < until,
            "the portal did not come up: {} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until the job is in one of `states`.
pub fn wait_for(s: &Server, name: &str, states: &[&str], limit: Duration) -> Value {
    let until = Instant::now() + limit;
    loop {
        let r = call(
            s,
            "GET",
            &format!("/api/providers/prediction/check?name={name}"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if states.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(
            Instant::now() < until,
            "job {name} not in {states:?} after {limit:?}: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mlapp transform` on the same input: what every portal job must write, byte for byte.
pub fn transform(input: &Path, output: &Path, extra: &[&str]) {
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mlapp"))
            .args(["transform", "--model-dir"])
            .arg(model_dir("logreg"))
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(output)
            .args(extra),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "transform: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir`, by relative path.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            (rel, std::fs::read(&p).expect("read"))
        })
        .collect();
    found.sort();
    found
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Three files of the example rows (25, 50 and 75 records), one in a sub-folder.
pub fn example_input(dir: &Path) -> usize {
    let rows = payload("logreg", "rows.csv");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    for (name, times) in [("a.csv", 1), ("b.csv", 2), ("sub/c.csv", 3)] {
        let mut body = Vec::new();
        for _ in 0..times {
            body.extend_from_slice(&rows);
            if !body.ends_with(b"\n") {
                body.push(b'\n');
            }
        }
        std::fs::write(dir.join(name), body).expect("write");
    }
    150
}

pub fn spec(name: &str, input: &Path, output: &Path) -> Value {
    json!({"name": name, "model": model_dir("logreg"), "input": input, "output": output})
}

fn api_suite(backend: Backend) {
    let work = tempfile::tempdir().expect("temp dir");
    let input = work.path().join("in");
    let rows = example_input(&input);
    let s = portal_server(&backend, &[]);
    let create = |body: &Value| self::create(&s, body);
    // Invoked by a JSON body here (the other tests name the job in the query).
    let invoke = |name: &str| {
        call(
            &s,
            "POST",
            "/api/providers/prediction/invoke",
            Some(&json!({"name": name})),
        )
    };

    // Create, then the same definition again in another key order (a replay), then another
    // definition under the same name.
    let mut first = spec("gender-2026-10", &input, &work.path().join("out1"));
    first["labels"] = json!({"series": "gender", "month": "2026-10"});
    let r = create(&first);
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    assert_eq!(created["status"], "Created");
    assert_eq!(created["progress"]["items_total"], 3);
    assert!(
        created["model"]["version"]
            .as_str()
            .unwrap()
            .starts_with("md5:"),
        "{created}"
    );
    let reordered: Value = serde_json::from_str(&{
        let mut m: Vec<(String, Value)> = first.as_object().unwrap().clone().into_iter().collect();
        m.reverse();
        serde_json::to_string(&m.into_iter().collect::<serde_json::Map<_, _>>()).unwrap()
    })
    .unwrap();
    let r = create(&reordered);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["created_at"], created["created_at"]);
    let mut other = first.clone();
    other["output"] = json!(work.path().join("elsewhere"));
    let r = create(&other);
    assert_eq!(
        (r.status, r.error().0.as_str()),
        (409, "job_conflict"),
        "{}",
        r.body
    );

    // Every bad input is a 4xx that names the field.
    let bad = |body: Value, field: &str| {
        let r = create(&body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["error"]["field"], field, "{}", r.body);
        assert_eq!(r.error().0, "invalid_job");
    };
    bad(spec("bad_name", &input, work.path()), "name");
    bad(
        json!({"name": "x", "modle": "m", "input": "i", "output": "o"}),
        "body",
    );
    let mut b = spec("x", &input, work.path());
    b["model"] = json!(work.path().join("no-such-model"));
    bad(b, "model");
    bad(
        spec("x", &work.path().join("missing"), work.path()),
        "input",
    );
    let mut b = spec("x", &input, work.path());
    b["content_type"] = json!("image/png");
    bad(b, "content_type");
    let mut b = spec("x", &input, work.path());
    b["compare_to"] = json!("no-such-job");
    bad(b, "compare_to");
    let mut b = spec("x", &input, work.path());
    b["max_attempts"] = json!(0);
    bad(b, "max_attempts");
    let r = call(&s, "GET", "/api/providers/prediction/check?name=nope", None);
    assert_eq!((r.status, r.error().0.as_str()), (404, "job_not_found"));
    assert_eq!(invoke("nope").status, 404);
    let r = call(&s, "GET", "/api/providers/prediction/check?name=a_b", None);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(
        &s,
        "GET",
        "/api/providers/prediction/list?status=Done",
        None,
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("status"))
    );

    // Invoke: queued at once, then run to the end; a second invoke changes nothing.
    let r = invoke("gender-2026-10");
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(matches!(invoke("gender-2026-10").status, 200 | 409));
    let done = wait_for(
        &s,
        "gender-2026-10",
        &["Completed"],
        Duration::from_secs(60),
    );
    let expected = work.path().join("expected");
    transform(&input, &expected, &[]);
    assert_eq!(files(&work.path().join("out1")), files(&expected));
    assert_eq!(done["progress"]["records_ok"], rows);
    assert_eq!(done["progress"]["items_done"], 3);
    assert_eq!(done["attempt"], 1);
    let path: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["Created", "Queued", "InProgress", "Completed"]);
    assert!(done["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["replica"].as_str().is_some_and(|r| !r.is_empty())));
    // The results, against counts taken from the output files themselves.
    let mut counted = std::collections::BTreeMap::<String, u64>::new();
    for (_, body) in files(&expected) {
        for line in String::from_utf8(body).unwrap().lines() {
            *counted
                .entry(line.split(',').next().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let results = &done["results"];
    assert_eq!(results["rows"], rows);
    assert_eq!(
        serde_json::to_value(&counted).unwrap(),
        results["label_counts"]
    );
    let bins: u64 = results["score_histogram"]["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .sum();
    assert_eq!(bins as usize, rows);
    assert_eq!(results["score_histogram"]["score_of"], "male");

    // The next month compares with it.
    let mut second = spec("gender-2026-11", &input, &work.path().join("out2"));
    second["labels"] = json!({"series": "gender", "month": "2026-11"});
    second["compare_to"] = json!("previous-in-series");
    second["gates"] = json!([{"metric": "label_share_linf", "max": 0.01}, {"metric": "row_count_change", "max": 0.0}]);
    assert_eq!(create(&second).status, 201);
    assert_eq!(invoke("gender-2026-11").status, 202);
    let v = wait_for(
        &s,
        "gender-2026-11",
        &["Completed"],
        Duration::from_secs(60),
    );
    let c = &v["comparison"];
    assert_eq!(c["base"], "gender-2026-10", "{c}");
    assert_eq!(c["label_share_linf"], 0.0);
    assert_eq!(c["score_js_divergence"], 0.0);
    assert_eq!(c["passed"], true, "{c}");

    // list, by label and by status, newest first.
    let r = call(
        &s,
        "GET",
        "/api/providers/prediction/list?label=series:gender",
        None,
    )
    .json();
    let names: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gender-2026-11", "gender-2026-10"]);
    let r = call(
        &s,
        "GET",
        "/api/providers/prediction/list?label=month:2026-10&status=Completed",
        None,
    )
    .json();
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1, "{r}");

    // Stop before it runs, then resume.
    assert_eq!(
        create(&spec("stopped", &input, &work.path().join("out3"))).status,
        201
    );
    let r = call(
        &s,
        "POST",
        "/api/providers/prediction/stop?name=stopped",
        None,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for(&s, "stopped", &["Stopped"], Duration::from_secs(30));
    assert_eq!(invoke("stopped").status, 202);
    let v = wait_for(&s, "stopped", &["Completed"], Duration::from_secs(60));
    // Stopped before it ever ran: this is its first run.
    assert_eq!(v["attempt"], 1);

    // A bad record fails its file and, with no failure budget, the job; once the file is
    // fixed, invoke resumes: only the failed file is scored again.
    let broken = work.path().join("broken");
    example_input(&broken);
    let good = std::fs::read(broken.join("b.csv")).unwrap();
    let mut bad_file = good.clone();
    bad_file.splice(
        0..bad_file.iter().position(|&b| b == b',').unwrap(),
        b"abc".iter().copied(),
    );
    std::fs::write(broken.join("b.csv"), &bad_file).unwrap();
    assert_eq!(
        create(&spec("resumed", &broken, &work.path().join("out4"))).status,
        201
    );
    assert_eq!(invoke("resumed").status, 202);
    let v = wait_for(&s, "resumed", &["Failed"], Duration::from_secs(60));
    assert_eq!(
        v["failures"][0]["input"],
        json!(broken.join("b.csv")),
        "{v}"
    );
    assert!(
        v["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("row 1"),
        "{v}"
    );
    assert!(
        v["reason"].as_str().unwrap().contains("max_failed_files"),
        "{v}"
    );
    // (input, status, ended_at) of each item when the job failed.
    let before: Vec<(Value, Value, Value)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["input"].clone(),
                i["status"].clone(),
                i["ended_at"].clone(),
            )
        })
        .collect();
    std::fs::write(broken.join("b.csv"), &good).unwrap();
    assert_eq!(invoke("resumed").status, 202);
    let v = wait_for(&s, "resumed", &["Completed"], Duration::from_secs(60));
    assert_eq!(v["attempt"], 2);
    for (i, item) in v["items"].as_array().unwrap().iter().enumerate() {
        // Items done before keep their output and their end; the rest ran again.
        assert_eq!(item["input"], before[i].0);
        assert_eq!(
            item["ended_at"] == before[i].2,
            before[i].1 == "done",
            "{item}"
        );
    }
    assert_eq!(files(&work.path().join("out4")), files(&expected));
    // A completed job is not run again.
    assert_eq!(invoke("resumed").status, 409);

    // With a budget of one file, the bad file leaves the job partly completed.
    std::fs::write(broken.join("b.csv"), &bad_file).unwrap();
    let mut partial = spec("partial", &broken, &work.path().join("out5"));
    partial["max_failed_files"] = json!(1);
    assert_eq!(create(&partial).status, 201);
    assert_eq!(invoke("partial").status, 202);
    let v = wait_for(
        &s,
        "partial",
        &["PartiallyCompleted"],
        Duration::from_secs(60),
    );
    assert_eq!(
        (
            v["progress"]["items_done"].as_u64(),
            v["progress"]["items_failed"].as_u64()
        ),
        (Some(2), Some(1))
    );

    // Placeholders over the record budget fail the job with every file done; once the file
    // is fixed, resuming scores the file that had placeholders again, and completes.
    let mut placeholders = spec("placeholders", &broken, &work.path().join("out6"));
    placeholders["bad_records"] = json!("placeholder");
    placeholders["max_failed_records"] = json!(0);
    assert_eq!(create(&placeholders).status, 201);
    assert_eq!(invoke("placeholders").status, 202);
    let v = wait_for(&s, "placeholders", &["Failed"], Duration::from_secs(60));
    assert!(
        v["reason"].as_str().unwrap().contains("max_failed_records"),
        "{v}"
    );
    assert_eq!(v["progress"]["records_failed"], 1, "{v}");
    std::fs::write(broken.join("b.csv"), &good).unwrap();
    assert_eq!(invoke("placeholders").status, 202);
    let v = wait_for(&s, "placeholders", &["Completed"], Duration::from_secs(60));
    assert_eq!(v["progress"]["records_failed"], 0, "{v}");
    assert_eq!(files(&work.path().join("out6")), files(&expected));

    // The counts are the sweep's (every second here): /metrics never waits on the store.
    let until = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let m = s.get("/metrics").body;
        let both = m.contains("mlapp_jobs{status=\"Completed\"} 5")
            && m.contains("mlapp_jobs{status=\"PartiallyCompleted\"} 1");
        if both || Instant::now() > until {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics.contains("mlapp_jobs{status=\"Completed\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mlapp_jobs{status=\"PartiallyCompleted\"} 1"),
        "{metrics}"
    );
}

#[test]
fn portal_api_on_sqlite() {
    api_suite(Backend::sqlite());
}

#[test]
fn portal_api_on_postgres() {
    api_suite(Backend::postgres());
}

#[test]
fn a_second_process_on_one_sqlite_store_is_refused() {
    let backend = Backend::sqlite();
    let _first = portal_server(&backend, &[]);
    let dir = match &backend {
        Backend::Sqlite(d) => d.path().display().to_string(),
        Backend::Postgres(..) => unreachable!(),
    };
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mlapp"))
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--state-dir",
                &dir,
                "--model-dir",
            ])
            .arg(model_dir("logreg")),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another mlapp uses the job store"), "{err}");
    // Naming replicas on SQLite is refused too.
    let other = tempfile::tempdir().unwrap();
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mlapp"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model-dir"])
            .arg(model_dir("logreg"))
            .arg("--state-dir")
            .arg(other.path())
            .env("MLAPP_REPLICA_ID", "r1"),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MLAPP_DB_URL=postgres"));
}

fn done_outcome() -> Outcome<'static> {
    Outcome {
        status: ItemStatus::Done,
        rows_ok: 1,
        rows_failed: 0,
        bytes_done: 1,
        tally: None,
        error: None,
    }
}

/// Many claimers on one job: every item is completed exactly once; a claim whose lease ran
/// out goes to another claimer, and the first one's late completion is refused.
async fn claimers_race(url: String) {
    let store = Store::open(&url).await.expect("store");
    let items: Vec<NewItem> = (0..300)
        .map(|i| NewItem {
            input: format!("in/{i}"),
            output: format!("out/{i}"),
            size: 1,
        })
        .collect();
    assert!(store
        .insert_job("race", "{}", "m", "v", None, "{}", &items, "test")
        .await
        .unwrap());
    assert!(store.queue("race", "test").await.unwrap());
    let done = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (store, done) = (store.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let me = format!("claimer-{n}");
            while let Some(c) = store.claim(&me, Duration::from_secs(60)).await.unwrap() {
                let outcome = done_outcome();
                assert!(
                    store.finish_item(&c, &outcome).await.unwrap(),
                    "a held lease was refused"
                );
                done.lock().unwrap().push(c.seq);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut seqs = done.lock().unwrap().clone();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..300).collect::<Vec<i64>>(),
        "an item was lost or done twice"
    );
    let stored = store.items("race", None, 1000).await.unwrap();
    assert!(stored
        .iter()
        .all(|i| i.status == ItemStatus::Done && i.attempts == 1));
    let owners: BTreeSet<_> = stored
        .iter()
        .filter_map(|i| i.lease_owner.clone())
        .collect();
    assert!(owners.len() > 1, "one claimer did everything: {owners:?}");

    // Fencing.
    let one = [NewItem {
        input: "x".into(),
        output: "y".into(),
        size: 1,
    }];
    store
        .insert_job("fenced", "{}", "m", "v", None, "{}", &one, "test")
        .await
        .unwrap();
    store.queue("fenced", "test").await.unwrap();
    let late = store
        .claim("slow", Duration::from_millis(50))
        .await
        .unwrap()
        .expect("claim");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let next = store
        .claim("fast", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("reclaim");
    assert_eq!((next.seq, next.attempts), (late.seq, 2));
    let outcome = done_outcome();
    assert_eq!(
        store
            .renew(&late, Duration::from_secs(1), 0, 0)
            .await
            .unwrap(),
        None
    );
    assert!(
        !store.finish_item(&late, &outcome).await.unwrap(),
        "a stale completion was taken"
    );
    assert_eq!(
        store
            .renew(&next, Duration::from_secs(1), 0, 0)
            .await
            .unwrap(),
        Some(JobStatus::Queued)
    );
    // Given back and claimed again by the same replica: the old claim is fenced off all the
    // same (its attempts count may repeat; its claim token does not).
    store.release(&next).await.unwrap();
    let again = store
        .claim("fast", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("claim again");
    assert_eq!((again.seq, again.attempts), (next.seq, next.attempts));
    assert!(again.token > next.token);
    assert_eq!(
        store
            .renew(&next, Duration::from_secs(1), 0, 0)
            .await
            .unwrap(),
        None
    );
    assert!(
        !store.finish_item(&next, &outcome).await.unwrap(),
        "a given-back claim completed"
    );
    assert!(store.finish_item(&again, &outcome).await.unwrap());
    store.close().await;
}

#[tokio::test]
async fn claimers_race_on_sqlite() {
    let backend = Backend::sqlite();
    claimers_race(backend.url()).await;
}

#[tokio::test]
async fn claimers_race_on_postgres() {
    let backend = Backend::postgres();
    claimers_race(backend.url()).await;
}
