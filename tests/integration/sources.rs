//! Models from every kind of URI: local `.onnx` files and archives, and S3 objects, archives
//! and prefixes on a real S3-compatible server (moto) reached through `aws-sdk-s3`; errors
//! that name the object and what S3 answered.

use std::time::{Duration, Instant};

use crate::common::archives::model_tar_gz;
use crate::common::moto::{pairs, Moto};
use crate::common::{assert_csv_row, golden, model_dir, payload, send_signal, Server};

/// Every answer line for the example rows equals `model`'s golden predictions.
pub fn assert_serves(s: &Server, model: &str, what: &str) {
    let r = s.post(
        Some("text/csv"),
        Some("text/csv"),
        &payload(model, "rows.csv"),
    );
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let gold = golden(model);
    for (i, line) in r.body.lines().enumerate() {
        assert_csv_row(&gold, line, i, what);
    }
}

/// `/ping`'s reason once the load has failed.
pub fn failure_reason(s: &Server) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.get("/ping");
        assert_ne!(r.status, 200, "{}", r.body);
        if r.json()["status"] == "failed" {
            return r.json()["reason"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < until, "still loading: {}", r.body);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_a_model_from_every_uri_form() {
    let moto = Moto::start();
    moto.create_bucket("models");
    let logreg = model_dir("logreg");
    let xgb = model_dir("xgboost");
    moto.put(
        "models",
        "single/xgb.onnx",
        std::fs::read(xgb.join("model.onnx")).unwrap(),
    );
    moto.put("models", "packed/model.tar.gz", model_tar_gz(&logreg, None));
    for f in ["model.onnx", "mlapp.json"] {
        moto.put(
            "models",
            &format!("folder/v1/{f}"),
            std::fs::read(logreg.join(f)).unwrap(),
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let local_archive = tmp.path().join("model.tar.gz");
    // Packed with a top folder, as `tar czf model.tar.gz model/` does.
    std::fs::write(&local_archive, model_tar_gz(&logreg, Some("model"))).unwrap();
    let local_onnx = xgb.join("model.onnx");

    let env = moto.env();
    let cases = [
        ("s3://models/single/xgb.onnx", "xgboost"),
        ("s3://models/packed/model.tar.gz", "logreg"),
        ("s3://models/folder/v1/", "logreg"),
        // No trailing slash: the key is no object, so it is read as a folder.
        ("s3://models/folder/v1", "logreg"),
        (local_archive.to_str().unwrap(), "logreg"),
        (local_onnx.to_str().unwrap(), "xgboost"),
    ];
    let servers: Vec<(Server, &str, &str)> = cases
        .iter()
        .enumerate()
        .map(|(i, (uri, model))| {
            let cache = tmp.path().join(format!("cache{i}"));
            let s = Server::start_with(
                Some("serve"),
                &[
                    "--model-uri",
                    uri,
                    "--model-cache-dir",
                    cache.to_str().unwrap(),
                    "--workers",
                    "1",
                ],
                &pairs(&env),
            );
            (s, *uri, *model)
        })
        .collect();
    for (s, uri, model) in &servers {
        s.wait_ready(Duration::from_secs(60));
        assert_serves(s, model, uri);
        let info = s.get("/info").json();
        assert_eq!(info["uri"], *uri, "{info}");
        let version = info["model"]["version"].as_str().unwrap_or_default();
        let want = if uri.starts_with("s3://models/folder") {
            "etags:"
        } else if uri.starts_with("s3://") {
            "etag:"
        } else {
            "md5:"
        };
        assert!(version.starts_with(want), "{uri}: {info}");
    }
    // Nothing was written beside the local sources.
    let beside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("cache"))
        .collect();
    assert_eq!(beside, ["model.tar.gz"]);
}

#[test]
fn a_missing_object_is_503_naming_the_bucket_the_key_and_s3s_answer() {
    let moto = Moto::start();
    moto.create_bucket("models");
    let env = moto.env();
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().to_str().unwrap();
    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://models/nope/model.tar.gz",
            "--model-cache-dir",
            cache,
        ],
        &pairs(&env),
    );
    let reason = failure_reason(&s);
    for want in [
        "NoSuchKey",
        "bucket \"models\"",
        "key \"nope/model.tar.gz\"",
    ] {
        assert!(reason.contains(want), "missing {want:?} in {reason}");
    }
    let r = s.post(Some("text/csv"), None, &payload("logreg", "rows.csv"));
    assert_eq!(r.status, 503);
    assert!(r.error().1.contains("NoSuchKey"), "{}", r.body);

    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://no-such-bucket/model.tar.gz",
            "--model-cache-dir",
            cache,
        ],
        &pairs(&env),
    );
    let reason = failure_reason(&s);
    assert!(
        reason.contains("NoSuchBucket") && reason.contains("no-such-bucket"),
        "{reason}"
    );
}

