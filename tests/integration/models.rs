//! Many models in one server: the call sequence SageMaker makes to a multi-model container,
//! its status codes, least-recently-used unloading under the memory budget, unloads while
//! requests are in flight, and a model repository on S3 served by name and replaced live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batching::metric;
use crate::common::archives::model_tar_gz;
use crate::common::moto::{pairs, Moto};
use crate::common::{
    agent, assert_csv_row, golden, model_dir, payload, reply, repo, Reply, Server, Traffic,
};

fn mme(extra: &[&str]) -> Server {
    // The checkout holds the example models and fixtures: the one place loads come from.
    let root = repo().display().to_string();
    let mut args = vec!["--workers", "2", "--model-roots", root.as_str()];
    args.extend_from_slice(extra);
    let s = Server::start_with(Some("serve"), &args, &[("SAGEMAKER_MULTI_MODEL", "true")]);
    s.wait_ready(Duration::from_secs(30));
    s
}

fn load(s: &Server, name: &str, url: &str) -> Reply {
    let body = serde_json::json!({"model_name": name, "url": url}).to_string();
    reply(
        agent()
            .post(&format!("{}/models", s.base))
            .set("Content-Type", "application/json")
            .send_string(&body),
    )
}

fn delete(s: &Server, name: &str) -> Reply {
    reply(agent().delete(&format!("{}/models/{name}", s.base)).call())
}

fn invoke(s: &Server, name: &str, body: &[u8]) -> Reply {
    reply(
        agent()
            .post(&format!("{}/models/{name}/invoke", s.base))
            .set("Content-Type", "text/csv")
            .set("Accept", "text/csv")
            .send_bytes(body),
    )
}

/// `/invocations` as SageMaker sends it to a multi-model endpoint.
fn invoke_target(s: &Server, target: &str, body: &[u8]) -> Reply {
    reply(
        agent()
            .post(&format!("{}/invocations", s.base))
            .set("Content-Type", "text/csv")
            .set("Accept", "text/csv")
            .set("X-Amzn-SageMaker-Target-Model", target)
            .send_bytes(body),
    )
}

fn assert_golden(r: &Reply, model: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let gold = golden(model);
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines.len(), 25, "{what}");
    for (i, line) in lines.iter().enumerate() {
        assert_csv_row(&gold, line, i, what);
    }
}

/// Every model name `GET /models` lists, following `nextPageToken` with `limit` per page.
fn list_all(s: &Server, limit: usize) -> (Vec<String>, usize) {
    let (mut names, mut pages, mut token) = (Vec::new(), 0, None::<String>);
    loop {
        let path = match &token {
            Some(t) => format!("/models?limit={limit}&next_page_token={t}"),
            None => format!("/models?limit={limit}"),
        };
        let v = s.get(&path).json();
        pages += 1;
        let models = v["models"].as_array().expect("models");
        assert!(models.len() <= limit, "{v}");
        for m in models {
            names.push(m["modelName"].as_str().expect("modelName").to_string());
            assert!(m["modelUrl"].is_string(), "{m}");
        }
        match v["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return (names, pages),
        }
        assert!(pages < 100, "pagination does not end");
    }
}

