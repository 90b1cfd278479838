//! `GET /openapi.json`, checked by other projects' tools: `openapi-spec-validator` validates
//! it as OpenAPI 3.1, every documented operation is routed, and the schema-driven fuzzer
//! schemathesis drives every operation of a single-model server (with the job portal on) and
//! of a multi-model one, failing on any answer outside the document (status, content type,
//! headers, body schema) and on any 5xx but the documented 503, 504 and 507
//! (`tests/clients/fuzz_hooks.py`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{agent, model_dir, reply, repo, run_bounded, Server};
use crate::v2::client_python;

fn single_model(state: &Path) -> Server {
    let roots = state.join("roots");
    std::fs::create_dir_all(&roots).unwrap();
    // Jobs and loads the fuzzer makes up may only touch a folder of this test's.
    Server::ready(
        &model_dir("pipeline"),
        &[
            "--workers",
            "2",
            "--state-dir",
            state.join("state").to_str().unwrap(),
            "--portal-roots",
            roots.to_str().unwrap(),
            "--model-roots",
            roots.to_str().unwrap(),
        ],
    )
}

#[test]
fn the_document_is_valid_openapi_31_and_every_operation_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let s = single_model(dir.path());
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/json"));
    let doc_path = dir.path().join("openapi.json");
    std::fs::write(&doc_path, &r.body).unwrap();
    let out = run_bounded(
        Command::new(client_python()).args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; \
             from openapi_spec_validator.validation import OpenAPIV31SpecValidator; \
             validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator); print('valid')",
            doc_path.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Each documented operation reaches a handler: not the default 404, not a 405.
    let doc = r.json();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = format!(
            "{}{}",
            s.base,
            path.replace("{name}", "pipeline").replace("{version}", "1")
        );
        for method in item.as_object().unwrap().keys() {
            if !["get", "post", "delete", "put"].contains(&method.as_str()) {
                continue;
            }
            let answer = reply(
                agent()
                    .request(&method.to_uppercase(), &url)
                    .set("Content-Type", "application/json")
                    .send_string(if method == "get" || method == "delete" {
                        ""
                    } else {
                        "{}"
                    }),
            );
            assert_ne!(answer.status, 405, "{method} {path}: {}", answer.body);
            assert!(
                !answer.body.contains("no route for"),
                "{method} {path} is documented but not routed: {}",
                answer.body
            );
            operations += 1;
        }
    }
    assert!(operations >= 27, "{operations} operations");
}

fn fuzz(s: &Server, model: &str, dir: &Path) {
    let config = dir.join("schemathesis.toml");
    let hooks = repo().join("tests/clients/fuzz_hooks.py");
    std::fs::write(
        &config,
        format!(
            "hooks = {:?}\n[parameters]\n\"path.name\" = {model:?}\n\"path.version\" = \"1\"\n",
            hooks.display().to_string()
        ),
    )
    .unwrap();
    let seed = std::env::var("MLAPP_FUZZ_SEED").unwrap_or_else(|_| "20261207".into());
    let schemathesis = client_python().with_file_name("schemathesis");
    let out = run_bounded(
        Command::new(schemathesis)
            .current_dir(dir)
            .arg("--config-file")
            .arg(&config)
            .args([
                "run",
                &format!("{}/openapi.json", s.base),
                "--checks",
                "no_server_fault,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
                "--max-examples",
                "40",
                // One worker: with two, Hypothesis parses lambdas' source in two threads at
                // once, and CPython 3.11's `ast` fails with "AST constructor recursion depth
                // mismatch", an error of the fuzzer's, not a finding on mlapp.
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--seed",
                &seed,
                "--no-shrink",
                // Hypothesis' own complaints about generating data, not findings on mlapp.
                "--suppress-health-check",
                "filter_too_much,too_slow,data_too_large",
            ]),
        Duration::from_secs(600),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis (seed {seed}) found answers outside the document:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Tested:"), "{text}");
    assert!(text.contains("passed"), "{text}");
}

#[test]
fn a_schema_driven_fuzzer_finds_no_fault_and_no_answer_outside_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = single_model(dir.path());
    fuzz(&s, "pipeline", dir.path());
    drop(s);

    let roots = dir.path().join("roots");
    let repository = repo().join("examples/gender/models");
    let s = Server::start(&[
        "--model-repository",
        repository.to_str().unwrap(),
        "--model-roots",
        roots.to_str().unwrap(),
        "--workers",
        "2",
    ]);
    s.wait_ready(Duration::from_secs(30));
    fuzz(&s, "xgboost", dir.path());
}
