//! Bodies the decoders refuse since the December 2026 review, through the real server: each
//! one a 4xx naming what was wrong, where the engine or a panic used to answer.

use crate::common::{model_dir, payload, Server};

fn first_line(model: &str, file: &str) -> String {
    let text = String::from_utf8(payload(model, file)).unwrap();
    text.lines().next().unwrap().to_string()
}

#[test]
fn a_nul_in_a_string_feature_is_422_not_an_engine_failure() {
    // Review M7: ONNX Runtime cannot make a C string of it, and answered 500.
    let s = Server::ready(&model_dir("pipeline"), &[]);
    let csv = first_line("pipeline", "rows.csv").replace("São Paulo", "São\0Paulo");
    let jsonl = first_line("pipeline", "rows.jsonl").replace("São Paulo", "São\\u0000Paulo");
    for (ct, body) in [("text/csv", csv), ("application/jsonlines", jsonl)] {
        let r = s.post(Some(ct), None, body.as_bytes());
        assert_eq!(r.status, 422, "{ct}: {}", r.body);
        let (code, msg) = r.error();
        assert_eq!(code, "invalid_value");
        assert!(
            msg.starts_with("row 1, column 2 (feature \"city\"): expected a string without NUL"),
            "{msg}"
        );
    }
    assert_eq!(
        s.post(Some("text/csv"), None, &payload("pipeline", "rows.csv"))
            .status,
        200
    );
}

#[test]
fn a_non_ascii_npy_descr_is_400_and_a_repeated_json_key_is_422() {
    // Review H2: the header's descr was split at byte 1, inside 'é', and the handler panicked.
    let s = Server::ready(&model_dir("logreg"), &[]);
    let header = "{'descr': 'é4', 'fortran_order': False, 'shape': (1, 64), }\n";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    npy.extend([0u8; 64 * 4]);
    let r = s.post(Some("application/x-npy"), None, &npy);
    assert_eq!(r.status, 400, "{}", r.body);
    let (code, msg) = r.error();
    assert_eq!(code, "invalid_npy");
    assert!(msg.contains("dtype 'é4' is not supported"), "{msg}");

    // Review L9: the last value of a repeated key was taken silently.
    let record = first_line("logreg", "records.jsonl");
    let twice = format!("{}, \"n_apps\": 1}}", record.strip_suffix('}').unwrap());
    let r = s.post(Some("application/jsonlines"), None, twice.as_bytes());
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.error(),
        (
            "duplicate_key".into(),
            "row 1: key \"n_apps\" appears twice".into()
        )
    );
    assert_eq!(s.get("/ping").status, 200);
}
