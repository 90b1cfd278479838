use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::model::InputSpec;

fn input(name: &str, elem: ElemType, width: usize) -> InputSpec {
    InputSpec {
        name: name.into(),
        elem,
        shape: vec![-1, width as i64],
        width,
    }
}

/// `x` (a, b, c, d: float32), `city` (text), `n` (int64).
fn sig() -> ModelSignature {
    let config = ModelConfig {
        feature_names: ["a", "b", "c", "d", "city", "n"].map(String::from).to_vec(),
        ..ModelConfig::default()
    };
    ModelSignature::new(
        vec![
            input("x", ElemType::Float32, 4),
            input("city", ElemType::String, 1),
            input("n", ElemType::Int64, 1),
        ],
        vec![],
        None,
        &config,
    )
    .unwrap()
}

fn steps(json: &str) -> Vec<BeforeStep> {
    serde_json::from_str::<super::super::Steps>(&format!(r#"{{"before": {json}}}"#))
        .unwrap()
        .before
}

fn compile(json: &str) -> Result<(Before, ModelSignature), String> {
    Before::compile(
        &steps(json),
        &sig(),
        &ModelConfig::default(),
        Path::new("."),
    )
    .map_err(|e| e.to_string())
}

fn frame(x: Vec<f32>, city: &[&str], n: Vec<i64>) -> Frame {
    Frame {
        rows: n.len(),
        columns: vec![
            Column::F32(x),
            Column::Str(city.iter().map(|s| s.to_string()).collect()),
            Column::I64(n),
        ],
    }
}

fn apply(before: &Before, frame: Frame) -> Frame {
    before.apply(frame, &mut before.scratch()).unwrap()
}

fn floats(f: &Frame) -> Vec<f32> {
    match &f.columns[0] {
        Column::F32(v) => v.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn numeric_steps_compute_what_they_say_on_their_feature_only() {
    let (before, request) = compile(
        r#"[{"step": "fill_missing", "values": {"a": -1, "city": "unknown"}},
            {"step": "clip", "features": ["b"], "min": 0, "max": 10},
            {"step": "log", "features": ["c"], "offset": 1},
            {"step": "scale", "features": ["d"], "center": 2, "scale": 4},
            {"step": "bucketize", "features": ["a"], "boundaries": [0, 1.5, 3]}]"#,
    )
    .unwrap();
    assert_eq!(
        request.features.len(),
        6,
        "nothing derived: the request is the graph's"
    );
    let out = apply(
        &before,
        frame(
            vec![
                f32::NAN,
                -5.0,
                0.0,
                2.0, //
                1.5,
                50.0,
                f32::NAN,
                10.0, //
                7.0,
                3.0,
                -1.0,
                f32::NAN,
            ],
            &["", "Paris", ""],
            vec![1, 2, 3],
        ),
    );
    let x = floats(&out);
    // a: NaN is filled with -1, then bucketized: -1 < 0 → 0; 1.5 → 2 (0 and 1.5 are <= it); 7 → 3.
    assert_eq!([x[0], x[4], x[8]], [0.0, 2.0, 3.0]);
    // b: clipped to [0, 10].
    assert_eq!([x[1], x[5], x[9]], [0.0, 10.0, 3.0]);
    // c: ln(c + 1); NaN stays missing; ln(0) is no number, so missing.
    assert_eq!(x[2], 0.0);
    assert!(x[6].is_nan() && x[10].is_nan());
    // d: (d - 2) / 4.
    assert_eq!(x[3], 0.0);
    assert_eq!(x[7], 2.0);
    assert!(x[11].is_nan());
    assert_eq!(
        out.columns[1],
        Column::Str(vec!["unknown".into(), "Paris".into(), "unknown".into()])
    );
    assert_eq!(out.columns[2], Column::I64(vec![1, 2, 3]));
}

#[test]
fn text_is_trimmed_and_lowercased() {
    let (before, _) = compile(r#"[{"step": "normalize_text", "features": ["city"]}]"#).unwrap();
    let out = apply(
        &before,
        frame(vec![0.0; 8], &["  São PAULO ", "lyon"], vec![0, 0]),
    );
    assert_eq!(
        out.columns[1],
        Column::Str(vec!["são paulo".into(), "lyon".into()])
    );
    let (before, _) =
        compile(r#"[{"step": "normalize_text", "features": ["city"], "lowercase": false}]"#)
            .unwrap();
    let out = apply(&before, frame(vec![0.0; 4], &[" A "], vec![0]));
    assert_eq!(out.columns[1], Column::Str(vec!["A".into()]));
}

#[test]
fn a_derived_feature_is_left_out_of_the_request_and_computed_in_place() {
    let (before, request) = compile(
        r#"[{"step": "derive", "feature": "c", "expression": "a / (b + 1) + n"},
            {"step": "clip", "features": ["c"], "max": 5}]"#,
    )
    .unwrap();
    let names: Vec<&str> = request.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "d", "city", "n"]);
    assert_eq!(request.inputs[0].width, 3);
    assert_eq!(request.inputs[0].shape, [-1, 3]);
    let out = apply(
        &before,
        frame(vec![6.0, 2.0, 9.0, 1.0, 1.0, 9.0], &["", ""], vec![1, 10]),
    );
    // Row 0: 6 / 3 + 1 = 3. Row 1: 1 / 2 + 10 = 10.5, clipped to 5.
    assert_eq!(floats(&out), [6.0, 2.0, 3.0, 9.0, 1.0, 1.0, 5.0, 9.0]);
}

#[test]
fn an_input_made_only_of_derived_features_is_not_asked_for() {
    let one = |n: &str| input(n, ElemType::Float64, 1);
    let sig = ModelSignature::new(
        vec![one("income"), one("size"), one("per_head")],
        vec![],
        None,
        &ModelConfig::default(),
    )
    .unwrap();
    let (before, request) = Before::compile(
        &steps(r#"[{"step": "derive", "feature": "per_head", "expression": "income / size"}]"#),
        &sig,
        &ModelConfig::default(),
        Path::new("."),
    )
    .unwrap();
    assert_eq!(request.inputs.len(), 2);
    let out = apply(
        &before,
        Frame {
            rows: 2,
            columns: vec![Column::F64(vec![100.0, 90.0]), Column::F64(vec![4.0, 3.0])],
        },
    );
    assert_eq!(out.columns[2], Column::F64(vec![25.0, 30.0]));
}

#[test]
fn bad_steps_are_refused_naming_the_step_and_the_problem() {
    let e = |json: &str| compile(json).unwrap_err();
    assert_eq!(
        e(r#"[{"step": "clip", "features": ["a"], "max": 1}, {"step": "log", "features": ["zz"]}]"#),
        "model config: steps.before[1] (log): \"zz\" is not one of the model's features (a, b, c, d, city, n)"
    );
    assert!(e(r#"[{"step": "clip", "features": ["n"], "max": 1}]"#)
        .contains("\"n\" is a int64 feature; this step takes float features"));
    assert!(e(r#"[{"step": "clip", "features": ["a"]}]"#).contains("give \"min\", \"max\" or both"));
    assert!(
        e(r#"[{"step": "clip", "features": ["a"], "min": 2, "max": 1}]"#)
            .contains("min 2 is above max 1")
    );
    assert!(
        e(r#"[{"step": "scale", "features": ["a"], "scale": 0}]"#).contains("scale must not be 0")
    );
    assert!(
        e(r#"[{"step": "bucketize", "features": ["a"], "boundaries": [1, 1]}]"#)
            .contains("boundaries must increase: 1 is followed by 1")
    );
    assert!(e(r#"[{"step": "log", "features": []}]"#).contains("\"features\" is empty"));
    assert!(e(r#"[{"step": "fill_missing", "values": {"a": "x"}}]"#).contains("must be a number"));
    assert!(e(r#"[{"step": "fill_missing", "values": {"city": 1}}]"#).contains("must be a string"));
    assert!(e(r#"[{"step": "fill_missing", "values": {"n": 1}}]"#).contains("no missing value"));
    assert!(e(r#"[{"step": "normalize_text", "features": ["a"]}]"#).contains("takes text features"));
    // Order: a derived feature has no value before the step that derives it.
    assert_eq!(
        e(r#"[{"step": "clip", "features": ["d"], "max": 1}, {"step": "derive", "feature": "d", "expression": "a"}]"#),
        "model config: steps.before[0] (clip): \"d\" is derived by steps.before[1], which does not run before this step"
    );
    // A cycle: c reads d, which is derived after it.
    assert!(e(
        r#"[{"step": "derive", "feature": "c", "expression": "d + 1"},
                  {"step": "derive", "feature": "d", "expression": "c + 1"}]"#
    )
    .contains(
        "steps.before[0] (derive): expression \"d + 1\": \"d\" is derived by steps.before[1]"
    ));
    assert!(
        e(r#"[{"step": "derive", "feature": "c", "expression": "c * 2"}]"#)
            .contains("the feature it derives")
    );
    assert!(e(r#"[{"step": "derive", "feature": "c", "expression": "a"},
                  {"step": "derive", "feature": "c", "expression": "b"}]"#)
    .contains("steps.before[1] (derive): \"c\" is already derived by steps.before[0]"));
    assert!(
        e(r#"[{"step": "derive", "feature": "n", "expression": "a"}]"#)
            .contains("derive makes float features")
    );
    assert!(
        e(r#"[{"step": "derive", "feature": "c", "expression": "city + 1"}]"#)
            .contains("a string feature; expressions read numbers")
    );
    assert!(
        e(r#"[{"step": "derive", "feature": "c", "expression": "a +"}]"#).contains(
            "expression \"a +\" at character 4: the expression ends where a value belongs"
        )
    );
}

proptest! {
    #![proptest_config(crate::codec::props::cases(256))]

    /// Any steps that compile run on any values without a panic and keep the rows and the
    /// layout the graph takes.
    #[test]
    fn compiled_steps_keep_the_frames_shape(
        rows in 0usize..6,
        values in proptest::collection::vec(proptest::num::f32::ANY, 24),
        lo in -10.0f64..10.0,
        width in 0.1f64..10.0,
        expression in "[abn0-9+*/() .-]{0,12}",
    ) {
        let json = format!(
            r#"[{{"step": "derive", "feature": "d", "expression": {expression:?}}},
                {{"step": "clip", "features": ["a", "d"], "min": {lo}, "max": {}}},
                {{"step": "log", "features": ["b"], "offset": {width}}},
                {{"step": "bucketize", "features": ["c"], "boundaries": [{lo}, {}]}}]"#,
            lo + width,
            lo + width,
        );
        if let Ok((before, request)) = compile(&json) {
            prop_assert_eq!(request.inputs[0].width, 3);
            let out = apply(&before, Frame {
                rows,
                columns: vec![
                    Column::F32(values[..rows * 3].to_vec()),
                    Column::Str(vec![String::new(); rows]),
                    Column::I64(vec![7; rows]),
                ],
            });
            prop_assert_eq!(out.rows, rows);
            prop_assert_eq!(floats(&out).len(), rows * 4);
            for r in 0..rows {
                let a = floats(&out)[r * 4];
                prop_assert!(a.is_nan() || (a as f64 >= lo - 1e-3 && a as f64 <= lo + width + 1e-3));
            }
        }
    }

    #[test]
    fn any_text_compiles_or_fails_without_a_panic(text in "\\PC{0,40}") {
        let _ = expr::compile(&text, &mut |n| (n.len() < 3).then_some(0));
    }
}

/// A function gets the listed features row by row, in the order the step lists them, and its
/// answer goes back to the same places (layout.wat adds each value's place in the batch).
#[test]
fn a_function_sees_its_features_row_by_row_in_the_listed_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wasm");
    let (before, _) = Before::compile(
        &steps(r#"[{"step": "wasm", "module": "layout.wat", "features": ["c", "a"]}]"#),
        &sig(),
        &ModelConfig::default(),
        &dir,
    )
    .unwrap();
    let out = apply(
        &before,
        frame(
            vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0],
            &["", ""],
            vec![0, 0],
        ),
    );
    // Passed as [c0, a0, c1, a1] = [30, 10, 70, 50], given back as [30, 11, 72, 53].
    assert_eq!(
        floats(&out),
        [11.0, 20.0, 30.0, 40.0, 53.0, 60.0, 72.0, 80.0]
    );
    let err = Before::compile(
        &steps(r#"[{"step": "wasm", "module": "../wasm/layout.wat", "features": ["a"]}]"#),
        &sig(),
        &ModelConfig::default(),
        &dir,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("must be a path inside the model folder"),
        "{err}"
    );
    let err = compile(r#"[{"step": "log", "features": ["a", "b", "a"]}]"#).unwrap_err();
    assert!(err.contains("\"a\" is listed twice"), "{err}");
}
