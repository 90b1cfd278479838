//! Late ground truth: `POST /api/providers/prediction/evaluate` takes a CSV of `id,label` for
//! a finished job whose answers carry ids (`id_columns`), joins it with the job's output
//! files by id, and stores binary-classification metrics in the layout of SageMaker Model
//! Monitor's `binary_classification_metrics` (confusion matrix keyed actual → predicted,
//! every scalar as `{value, standard_deviation}`), with the ROC and precision-recall curves.
//! It runs in the background; `check` shows it, and `report` draws it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::results::Layout;
use super::spec::{invalid, JobSpec};
use super::store::{now_ms, Store};
use super::view::iso;
use super::{JobStatus, PortalError};
use crate::model::fetch::SourceOptions;
use crate::storage::S3Store;
use crate::transform::Place;

/// Ground-truth rows held at once: a panel of known owners, not the whole population.
const MAX_TRUTH_ROWS: usize = 5_000_000;
/// The longest line read from the ground truth or an answer file.
const MAX_LINE: usize = 64 * 1024;
/// Distinct labels kept to name the negative class.
const MAX_LABELS: usize = 64;
/// An evaluation still running after this long is taken for lost (its replica died).
const EVALUATION_LOST_MS: i64 = 3600 * 1000;
/// Points kept on each curve.
const CURVE_POINTS: usize = 200;
/// Model Monitor gives a standard deviation from this many samples on.
const MIN_FOR_DEVIATION: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    name: String,
    /// A local CSV file or an `s3://` object: `id,label` per line (the id as many columns as
    /// the job's `id_columns`); a first line whose last field is `label` is a header.
    ground_truth: String,
    /// The positive class (default: the second class, whose probability the job tallied).
    #[serde(default)]
    positive_label: Option<String>,
}

/// Checks the request and the job, records that an evaluation runs, and starts it.
pub async fn start(
    store: &Store,
    sources: &SourceOptions,
    roots: &super::roots::Roots,
    body: &[u8],
) -> Result<(u16, Value), PortalError> {
    let req: Request = serde_json::from_slice(body).map_err(|e| invalid("body", e.to_string()))?;
    super::spec::check_name(&req.name)?;
    roots.check("ground_truth", &req.ground_truth)?;
    let job = store
        .job(&req.name)
        .await?
        .ok_or_else(|| PortalError::NotFound(req.name.clone()))?;
    if !matches!(
        job.status,
        JobStatus::Completed | JobStatus::PartiallyCompleted
    ) {
        return Err(PortalError::Conflict(format!(
            "job {:?} is {}: ground truth is evaluated against a finished job's answers",
            req.name,
            job.status.as_str()
        )));
    }
    let spec = JobSpec::parse(job.spec.as_bytes())?;
    if spec.id_columns.is_empty() {
        return Err(invalid(
            "name",
            format!(
                "job {:?} has no id_columns: its answers cannot be joined with ground truth",
                req.name
            ),
        )
        .into());
    }
    let results: Value = job
        .results
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    let positive = match (
        &req.positive_label,
        results["score_histogram"]["score_of"].as_str(),
    ) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) if s != "top class" => s.to_string(),
        _ => {
            return Err(invalid(
                "positive_label",
                "the job's model is not a binary classifier: name the positive label",
            )
            .into())
        }
    };
    let truth =
        Place::parse(&req.ground_truth).map_err(|e| invalid("ground_truth", e.to_string()))?;
    if let Place::Local(p) = &truth {
        if !p.is_file() {
            return Err(invalid("ground_truth", format!("{}: no such file", p.display())).into());
        }
    }
    let outputs = store.outputs(&req.name).await?;
    let current: Value = job
        .evaluation
        .as_deref()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or(Value::Null);
    if current["status"] == "InProgress"
        && current["started_ms"]
            .as_i64()
            .is_some_and(|t| now_ms() - t < EVALUATION_LOST_MS)
    {
        return Err(PortalError::Conflict(format!(
            "job {:?} is being evaluated: check it, and send ground truth again once it ends",
            req.name
        )));
    }
    let now = now_ms();
    let running = json!({"status": "InProgress", "ground_truth": req.ground_truth,
                         "positive_label": positive, "started_at": iso(now), "started_ms": now});
    store
        .set_evaluation(&req.name, &running.to_string())
        .await?;
    let (store, sources, name) = (store.clone(), sources.clone(), req.name.clone());
    let id_width = spec.id_columns.len();
    let scored_by = results["score_histogram"]["score_of"]
        .as_str()
        .map(str::to_string);
    let layout: Option<Layout> = serde_json::from_value(results["answer_layout"].clone())
        .ok()
        .flatten();
    tokio::spawn(async move {
        let started = now_ms();
        let computed = run(
            &sources,
            &truth,
            &outputs,
            Reading {
                id_width,
                positive: &positive,
                scored_by: scored_by.as_deref(),
                layout,
            },
        )
        .await;
        let stored = match computed {
            Ok(metrics) => json!({"status": "Completed", "ground_truth": truth.to_string(),
                "positive_label": positive, "started_at": iso(started), "ended_at": iso(now_ms()),
                "matched": metrics.0, "unmatched_truth": metrics.1, "metrics": metrics.2}),
            Err(why) => json!({"status": "Failed", "ground_truth": truth.to_string(),
                "positive_label": positive, "reason": why, "ended_at": iso(now_ms())}),
        };
        if let Err(e) = store.set_evaluation(&name, &stored.to_string()).await {
            log::error!("portal: cannot store the evaluation of {name}: {e}");
        }
    });
    Ok((
        202,
        json!({"name": job.name, "evaluation": running,
                    "check": format!("/api/providers/prediction/check?name={}", job.name),
                    "report": format!("/api/providers/prediction/report?name={}", job.name)}),
    ))
}