#[test]
fn wrong_credentials_are_503_with_s3s_refusal() {
    let moto = Moto::start_checking_credentials();
    let mut env = moto.env();
    for (k, v) in env.iter_mut() {
        if *k == "AWS_ACCESS_KEY_ID" {
            *v = "AKIAWRONGWRONGWRONG0".into();
        }
    }
    let cache = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://models/live/model.tar.gz",
            "--model-cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &pairs(&env),
    );
    let reason = failure_reason(&s);
    assert!(
        reason.contains("InvalidAccessKeyId")
            || reason.contains("AccessDenied")
            || reason.contains("HTTP 403"),
        "{reason}"
    );
    assert!(reason.contains("s3://models/live/model.tar.gz"), "{reason}");
}

/// A network that drops connections and cuts a download short, or flips a byte of it: the
/// SDK's retries and the checked, retried whole download get the right model loaded anyway,
/// never a damaged one, and say so in the log.
#[test]
fn transient_s3_failures_are_retried() {
    use crate::common::flaky::Fault;
    for (fault, evidence) in [
        (Fault::Cut, "the download failed after"),
        (Fault::Flip, "checksum mismatch"),
    ] {
        let moto = Moto::start();
        moto.create_bucket("models");
        moto.put(
            "models",
            "flaky/model.tar.gz",
            model_tar_gz(&model_dir("xgboost"), None),
        );
        let upstream = moto.endpoint.trim_start_matches("http://").to_string();
        // The archive is a few hundred KB; HEAD and list answers are far smaller.
        let proxy = crate::common::flaky::start(&upstream, 2, 50_000, fault);
        let mut env = moto.env();
        for (k, v) in env.iter_mut() {
            if *k == "AWS_ENDPOINT_URL_S3" {
                *v = proxy.endpoint.clone();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mlapp.log");
        let mut envs = pairs(&env);
        envs.push(("RUST_LOG", "info"));
        let s = Server::start_logging(
            Some("serve"),
            &[
                "--model-uri",
                "s3://models/flaky/model.tar.gz",
                "--model-cache-dir",
                dir.path().join("cache").to_str().unwrap(),
            ],
            &envs,
            std::process::Stdio::from(std::fs::File::create(&log).unwrap()),
        );
        s.wait_ready(Duration::from_secs(60));
        assert_serves(&s, "xgboost", "after retries");
        assert_eq!(proxy.dropped.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(
            proxy.cut.load(std::sync::atomic::Ordering::SeqCst),
            "no fault was made"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("try 1 of 4 failed, retrying") && text.contains(evidence),
            "{text}"
        );
    }
}

/// The cache entries (folders) in `cache`, by name.
pub fn cache_entries(cache: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("m-"))
        .collect();
    names.sort();
    names
}

/// `mlapp serve --model-uri URI` with its cache in `cache`, ready.
fn serve_cached(uri: &str, cache: &std::path::Path, envs: &[(&str, &str)]) -> Server {
    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            uri,
            "--model-cache-dir",
            cache.to_str().unwrap(),
            "--workers",
            "1",
        ],
        envs,
    );
    s.wait_ready(Duration::from_secs(60));
    s
}

