//! The portal's routes under random and mutated bodies, and its roots.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{agent, reply};
use crate::portal::{call, create, example_input, invoke, portal_server, spec, wait_for, Backend};

/// The routes under random and mutated bodies: an answer for each, never a 5xx, and every
/// refusal in the one error shape naming a field.
#[test]
fn portal_routes_fuzzed() {
    let backend = Backend::sqlite();
    let s = portal_server(&backend, &[]);
    let work = tempfile::tempdir().expect("temp dir");
    let input = work.path().join("in");
    example_input(&input);
    let base = spec("fuzz", &input, &work.path().join("out"));
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let odd: [Value; 9] = [
        json!(null),
        json!(-1),
        json!(1e300),
        json!("\u{0}"),
        json!([]),
        json!({}),
        json!("s3://"),
        json!("relative/../x"),
        json!("x".repeat(5000)),
    ];
    let keys = mlapp::portal::spec::FIELDS;
    for i in 0..300 {
        let body: Vec<u8> = match next(4) {
            0 => (0..next(64)).map(|_| next(256) as u8).collect(),
            1 => {
                let mut b = base.to_string().into_bytes();
                let at = next(b.len() as u64) as usize;
                b.truncate(at);
                b
            }
            _ => {
                let mut v = base.clone();
                v["name"] = json!(format!("fuzz-{i}"));
                for _ in 0..=next(3) {
                    let k = keys[next(keys.len() as u64) as usize];
                    if next(4) == 0 {
                        v.as_object_mut().unwrap().remove(k);
                    } else {
                        v[k] = odd[next(odd.len() as u64) as usize].clone();
                    }
                }
                v.to_string().into_bytes()
            }
        };
        let path = ["create", "invoke", "stop", "evaluate"][next(4) as usize];
        let r = reply(
            agent()
                .post(&format!("{}/api/providers/prediction/{path}", s.base))
                .set("Content-Type", "application/json")
                .send_bytes(&body),
        );
        assert!(
            r.status < 500,
            "{path} {}: {} {}",
            String::from_utf8_lossy(&body),
            r.status,
            r.body
        );
        if r.status >= 400 {
            let (code, message) = r.error();
            assert!(!code.is_empty() && !message.is_empty());
            if r.status == 400 {
                assert!(r.json()["error"]["field"].is_string(), "{}", r.body);
            }
        }
    }
    assert_eq!(s.get("/ping").status, 200);
}

/// With --portal-roots, a job reads and writes only inside them.
#[test]
fn jobs_stay_inside_the_portal_roots() {
    let work = tempfile::tempdir().expect("temp dir");
    let (inp, out) = (work.path().join("in"), work.path().join("out"));
    example_input(&inp);
    std::fs::create_dir_all(&out).unwrap();
    let model = crate::common::model_dir("logreg");
    let roots = format!("{},{},{}", inp.display(), out.display(), model.display());
    let backend = Backend::sqlite();
    let s = portal_server(&backend, &["--portal-roots", &roots]);
    for (field, body) in [
        ("output", spec("out-of-roots", &inp, work.path())),
        ("input", spec("out-of-roots", work.path(), &out)),
        (
            "output",
            spec("out-of-roots", &inp, &out.join("../elsewhere")),
        ),
    ] {
        let r = create(&s, &body);
        assert_eq!(
            (r.status, r.json()["error"]["field"].as_str()),
            (400, Some(field)),
            "{}",
            r.body
        );
        assert!(r.error().1.contains("--portal-roots"), "{}", r.body);
    }
    assert_eq!(
        create(&s, &spec("inside", &inp, &out.join("nov"))).status,
        201
    );
    assert_eq!(invoke(&s, "inside").status, 202);
    wait_for(&s, "inside", &["Completed"], Duration::from_secs(60));
    let r = call(
        &s,
        "POST",
        "/api/providers/prediction/evaluate",
        Some(&json!({"name": "inside", "ground_truth": "/etc/hostname"})),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("ground_truth")),
        "{}",
        r.body
    );
}