/// Fetches what is on S3, then joins and computes on a blocking thread.
/// How a job's answer lines are read back.
#[derive(Clone, Copy)]
struct Reading<'a> {
    id_width: usize,
    positive: &'a str,
    /// The class whose probability a line's second probability is (absent: the positive).
    scored_by: Option<&'a str>,
    layout: Option<Layout>,
}

async fn run(
    sources: &SourceOptions,
    truth: &Place,
    outputs: &[String],
    how: Reading<'_>,
) -> Result<(usize, usize, Value), String> {
    let (id_width, layout) = (how.id_width, how.layout);
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut s3: Option<S3Store> = None;
    let local =
        |place: &Place, n: usize| -> Result<Option<(crate::storage::S3Uri, PathBuf)>, String> {
            match place {
                Place::Local(_) => Ok(None),
                Place::S3(uri) => Ok(Some((uri.clone(), work.path().join(format!("{n}"))))),
            }
        };
    let mut paths = Vec::new();
    let places: Vec<Place> = std::iter::once(Ok(truth.clone()))
        .chain(outputs.iter().map(|o| Place::parse(o)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for (n, place) in places.iter().enumerate() {
        match local(place, n)? {
            None => {
                if let Place::Local(p) = place {
                    paths.push(p.clone());
                }
            }
            Some((uri, at)) => {
                if s3.is_none() {
                    s3 = Some(S3Store::connect(&sources.s3).await);
                }
                if let Some(store) = &s3 {
                    store.download(&uri, &at).await.map_err(|e| e.to_string())?;
                }
                paths.push(at);
            }
        }
    }
    let (positive, scored_by) = (how.positive.to_string(), how.scored_by.map(str::to_string));
    tokio::task::spawn_blocking(move || {
        let (truth, labels) = read_truth(&paths[0], id_width)?;
        let how = Reading {
            id_width,
            positive: &positive,
            scored_by: scored_by.as_deref(),
            layout,
        };
        let pairs = join(&truth, &paths[1..], how)?;
        let matched = pairs.len();
        if matched == 0 {
            return Err("no id of the ground truth is among the job's answers".to_string());
        }
        // The other label, named as the ground truth names it when it has one other.
        let others: Vec<&Vec<u8>> = labels
            .iter()
            .filter(|l| l.as_slice() != positive.as_bytes())
            .collect();
        let negative = match others.as_slice() {
            [one] => String::from_utf8_lossy(one).into_owned(),
            _ => format!("not {positive}"),
        };
        Ok((
            matched,
            truth.len() - matched.min(truth.len()),
            metrics(&pairs, &positive, &negative),
        ))
    })
    .await
    .map_err(|e| format!("the evaluation failed: {e}"))?
}

/// The next line of `r` into `buf` (without its end), refusing lines past `MAX_LINE`; false
/// at the end.
fn next_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    what: &str,
    n: usize,
) -> Result<bool, String> {
    buf.clear();
    let read = std::io::Read::take(&mut *r, MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| format!("{what}: {e}"))?;
    if read == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(format!(
            "{what} line {}: longer than {MAX_LINE} bytes",
            n + 1
        ));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(true)
}

/// Labels by id.
type Truth = HashMap<Vec<u8>, Vec<u8>>;

/// The ground truth by id, and its distinct labels (the first `MAX_LABELS`).
fn read_truth(path: &Path, id_width: usize) -> Result<(Truth, Vec<Vec<u8>>), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut truth, mut labels) = (HashMap::new(), Vec::new());
    let (mut r, mut line, mut n) = (BufReader::new(file), Vec::new(), 0);
    while next_line(&mut r, &mut line, "ground truth", n)? {
        n += 1;
        if line.is_empty() {
            continue;
        }
        let fields = split(&line);
        if n == 1
            && fields
                .last()
                .is_some_and(|l| unquote(l).eq_ignore_ascii_case(b"label"))
        {
            continue;
        }
        if fields.len() != id_width + 1 {
            return Err(format!(
                "ground truth line {n}: {} fields, expected the id ({id_width}) and a label",
                fields.len()
            ));
        }
        if truth.len() >= MAX_TRUTH_ROWS {
            return Err(format!("ground truth: more than {MAX_TRUTH_ROWS} rows"));
        }
        let label = unquote(fields[id_width]).to_vec();
        if labels.len() < MAX_LABELS && !labels.contains(&label) {
            labels.push(label.clone());
        }
        truth.insert(fields[..id_width].join(&b","[..]), label);
    }
    Ok((truth, labels))
}