#[test]
fn sagemakers_multi_model_call_sequence() {
    let s = mme(&[]);
    // Liveness, not "all models loaded": there are none yet.
    let ping = s.get("/ping");
    assert_eq!(
        (ping.status, ping.json()["status"].as_str()),
        (200, Some("live"))
    );
    let lr = model_dir("logreg").display().to_string();
    let xgb = model_dir("xgboost").display().to_string();
    let mlp = model_dir("mlp").display().to_string();
    assert_eq!(load(&s, "a1b2c3", &lr).status, 200);
    assert_eq!(load(&s, "d4e5f6", &xgb).status, 200);
    assert_eq!(load(&s, "mlp", &mlp).status, 200);
    // A second load of a loaded name is a conflict, whatever its URL.
    let again = load(&s, "a1b2c3", &xgb);
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.error().0, "model_already_loaded");

    let (names, pages) = list_all(&s, 2);
    assert_eq!(names, ["a1b2c3", "d4e5f6", "mlp"]);
    assert_eq!(pages, 2);
    let d = s.get("/models/d4e5f6");
    assert_eq!(d.status, 200);
    assert_eq!(d.json()["modelUrl"], xgb.as_str());

    let rows = payload("logreg", "rows.csv");
    assert_golden(&invoke(&s, "a1b2c3", &rows), "logreg", "invoke a1b2c3");
    assert_golden(&invoke(&s, "d4e5f6", &rows), "xgboost", "invoke d4e5f6");
    // SageMaker's /invocations with the Target-Model header.
    assert_golden(&invoke_target(&s, "mlp", &rows), "mlp", "target mlp");
    // MMS's opaque name wins over the header, which is the client's artifact path.
    let by_query = reply(
        agent()
            .post(&format!("{}/invocations?model_name=d4e5f6", s.base))
            .set("Content-Type", "text/csv")
            .set("Accept", "text/csv")
            .set("X-Amzn-SageMaker-Target-Model", "mlp")
            .send_bytes(&rows),
    );
    assert_golden(&by_query, "xgboost", "?model_name= and a header");

    for r in [
        invoke(&s, "nope", &rows),
        s.get("/models/nope"),
        delete(&s, "nope"),
    ] {
        assert_eq!(r.status, 404, "{}", r.body);
        assert_eq!(r.error().0, "model_not_found");
    }
    let no_name = s.post(Some("text/csv"), None, &rows);
    assert_eq!(no_name.status, 400, "{}", no_name.body);
    assert!(no_name.body.contains("X-Amzn-SageMaker-Target-Model"));

    assert_eq!(delete(&s, "a1b2c3").status, 200);
    assert_eq!(s.get("/models/a1b2c3").status, 404);
    assert_eq!(invoke(&s, "a1b2c3", &rows).status, 404);
    assert_eq!(list_all(&s, 100).0, ["d4e5f6", "mlp"]);
    // Loaded again, under the same name, from another URL.
    assert_eq!(load(&s, "a1b2c3", &mlp).status, 200);
    assert_golden(&invoke(&s, "a1b2c3", &rows), "mlp", "reloaded a1b2c3");

    // Bad load requests name what is wrong.
    for (body, says) in [
        ("{\"model_name\": \"x\"}", "url"),
        ("{\"model_name\": \"x\", \"url\": \"/a\",}", "JSON"),
        (
            "{\"model_name\": \"../x\", \"url\": \"/a\"}",
            "not a valid name",
        ),
    ] {
        let r = reply(
            agent()
                .post(&format!("{}/models", s.base))
                .send_string(body),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    let nowhere = repo().join("no/such/model").display().to_string();
    let missing = load(&s, "gone", &nowhere);
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert_eq!(missing.error().0, "model_load_failed");
    assert!(missing.body.contains(&nowhere), "{}", missing.body);
    assert_eq!(s.get("/models/gone").status, 404);
    // Only from inside --model-roots, and only plain absolute paths.
    for outside in [
        "/etc",
        "/",
        "relative/x",
        &format!("{}/../x", repo().display()),
    ] {
        let r = load(&s, "out", outside);
        assert_eq!(r.status, 400, "{outside}: {}", r.body);
        assert!(r.body.contains("--model-roots"), "{}", r.body);
    }

    // Per-model series.
    let m = s.get("/metrics").body;
    assert_eq!(metric(&m, "mlapp_models_loaded"), 3.0);
    assert_eq!(
        metric(&m, "mlapp_model_unloads_total{reason=\"asked\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "mlapp_model_loads_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "mlapp_http_requests_total{route=\"/models/{name}/invoke\",status=\"200\",model=\"d4e5f6\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "mlapp_http_requests_total{route=\"/invocations\",status=\"200\",model=\"mlp\"}"
        ),
        1.0
    );
    assert!(
        m.contains("mlapp_model_queue_depth{model=\"mlp\"} 0"),
        "{m}"
    );
}

#[test]
fn a_model_that_cannot_fit_the_budget_gets_507() {
    let s = mme(&["--model-memory-mb", "1"]);
    let r = load(&s, "lr", &model_dir("logreg").display().to_string());
    assert_eq!(r.status, 507, "{}", r.body);
    let (code, message) = r.error();
    assert_eq!(code, "insufficient_memory");
    assert!(message.contains("--model-memory-mb"), "{message}");
    assert_eq!(list_all(&s, 10).0, Vec::<String>::new());
}

#[test]
fn the_least_recently_used_model_is_unloaded_to_make_room() {
    // Two sessions each: every copy of the logistic regression is charged 2 × 5 MiB plus its
    // files (registry::memory), so 24 MiB holds two of them and not three.
    let s = mme(&["--model-memory-mb", "24", "--sessions-per-model", "2"]);
    let lr = model_dir("logreg").display().to_string();
    let rows = payload("logreg", "rows.csv");
    assert_eq!(load(&s, "a", &lr).status, 200);
    assert_eq!(load(&s, "b", &lr).status, 200);
    // `a` is used after `b` was loaded: `b` is now the least recently used.
    assert_golden(&invoke(&s, "a", &rows), "logreg", "a");
    assert_eq!(load(&s, "c", &lr).status, 200);
    assert_eq!(list_all(&s, 10).0, ["a", "c"]);
    assert_golden(&invoke(&s, "c", &rows), "logreg", "c");
    // Then `a` is the older of the two.
    assert_eq!(load(&s, "d", &lr).status, 200);
    assert_eq!(list_all(&s, 10).0, ["c", "d"]);
    let m = s.get("/metrics").body;
    assert_eq!(
        metric(&m, "mlapp_model_unloads_total{reason=\"evicted\"}"),
        2.0
    );
    assert!(metric(&m, "mlapp_models_memory_estimate_bytes") <= 24.0 * 1024.0 * 1024.0);
}

#[test]
fn an_unload_waits_for_the_requests_in_flight_and_fails_none() {
    // About a second per row on one thread: requests are surely running when DELETE comes.
    let slow = repo().join("tests/fixtures/slow_xgboost");
    let s = Arc::new(mme(&["--warmup-rows", "1", "--warmup-runs", "0"]));
    assert_eq!(load(&s, "slow", &slow.display().to_string()).status, 200);
    let one_row: Vec<u8> = payload("xgboost", "rows.csv")
        .split(|&b| b == b'\n')
        .next()
        .unwrap()
        .to_vec();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (s, body) = (s.clone(), one_row.clone());
            std::thread::spawn(move || {
                let r = invoke(&s, "slow", &body);
                (r, Instant::now())
            })
        })
        .collect();
    // All three admitted (one runs, two wait in the model's queue) before the unload.
    let until = Instant::now() + Duration::from_secs(30);
    while metric(
        &s.get("/metrics").body,
        "mlapp_model_requests_in_flight{model=\"slow\"}",
    ) < 3.0
    {
        assert!(Instant::now() < until, "the requests never got in flight");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    let d = delete(&s, "slow");
    let took = t.elapsed();
    assert_eq!(d.status, 200, "{}", d.body);
    for c in clients {
        let (r, _) = c.join().unwrap();
        assert_eq!(
            r.status, 200,
            "a request in flight during the unload: {}",
            r.body
        );
    }
    // DELETE answers once the model's resources are freed: after its requests (a second a
    // row on its one session) ended.
    assert!(
        took > Duration::from_millis(900),
        "DELETE answered after {took:?}"
    );
    assert_eq!(invoke(&s, "slow", &one_row).status, 404);
}

#[test]
fn a_model_repository_on_s3_serves_by_name_and_replaces_a_model_live() {
    let moto = Moto::start();
    moto.create_bucket("repo");
    moto.put(
        "repo",
        "models/lr.tar.gz",
        model_tar_gz(&model_dir("logreg"), None),
    );
    // A prefix with the model and its baseline, as a folder would hold them.
    for file in [
        "model.onnx",
        "baseline/statistics.json",
        "baseline/constraints.json",
    ] {
        let bytes = std::fs::read(model_dir("xgboost").join(file)).unwrap();
        moto.put("repo", &format!("models/xgb/{file}"), bytes);
    }
    let env = moto.env();
    let cache = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start_with(
        Some("serve"),
        &[
            "--model-repository",
            "s3://repo/models/",
            "--model-cache-dir",
            cache.path().to_str().unwrap(),
            "--model-poll-seconds",
            "0.5",
            "--workers",
            "2",
        ],
        &pairs(&env),
    ));
    s.wait_ready(Duration::from_secs(30));
    let until = Instant::now() + Duration::from_secs(60);
    while list_all(&s, 10).0.len() < 2 {
        assert!(
            Instant::now() < until,
            "the repository's models did not load"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(list_all(&s, 10).0, ["lr", "xgb"]);
    let rows = payload("logreg", "rows.csv");
    assert_golden(&invoke(&s, "lr", &rows), "logreg", "lr by name");
    // SageMaker's Target-Model is the archive's path under the endpoint's prefix.
    assert_golden(
        &invoke_target(&s, "xgb.tar.gz", &rows),
        "xgboost",
        "xgb by target",
    );

    // A model put in the repository after the start is loaded on first use.
    moto.put(
        "repo",
        "models/late.tar.gz",
        model_tar_gz(&model_dir("mlp"), None),
    );
    // Found once the repository is listed again (at most a second after a miss).
    let until = Instant::now() + Duration::from_secs(10);
    let late = loop {
        let r = invoke_target(&s, "late.tar.gz", &rows);
        if r.status != 404 || Instant::now() > until {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_golden(&late, "mlp", "late, first use");
    let m = s.get("/metrics").body;
    assert_eq!(metric(&m, "mlapp_model_cache_misses_total"), 1.0);

    // `lr` is replaced under continuous load: no request fails, and the new version answers.
    let (client, body) = (s.clone(), rows.clone());
    let traffic = Traffic::start(3, move || invoke(&client, "lr", &body));
    std::thread::sleep(Duration::from_millis(400));
    moto.put(
        "repo",
        "models/lr.tar.gz",
        model_tar_gz(&model_dir("xgboost"), None),
    );
    let until = Instant::now() + Duration::from_secs(60);
    while traffic.last().as_deref() != Some("0") {
        assert!(
            Instant::now() < until,
            "lr still answers with the old version"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let seen = traffic.stop();
    assert!(seen.iter().any(|(_, l)| l == "female") && seen.iter().any(|(_, l)| l == "0"));
    assert_golden(&invoke(&s, "lr", &rows), "xgboost", "lr after the switch");
    // The other models were not touched.
    assert_golden(&invoke(&s, "xgb", &rows), "xgboost", "xgb after the switch");

    // Unloads under continuous Target-Model traffic: requests in flight finish on the old
    // copy, later ones load it again from the repository; none fails.
    let (client, body) = (s.clone(), rows.clone());
    let traffic = Traffic::start(3, move || invoke_target(&client, "xgb.tar.gz", &body));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        let d = delete(&s, "xgb");
        assert!(d.status == 200 || d.status == 404, "{}", d.body);
    }
    std::thread::sleep(Duration::from_millis(300));
    traffic.stop();
    let m = s.get("/metrics").body;
    assert!(metric(&m, "mlapp_model_cache_misses_total") >= 2.0, "{m}");
}

#[test]
fn a_single_model_server_has_no_models_api() {
    let s = Server::ready(&model_dir("logreg"), &[]);
    let r = s.get("/models");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("multi-model mode"), "{}", r.body);
    assert_eq!(
        invoke(&s, "logreg", &payload("logreg", "rows.csv")).status,
        404
    );
}

/// The multi-model routes under random and mutated requests: an answer for each, never a 5xx,
/// every refusal in the one error shape; and the server still serves afterwards.
#[test]
fn the_models_api_fuzzed() {
    let s = mme(&["--model-memory-mb", "64"]);
    let lr = model_dir("logreg").display().to_string();
    assert_eq!(load(&s, "lr", &lr).status, 200);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let names = [
        "lr",
        "",
        ".",
        "..",
        "a%2Fb",
        "%00",
        "x".repeat(300).as_str(),
        "é",
        "lr.tar.gz",
        "m-1_2.3",
    ]
    .map(str::to_string);
    let urls = [
        "",
        "/",
        "/no/such",
        "s3://",
        "s3://b",
        "relative/../x",
        "\u{0}",
    ]
    .map(str::to_string);
    let rows = payload("logreg", "rows.csv");
    for i in 0..300 {
        let name = &names[next(names.len() as u64) as usize];
        let r = match next(6) {
            0 => {
                let body: Vec<u8> = match next(3) {
                    0 => (0..next(64)).map(|_| next(256) as u8).collect(),
                    1 => serde_json::json!({"model_name": name, "url": urls[next(urls.len() as u64) as usize]})
                        .to_string()
                        .into_bytes(),
                    _ => {
                        let mut b = serde_json::json!({"model_name": format!("f{i}"), "url": lr})
                            .to_string()
                            .into_bytes();
                        b.truncate(next(b.len() as u64) as usize);
                        b
                    }
                };
                reply(
                    agent()
                        .post(&format!("{}/models", s.base))
                        .send_bytes(&body),
                )
            }
            1 => s.get(&format!(
                "/models?limit={}&next_page_token={name}",
                next(2000) as i64 - 5
            )),
            2 => s.get(&format!("/models/{name}")),
            3 => invoke(&s, name, &rows[..next(rows.len() as u64) as usize]),
            // The client refuses to send a header that is not ASCII.
            4 if name.is_ascii() => invoke_target(&s, name, &rows),
            4 => invoke_target(&s, "a b\t", &rows),
            _ => s.get(&format!("/monitoring?model={name}")),
        };
        assert!(
            r.status < 500 || r.status == 507,
            "case {i} ({name:?}): {} {}",
            r.status,
            r.body
        );
        if r.status >= 400 {
            assert!(
                r.body.starts_with("{\"error\""),
                "case {i} ({name:?}): {} {:?}",
                r.status,
                r.body
            );
        }
    }
    assert_golden(&invoke(&s, "lr", &rows), "logreg", "after the fuzzing");
}