/// Two services on one host share the default cache folder: neither removes what the other
/// serves, whether they serve other URIs or the same URI at different versions.
#[test]
fn processes_sharing_a_cache_keep_each_others_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a.tar.gz"), tmp.path().join("b.tar.gz"));
    std::fs::write(&a, model_tar_gz(&model_dir("logreg"), None)).unwrap();
    std::fs::write(&b, model_tar_gz(&model_dir("xgboost"), None)).unwrap();
    let sa = serve_cached(a.to_str().unwrap(), &cache, &[]);
    // B's first load prunes: A's entry, of another URI, stays.
    let sb = serve_cached(b.to_str().unwrap(), &cache, &[]);
    assert_eq!(
        cache_entries(&cache).len(),
        2,
        "{:?}",
        cache_entries(&cache)
    );
    assert_serves(&sa, "logreg", "A beside B");
    assert_serves(&sb, "xgboost", "B beside A");
    drop(sb);

    // A second service on A's URI switches to a new version; A still serves the old one,
    // so its entry stays too.
    let sa2 = serve_cached(a.to_str().unwrap(), &cache, &[]);
    let next = tmp.path().join("next.tar.gz");
    std::fs::write(&next, model_tar_gz(&model_dir("xgboost"), None)).unwrap();
    std::fs::rename(&next, &a).unwrap();
    send_signal(sa2.pid(), libc::SIGHUP);
    let until = Instant::now() + Duration::from_secs(60);
    while sa2.get("/info").json()["reloads"]["succeeded"] != 1 {
        assert!(Instant::now() < until, "{}", sa2.get("/info").body);
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_serves(&sa2, "xgboost", "A2 after its reload");
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 3, "A's old, A2's new and B's: {entries:?}");
    let old_file = sa.get("/info").json()["model"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        std::path::Path::new(&old_file).exists(),
        "{old_file} was removed"
    );
    // Once A is gone, the next prune of that URI removes its old version (not B's entry).
    drop(sa);
    send_signal(sa2.pid(), libc::SIGHUP);
    let until = Instant::now() + Duration::from_secs(60);
    while cache_entries(&cache).len() != 2 {
        assert!(Instant::now() < until, "{:?}", cache_entries(&cache));
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(!std::path::Path::new(&old_file).exists());
}

/// A temp cleaner empties a cache entry and leaves the folder: it is fetched again, not
/// trusted because it exists.
#[test]
fn an_emptied_cache_entry_is_fetched_again() {
    let moto = Moto::start();
    moto.create_bucket("models");
    moto.put(
        "models",
        "m/model.tar.gz",
        model_tar_gz(&model_dir("logreg"), None),
    );
    let env = moto.env();
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("model.tar.gz");
    std::fs::write(&local, model_tar_gz(&model_dir("logreg"), None)).unwrap();
    for uri in ["s3://models/m/model.tar.gz", local.to_str().unwrap()] {
        let cache = tmp.path().join(format!("cache-{}", uri.len()));
        let emptiers: [fn(&std::path::Path); 2] = [
            // Every file but the folder (a cleaner that removes old files).
            |entry: &std::path::Path| {
                for e in std::fs::read_dir(entry).unwrap() {
                    std::fs::remove_file(e.unwrap().path()).unwrap();
                }
            },
            // The model only.
            |entry: &std::path::Path| std::fs::remove_file(entry.join("model.onnx")).unwrap(),
        ];
        for empty in emptiers {
            let s = serve_cached(uri, &cache, &pairs(&env));
            assert_serves(&s, "logreg", uri);
            drop(s);
            let entries = cache_entries(&cache);
            assert_eq!(entries.len(), 1, "{entries:?}");
            empty(&cache.join(&entries[0]));
            let s = serve_cached(uri, &cache, &pairs(&env));
            assert_serves(&s, "logreg", &format!("{uri}, after the entry was emptied"));
        }
    }
}