/// `(actual is positive, predicted is positive, score)` for each answered id in the truth.
fn join(
    truth: &Truth,
    outputs: &[PathBuf],
    how: Reading<'_>,
) -> Result<Vec<(bool, bool, f64)>, String> {
    let Reading {
        id_width,
        positive,
        scored_by,
        layout,
    } = how;
    // id…, label, then p(class 0), p(class 1); or, under top_k, class and probability pairs
    // (at most two for a binary classifier); then a `fields` step's constants.
    if let Some(l) = layout.filter(|l| l.top_k.is_some() && l.classes != 2) {
        return Err(format!(
            "the job's model lists its top classes of {}; an evaluation of top_k answers needs \
             a binary classifier",
            l.classes
        ));
    }
    let top_k = layout.and_then(|l| l.top_k).map(|k| k.min(2));
    let width = id_width + top_k.map_or(3, |k| 1 + 2 * k) + layout.map_or(0, |l| l.fields);
    let mut pairs = Vec::new();
    for path in outputs {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut r, mut line, mut n) = (BufReader::new(file), Vec::new(), 0);
        let what = path.display().to_string();
        while next_line(&mut r, &mut line, &what, n)? {
            n += 1;
            let fields = split(&line);
            if fields.len() != width {
                continue;
            }
            let id = fields[..id_width].join(&b","[..]);
            let Some(actual) = truth.get(&id) else {
                continue;
            };
            let label = unquote(fields[id_width]);
            let number = |at: usize| -> Result<f64, String> {
                std::str::from_utf8(fields[at])
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|p| p.is_finite())
                    .ok_or_else(|| format!("{what} line {n}: the score is not a finite number"))
            };
            let score = match top_k {
                None if scored_by.is_none_or(|s| s == positive) => number(id_width + 2)?,
                None => 1.0 - number(id_width + 2)?,
                Some(k) => {
                    // The positive class's own pair, else (top 1 of two classes) the other's.
                    let mut listed = (0..k).map(|i| id_width + 1 + 2 * i);
                    match listed.find(|&at| unquote(fields[at]) == positive.as_bytes()) {
                        Some(at) => number(at + 1)?,
                        None if k == 1 => 1.0 - number(id_width + 2)?,
                        None => {
                            return Err(format!(
                                "{what} line {n}: the positive label {positive:?} is not among \
                                 the answer's classes"
                            ))
                        }
                    }
                }
            };
            pairs.push((
                actual == positive.as_bytes(),
                label == positive.as_bytes(),
                score,
            ));
        }
    }
    Ok(pairs)
}

