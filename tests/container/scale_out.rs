//! Scale-out as the first user runs it: three mlapp replicas and nginx with the shipped
//! config (container/deploy/nginx/nginx.conf) on a private Docker network. Under a bounded
//! load, one replica is stopped and later started again: no client request fails, the
//! stopped replica drained before it exited, and it takes traffic again once back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{model_dir, payload};
use crate::docker::{docker, image, nginx_image, require_images, Container, Network};

#[test]
fn three_replicas_behind_nginx_lose_no_request_when_one_stops_and_returns() {
    let (image, nginx) = (image(), nginx_image());
    require_images(&[image.clone(), nginx.clone()]);
    let id = std::process::id();
    // A subnet of the project's own, so replicas keep their address across a restart (nginx
    // resolves upstream names once, at start).
    let octet = 20 + id % 200;
    let net = Network::create(&format!("mlapp-lb-{id}"), &format!("10.213.{octet}.0/24"));
    let model = model_dir("pipeline");
    let mount = format!("{}:/opt/ml/model:ro", model.display());
    let replicas: Vec<Container> = (1..=3)
        .map(|i| {
            let ip = format!("10.213.{octet}.{}", 10 + i);
            let alias = format!("mlapp-{i}");
            Container::run(
                &format!("mlapp-lb-{id}-{i}"),
                &[
                    "--network",
                    &net.name,
                    "--ip",
                    &ip,
                    "--network-alias",
                    &alias,
                    "-p",
                    "127.0.0.1::8080",
                    "-v",
                    &mount,
                    "-e",
                    "SAGEMAKER_MODEL_SERVER_WORKERS=1",
                    "-e",
                    "MLAPP_HTTP_WORKERS=1",
                    &image,
                    "serve",
                ],
            )
        })
        .collect();
    for r in &replicas {
        r.wait_ready(Duration::from_secs(60));
    }
    let lb = Container::run(
        &format!("mlapp-lb-{id}-nginx"),
        &["--network", &net.name, "-p", "127.0.0.1::8080", &nginx],
    );
    lb.wait_ready(Duration::from_secs(30));
    let url = lb.url();

    // Eight clients for 14 s through nginx; every outcome is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Result<u16, String>>::new()));
    let body = payload("pipeline", "rows.csv");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, outcomes, body, url) =
                (stop.clone(), outcomes.clone(), body.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = crate::common::agent();
                while !stop.load(Ordering::Relaxed) {
                    let r = agent
                        .post(&format!("{url}/invocations"))
                        .set("Content-Type", "text/csv")
                        .set("Accept", "text/csv")
                        .send_bytes(&body);
                    let outcome = match r {
                        Ok(resp) => {
                            let status = resp.status();
                            let text = resp.into_string().unwrap_or_default();
                            if text.split('\n').count() == 25 {
                                Ok(status)
                            } else {
                                Err(format!("{status} with {} lines", text.lines().count()))
                            }
                        }
                        Err(ureq::Error::Status(code, resp)) => Err(format!(
                            "{code}: {}",
                            resp.into_string().unwrap_or_default()
                        )),
                        Err(e) => Err(e.to_string()),
                    };
                    outcomes.lock().unwrap().push(outcome);
                }
            })
        })
        .collect();
    let started = Instant::now();
    let at = |secs: u64| {
        let when = started + Duration::from_secs(secs);
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
    };

    at(3);
    let before_stop = outcomes.lock().unwrap().len();
    let stopping = Instant::now();
    docker(&["stop", "-t", "30", &replicas[1].name]);
    let stop_took = stopping.elapsed();
    let exit_code = replicas[1].inspect("{{.State.ExitCode}}");
    let first_logs = replicas[1].logs();

    at(8);
    docker(&["start", &replicas[1].name]);
    replicas[1].wait_ready(Duration::from_secs(60));
    let back_at = outcomes.lock().unwrap().len();

    at(16);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let outcomes = outcomes.lock().unwrap();
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let not_200 = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(s) if *s != 200))
        .count();
    println!(
        "{} requests through nginx ({} before the stop, {} by the restart), {} failed; replica 2 stopped in {stop_took:?}",
        outcomes.len(),
        before_stop,
        back_at,
        failed.len()
    );
    assert!(
        failed.is_empty() && not_200 == 0,
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(before_stop > 100 && outcomes.len() > before_stop + 200);
    assert_eq!(exit_code, "0", "{first_logs}");
    assert!(
        stop_took < Duration::from_secs(25),
        "stop took {stop_took:?}"
    );
    assert!(
        first_logs.contains("SIGTERM: accepting no more connections")
            && first_logs.contains("drained: every accepted request was answered"),
        "{first_logs}"
    );
    // Back in the pool: the restarted process has answered predictions through nginx.
    let metrics = crate::common::agent()
        .get(&format!("{}/metrics", replicas[1].url()))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let served: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("mlapp_http_requests_total{route=\"/invocations\",status=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        served > 0.0,
        "the restarted replica got no traffic:\n{metrics}"
    );
    drop(lb);
    drop(replicas);
}