/// What a SageMaker training job writes: a folder or prefix holding only `model.tar.gz`.
#[test]
fn a_folder_or_prefix_holding_only_model_tar_gz_serves_the_archive() {
    let moto = Moto::start();
    moto.create_bucket("models");
    moto.put(
        "models",
        "job/output/model.tar.gz",
        model_tar_gz(&model_dir("xgboost"), Some("model")),
    );
    let env = moto.env();
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("output");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("model.tar.gz"),
        model_tar_gz(&model_dir("xgboost"), None),
    )
    .unwrap();
    for uri in [
        "s3://models/job/output/",
        "s3://models/job/output",
        folder.to_str().unwrap(),
    ] {
        let cache = tmp.path().join(format!("cache-{}", uri.len()));
        let s = serve_cached(uri, &cache, &pairs(&env));
        assert_serves(&s, "xgboost", uri);
    }
    // Nothing was written into the model folder.
    let inside: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert_eq!(inside.len(), 1);
}

/// A prefix one level too high (a training job's checkpoints) is refused at the archive caps
/// before anything is downloaded.
#[test]
fn a_prefix_over_the_caps_is_refused() {
    let moto = Moto::start();
    moto.create_bucket("models");
    for f in ["model.onnx", "mlapp.json"] {
        moto.put(
            "models",
            &format!("run/{f}"),
            std::fs::read(model_dir("logreg").join(f)).unwrap(),
        );
    }
    moto.put("models", "run/checkpoints/1.bin", vec![0; 1000]);
    let env = moto.env();
    let cache = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        Some("serve"),
        &[
            "--model-uri",
            "s3://models/run/",
            "--model-cache-dir",
            cache.path().to_str().unwrap(),
            "--archive-max-files",
            "2",
        ],
        &pairs(&env),
    );
    let reason = failure_reason(&s);
    assert!(
        reason.contains("3 objects") && reason.contains("--archive-max-files"),
        "{reason}"
    );
    assert!(cache_entries(cache.path()).is_empty());
}

/// The default cache folder is made by the first fetch that needs it, not at every start: a
/// model folder served as it is leaves nothing behind in the user's cache.
#[test]
fn the_default_cache_folder_is_made_only_for_a_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("xdg");
    let envs = [
        ("XDG_CACHE_HOME", xdg.to_str().unwrap()),
        ("HOME", tmp.path().to_str().unwrap()),
    ];
    let start = |model: &std::path::Path| {
        let s = Server::start_with(
            Some("serve"),
            &["--model-dir", model.to_str().unwrap(), "--workers", "1"],
            &envs,
        );
        s.wait_ready(Duration::from_secs(60));
        s
    };
    let s = start(&model_dir("logreg"));
    assert_serves(&s, "logreg", "a model folder");
    drop(s);
    // (ONNX Runtime keeps files of its own under $XDG_CACHE_HOME: only ours count.)
    assert!(!xdg.join("mlapp").exists(), "{} was created", xdg.display());
    assert!(!tmp.path().join(".cache/mlapp").exists());

    let archive = tmp.path().join("model.tar.gz");
    std::fs::write(&archive, model_tar_gz(&model_dir("logreg"), None)).unwrap();
    let s = start(&archive);
    assert_serves(&s, "logreg", "an archive");
    assert_eq!(cache_entries(&xdg.join("mlapp/models")).len(), 1);
}

/// Two services started at once on one archive and one cache folder: one builds the entry
/// while the other waits for it and reuses it, and neither leaves work behind.
#[test]
fn services_starting_together_build_one_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let archive = tmp.path().join("model.tar.gz");
    std::fs::write(&archive, model_tar_gz(&model_dir("xgboost"), None)).unwrap();
    let args = [
        "--model-uri",
        archive.to_str().unwrap(),
        "--model-cache-dir",
        cache.to_str().unwrap(),
        "--workers",
        "1",
    ];
    let servers: Vec<Server> = (0..2)
        .map(|_| Server::start_with(Some("serve"), &args, &[]))
        .collect();
    for (i, s) in servers.iter().enumerate() {
        s.wait_ready(Duration::from_secs(60));
        assert_serves(s, "xgboost", &format!("service {i}"));
    }
    assert_eq!(
        cache_entries(&cache).len(),
        1,
        "{:?}",
        cache_entries(&cache)
    );
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let claims = names.iter().filter(|n| n.contains(".claim-")).count();
    assert_eq!(claims, 2, "one claim per service: {names:?}");
    assert_eq!(names.len(), 3, "the entry and two claims only: {names:?}");
}