use crate::transform::split_fields as split;

fn unquote(f: &[u8]) -> &[u8] {
    f.strip_prefix(b"\"")
        .and_then(|f| f.strip_suffix(b"\""))
        .unwrap_or(f)
}

#[derive(Clone, Copy, Default)]
struct Counts {
    tp: f64,
    fp: f64,
    tn: f64,
    fn_: f64,
}

fn counts(pairs: &[(bool, bool, f64)]) -> Counts {
    let mut c = Counts::default();
    for &(a, p, _) in pairs {
        match (a, p) {
            (true, true) => c.tp += 1.0,
            (false, true) => c.fp += 1.0,
            (false, false) => c.tn += 1.0,
            (true, false) => c.fn_ += 1.0,
        }
    }
    c
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

fn f_beta(precision: f64, recall: f64, beta: f64) -> f64 {
    let b2 = beta * beta;
    ratio((1.0 + b2) * precision * recall, b2 * precision + recall)
}

/// The scalar metrics of one sample.
fn scalars(pairs: &[(bool, bool, f64)]) -> Vec<(&'static str, f64)> {
    let c = counts(pairs);
    let n = pairs.len() as f64;
    let (precision, recall) = (ratio(c.tp, c.tp + c.fp), ratio(c.tp, c.tp + c.fn_));
    let positives = c.tp + c.fn_;
    // The best constant classifier says "positive" to every row: its recall is 1 and its
    // precision the positive share (Model Monitor's reading for binary problems).
    let (bc_precision, bc_recall) = (ratio(positives, n), if positives > 0.0 { 1.0 } else { 0.0 });
    let bc_accuracy = ratio(positives.max(n - positives), n);
    vec![
        ("accuracy", ratio(c.tp + c.tn, n)),
        ("precision", precision),
        ("recall", recall),
        ("true_positive_rate", recall),
        ("true_negative_rate", ratio(c.tn, c.tn + c.fp)),
        ("false_positive_rate", ratio(c.fp, c.tn + c.fp)),
        ("false_negative_rate", ratio(c.fn_, c.tp + c.fn_)),
        ("auc", auc(pairs)),
        ("f0_5", f_beta(precision, recall, 0.5)),
        ("f1", f_beta(precision, recall, 1.0)),
        ("f2", f_beta(precision, recall, 2.0)),
        ("accuracy_best_constant_classifier", bc_accuracy),
        ("precision_best_constant_classifier", bc_precision),
        ("recall_best_constant_classifier", bc_recall),
        (
            "f0_5_best_constant_classifier",
            f_beta(bc_precision, bc_recall, 0.5),
        ),
        (
            "f1_best_constant_classifier",
            f_beta(bc_precision, bc_recall, 1.0),
        ),
        (
            "f2_best_constant_classifier",
            f_beta(bc_precision, bc_recall, 2.0),
        ),
    ]
}

/// ROC AUC as the Mann–Whitney statistic, ties counted half (what scikit-learn computes).
fn auc(pairs: &[(bool, bool, f64)]) -> f64 {
    let mut scored: Vec<(f64, bool)> = pairs.iter().map(|&(a, _, s)| (s, a)).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0.total_cmp(&scored[i].0).is_eq() {
            j += 1;
        }
        let mean_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += mean_rank * scored[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let pos = scored.iter().filter(|x| x.1).count() as f64;
    let neg = scored.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// ROC and precision-recall points at every distinct score, thinned to `CURVE_POINTS`.
type Curve = Vec<(f64, f64)>;

fn curves(pairs: &[(bool, bool, f64)]) -> (Curve, Curve) {
    let mut scored: Vec<(f64, bool)> = pairs.iter().map(|&(a, _, s)| (s, a)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = scored.iter().filter(|x| x.1).count() as f64;
    let neg = scored.len() as f64 - pos;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut roc = vec![(0.0, 0.0)];
    let mut pr = Vec::new();
    let mut i = 0;
    while i < scored.len() {
        let s = scored[i].0;
        while i < scored.len() && scored[i].0.total_cmp(&s).is_eq() {
            if scored[i].1 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        roc.push((ratio(fp, neg), ratio(tp, pos)));
        pr.push((ratio(tp, pos), ratio(tp, tp + fp)));
    }
    let thin = |v: Curve| -> Curve {
        if v.len() <= CURVE_POINTS {
            return v;
        }
        let step = (v.len() - 1) as f64 / (CURVE_POINTS - 1) as f64;
        (0..CURVE_POINTS)
            .map(|k| v[((k as f64 * step).round() as usize).min(v.len() - 1)])
            .collect()
    };
    (thin(roc), thin(pr))
}

/// Model Monitor's `binary_classification_metrics`: each scalar with the standard deviation
/// of five 80 % samples (from 200 rows on; `"NaN"` below, as Model Monitor writes it).
pub fn metrics(pairs: &[(bool, bool, f64)], positive: &str, negative: &str) -> Value {
    let whole = scalars(pairs);
    let samples: Vec<Vec<(&str, f64)>> = if pairs.len() >= MIN_FOR_DEVIATION {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        (0..5)
            .map(|_| {
                let mut idx: Vec<usize> = (0..pairs.len()).collect();
                // A fixed-seed shuffle: the same answers give the same deviations.
                for i in (1..idx.len()).rev() {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    idx.swap(i, (rng % (i as u64 + 1)) as usize);
                }
                let sample: Vec<_> = idx[..pairs.len() * 4 / 5]
                    .iter()
                    .map(|&i| pairs[i])
                    .collect();
                scalars(&sample)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut m = serde_json::Map::new();
    for (k, (name, value)) in whole.iter().enumerate() {
        let sd = if samples.is_empty() {
            json!("NaN")
        } else {
            let xs: Vec<f64> = samples.iter().map(|s| s[k].1).collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            json!((xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt())
        };
        let value = if value.is_finite() {
            json!(value)
        } else {
            json!("NaN")
        };
        m.insert(
            name.to_string(),
            json!({"value": value, "standard_deviation": sd}),
        );
    }
    let c = counts(pairs);
    // Actual label → predicted label, as Model Monitor keys it.
    let mut confusion = serde_json::Map::new();
    let n = |x: f64| x as u64;
    confusion.insert(
        positive.into(),
        json!({positive: n(c.tp), negative: n(c.fn_)}),
    );
    confusion.insert(
        negative.into(),
        json!({positive: n(c.fp), negative: n(c.tn)}),
    );
    m.insert("confusion_matrix".into(), Value::Object(confusion));
    let (roc, pr) = curves(pairs);
    m.insert(
        "receiver_operating_characteristic_curve".into(),
        json!({"false_positive_rates": roc.iter().map(|p| p.0).collect::<Vec<_>>(),
               "true_positive_rates": roc.iter().map(|p| p.1).collect::<Vec<_>>()}),
    );
    m.insert(
        "precision_recall_curve".into(),
        json!({"recalls": pr.iter().map(|p| p.0).collect::<Vec<_>>(),
               "precisions": pr.iter().map(|p| p.1).collect::<Vec<_>>()}),
    );
    json!({"version": 0.0, "dataset": {"item_count": pairs.len()}, "binary_classification_metrics": m})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_counts() {
        // Model Monitor's own fixture: TN=1, FP=2, FN=0, TP=1 → precision 1/3, recall 1,
        // accuracy 0.5, FPR 2/3.
        let pairs = [
            (false, false, 0.1),
            (false, true, 0.6),
            (false, true, 0.7),
            (true, true, 0.9),
        ];
        let m = &metrics(&pairs, "1", "0")["binary_classification_metrics"];
        let v = |k: &str| m[k]["value"].as_f64().unwrap();
        assert!((v("precision") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(v("recall"), 1.0);
        assert_eq!(v("accuracy"), 0.5);
        assert!((v("false_positive_rate") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(v("auc"), 1.0);
        assert_eq!(m["precision"]["standard_deviation"], "NaN");
        assert_eq!(m["confusion_matrix"]["0"]["1"], 2);
        assert_eq!(m["confusion_matrix"]["1"]["1"], 1);
    }

    /// `join` over one answers file, under `layout`, with positive label "m f" (quoted in
    /// the answers, as CSV writes a label with a space only when asked: here always).
    fn joined(lines: &str, layout: Option<Layout>) -> Result<Vec<(bool, bool, f64)>, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.csv.out");
        std::fs::write(&out, lines).unwrap();
        let truth: Truth = [("1", "m f"), ("2", "f"), ("3", "f")]
            .iter()
            .map(|(id, l)| (id.as_bytes().to_vec(), l.as_bytes().to_vec()))
            .collect();
        let how = Reading {
            id_width: 1,
            positive: "m f",
            scored_by: None,
            layout,
        };
        join(&truth, &[out], how)
    }

    #[test]
    fn top_k_lines_give_the_positive_class_score() {
        let top = |k, classes, fields| {
            Some(Layout {
                top_k: Some(k),
                classes,
                fields,
            })
        };
        // k = 2: each class's own pair, in either order; a constant with a comma after them.
        let got = joined(
            "1,\"m f\",\"m f\",0.75,f,0.25,\"v,1\"\n2,f,f,0.875,\"m f\",0.125,\"v,1\"\n",
            top(2, 2, 1),
        )
        .unwrap();
        assert_eq!(got, [(true, true, 0.75), (false, false, 0.125)]);
        // k = 1: the other class on top gives one less its probability.
        let got = joined("1,\"m f\",\"m f\",0.75\n3,f,f,0.875\n", top(1, 2, 0)).unwrap();
        assert_eq!(got, [(true, true, 0.75), (false, false, 0.125)]);
        // A score that is not a number names its line.
        let e = joined("2,f,f,0.5\n1,\"m f\",\"m f\",high\n", top(1, 2, 0)).unwrap_err();
        assert!(
            e.contains("a.csv.out line 2: the score is not a finite number"),
            "{e}"
        );
        // Top classes of more than two: no positive-class score to be had.
        let e = joined("1,a,a,0.5\n", top(1, 5, 0)).unwrap_err();
        assert!(e.contains("needs a binary classifier"), "{e}");
        // Without a layout, the plain lines as before.
        let got = joined("1,\"m f\",0.25,0.75\n", None).unwrap();
        assert_eq!(got, [(true, true, 0.75)]);
    }

    #[test]
    fn a_nan_score_ends_the_loops() {
        let p = [
            (true, true, f64::NAN),
            (false, false, 0.5),
            (true, true, f64::NAN),
        ];
        assert!(auc(&p).is_finite());
        let (roc, pr) = curves(&p);
        assert_eq!((roc.len(), pr.len()), (3, 2));
    }

    #[test]
    fn auc_counts_ties_half() {
        // One positive and one negative with the same score: 0.5.
        assert_eq!(auc(&[(true, true, 0.5), (false, true, 0.5)]), 0.5);
        // Pairs (pos, neg): (0.8, 0.3) right, (0.8, 0.9) wrong, (0.4, 0.3) right, (0.4, 0.9)
        // wrong: 2 of 4.
        let p = [
            (true, true, 0.8),
            (true, false, 0.4),
            (false, false, 0.3),
            (false, true, 0.9),
        ];
        assert_eq!(auc(&p), 0.5);
    }
}
