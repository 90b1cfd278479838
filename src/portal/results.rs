//! Recording and comparing prediction results: while a job runs, each item tallies its
//! predictions (rows, the count of each label, a histogram of the score); the job's results
//! are the items' tallies merged; a comparison sets two jobs' results side by side. Nothing
//! per row enters the store: predictions stay in the output files.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::spec::Gate;
use crate::model::{Label, Predictions};
use crate::stream::Observer;

/// Bins of the score histogram, over [0, 1].
pub const BINS: usize = 20;

/// What one item's (or a whole job's) predictions were.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub rows: u64,
    /// Classifiers: rows per predicted label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, u64>,
    /// Classifiers: a histogram of the score (see `score_of`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Histogram>,
    /// Regressors: the values' count, sum, least and greatest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Values>,
    /// How the answer lines are laid out, when the model's `top_k` or `fields` steps change
    /// them: what reading them back (an evaluation) must know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

/// A `top_k` step's k (and of how many classes), and the number of a `fields` step's
/// constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub classes: usize,
    #[serde(default)]
    pub fields: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Whose probability is counted: the second class of a binary classifier (the positive
    /// one), or `top class` for more classes.
    pub score_of: String,
    /// `BINS` equal bins over [0, 1]; 1.0 falls in the last.
    pub bins: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Values {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Tally {
    pub fn add(&mut self, p: &Predictions) {
        self.rows += p.rows() as u64;
        if self.layout.is_none() {
            let classes = match p {
                Predictions::Classifier { classes, .. } => classes.len(),
                _ => 0,
            };
            self.layout = p.shown().map(|s| Layout {
                top_k: s.top_k,
                classes,
                fields: s.fields.len(),
            });
        }
        match p {
            Predictions::Classifier {
                labels,
                classes,
                probabilities,
                ..
            } => {
                // Runs of one label are counted before a lookup: no allocation per row.
                let mut run: Option<(&Label, u64)> = None;
                for l in labels.iter().map(Some).chain(std::iter::once(None)) {
                    match (run, l) {
                        (Some((r, n)), Some(l)) if r == l => run = Some((r, n + 1)),
                        (prev, next) => {
                            if let Some((r, n)) = prev {
                                self.count(r, n);
                            }
                            run = next.map(|l| (l, 1));
                        }
                    }
                }
                let k = classes.len();
                if k == 0 {
                    return;
                }
                let score_of = if k == 2 {
                    classes[1].clone()
                } else {
                    "top class".to_string()
                };
                let h = self.score.get_or_insert_with(|| Histogram {
                    score_of,
                    bins: vec![0; BINS],
                });
                for row in probabilities.chunks_exact(k) {
                    let s = if k == 2 {
                        row[1]
                    } else {
                        row.iter().copied().fold(f32::NAN, f32::max)
                    };
                    if s.is_finite() {
                        let b = ((s.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
                        h.bins[b] += 1;
                    }
                }
            }
            Predictions::Regressor { values, .. } => {
                for &v in values {
                    self.add_value(v);
                }
            }
            Predictions::Raw { .. } => {}
        }
    }

    fn count(&mut self, label: &Label, n: u64) {
        let name = match label {
            Label::Int(i) => std::borrow::Cow::Owned(i.to_string()),
            Label::Str(s) => std::borrow::Cow::Borrowed(s.as_str()),
        };
        match self.labels.get_mut(name.as_ref()) {
            Some(c) => *c += n,
            None => {
                self.labels.insert(name.into_owned(), n);
            }
        }
    }

    /// One regressor value (non-finite ones are left out).
    pub fn add_value(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        let s = self.values.get_or_insert(Values {
            count: 0,
            sum: 0.0,
            min: v,
            max: v,
        });
        s.count += 1;
        s.sum += v;
        s.min = s.min.min(v);
        s.max = s.max.max(v);
    }

    pub fn merge(&mut self, o: &Tally) {
        self.rows += o.rows;
        self.layout = self.layout.or(o.layout);
        for (k, v) in &o.labels {
            *self.labels.entry(k.clone()).or_insert(0) += v;
        }
        if let Some(h) = &o.score {
            match &mut self.score {
                Some(mine) if mine.bins.len() == h.bins.len() => {
                    for (a, b) in mine.bins.iter_mut().zip(&h.bins) {
                        *a += b;
                    }
                }
                Some(_) => {}
                None => self.score = Some(h.clone()),
            }
        }
        if let Some(v) = &o.values {
            match &mut self.values {
                Some(mine) => {
                    mine.count += v.count;
                    mine.sum += v.sum;
                    mine.min = mine.min.min(v.min);
                    mine.max = mine.max.max(v.max);
                }
                None => self.values = Some(v.clone()),
            }
        }
    }

    /// Each label's share of the labelled rows.
    pub fn shares(&self) -> BTreeMap<String, f64> {
        let total: u64 = self.labels.values().sum();
        self.labels
            .iter()
            .map(|(k, &v)| (k.clone(), v as f64 / total.max(1) as f64))
            .collect()
    }
}

/// Tallies the predictions of one item as its pieces are encoded (on several threads).
#[derive(Default)]
pub struct Recorder(Mutex<Tally>);

impl Recorder {
    pub fn take(&self) -> Tally {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Observer for Recorder {
    fn predictions(&self, p: &Predictions) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).add(p);
    }
}

/// A job's results: its items' tallies merged, with its row counts.
pub fn results(tallies: &[Tally], rows_failed: u64, model_version: &str) -> Value {
    let mut all = Tally::default();
    for t in tallies {
        all.merge(t);
    }
    let mut v = json!({
        "rows": all.rows,
        "rows_failed": rows_failed,
        "label_counts": all.labels,
        "label_shares": all.shares(),
        "score_histogram": all.score,
        "values": all.values,
        "model_version": model_version,
    });
    if let Some(layout) = all.layout {
        v["answer_layout"] = json!(layout);
    }
    v
}

pub fn known_metric(m: &str) -> bool {
    matches!(
        m,
        "label_share_linf" | "score_js_divergence" | "row_count_change"
    ) || m
        .strip_prefix("label_share_change:")
        .is_some_and(|l| !l.is_empty())
}

/// Jensen–Shannon divergence (base 2, in [0, 1]) between two histograms of the same bins.
pub fn js_divergence(p: &[u64], q: &[u64]) -> Option<f64> {
    let (sp, sq) = (p.iter().sum::<u64>(), q.iter().sum::<u64>());
    if p.len() != q.len() || sp == 0 || sq == 0 {
        return None;
    }
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(&x, _)| x > 0.0)
            .map(|(&x, &y)| x * (x / y).log2())
            .sum()
    };
    let p: Vec<f64> = p.iter().map(|&x| x as f64 / sp as f64).collect();
    let q: Vec<f64> = q.iter().map(|&x| x as f64 / sq as f64).collect();
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    Some((0.5 * kl(&p, &m) + 0.5 * kl(&q, &m)).clamp(0.0, 1.0))
}

/// The candidate's results against the base's: row counts, label shares and their change,
/// the L∞ distance over label shares, the JS divergence of the score histograms, and gates.
pub fn compare(base_name: &str, base: &Value, candidate: &Value, gates: &[Gate]) -> Value {
    let tally = |v: &Value| -> Tally {
        Tally {
            rows: v["rows"].as_u64().unwrap_or(0),
            labels: serde_json::from_value(v["label_counts"].clone()).unwrap_or_default(),
            score: serde_json::from_value(v["score_histogram"].clone()).unwrap_or(None),
            values: None,
            layout: None,
        }
    };
    let (b, c) = (tally(base), tally(candidate));
    let (bs, cs) = (b.shares(), c.shares());
    let mut labels: Vec<&String> = bs.keys().chain(cs.keys()).collect();
    labels.sort();
    labels.dedup();
    let mut shares = serde_json::Map::new();
    let mut linf: f64 = 0.0;
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    for l in labels {
        let (x, y) = (
            bs.get(l).copied().unwrap_or(0.0),
            cs.get(l).copied().unwrap_or(0.0),
        );
        linf = linf.max((y - x).abs());
        metrics.insert(format!("label_share_change:{l}"), y - x);
        shares.insert(
            l.clone(),
            json!({"base": x, "candidate": y, "change": y - x}),
        );
    }
    metrics.insert("label_share_linf".into(), linf);
    let row_change = if b.rows == 0 {
        if c.rows == 0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (c.rows as f64 - b.rows as f64) / b.rows as f64
    };
    metrics.insert("row_count_change".into(), row_change.abs());
    let js = match (&b.score, &c.score) {
        (Some(x), Some(y)) if x.score_of == y.score_of => js_divergence(&x.bins, &y.bins),
        _ => None,
    };
    if let Some(js) = js {
        metrics.insert("score_js_divergence".into(), js);
    }
    let checked: Vec<Value> = gates
        .iter()
        .map(|g| {
            let value = metrics.get(&g.metric).copied();
            let passed = value.is_some_and(|v| {
                g.min.is_none_or(|m| v >= m) && g.max.is_none_or(|m| v <= m)
            });
            json!({"metric": g.metric, "value": value, "min": g.min, "max": g.max, "passed": passed,
                   "why": if value.is_none() { Some("the metric does not apply to these results") } else { None }})
        })
        .collect();
    let passed = checked.iter().all(|g| g["passed"] == true);
    json!({
        "base": base_name,
        "rows": {"base": b.rows, "candidate": c.rows,
                 "change": if row_change.is_finite() { json!(row_change) } else { Value::Null }},
        "label_shares": shares,
        "label_share_linf": linf,
        "score_js_divergence": js,
        "gates": checked,
        "passed": passed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(labels: &[&str], p1: &[f32]) -> Predictions {
        Predictions::Classifier {
            labels: labels.iter().map(|l| Label::Str(l.to_string())).collect(),
            classes: vec!["female".into(), "male".into()],
            probabilities: p1.iter().flat_map(|&p| [1.0 - p, p]).collect(),
            shown: None,
        }
    }

    #[test]
    fn tallies_merge_to_the_tally_of_all_rows() {
        let (a, b) = (
            classified(&["male", "female"], &[0.9, 0.1]),
            classified(&["male"], &[1.0]),
        );
        let (mut ta, mut tb, mut all) = (Tally::default(), Tally::default(), Tally::default());
        ta.add(&a);
        tb.add(&b);
        all.add(&a);
        all.add(&b);
        ta.merge(&tb);
        assert_eq!(ta, all);
        assert_eq!(all.labels["male"], 2);
        let h = all.score.unwrap();
        assert_eq!(h.score_of, "male");
        assert_eq!((h.bins[2], h.bins[18], h.bins[19]), (1, 1, 1));
    }

    #[test]
    fn js_divergence_matches_its_definition() {
        assert_eq!(js_divergence(&[1, 0], &[1, 0]), Some(0.0));
        assert!((js_divergence(&[1, 0], &[0, 1]).unwrap() - 1.0).abs() < 1e-12);
        // p = (0.5, 0.5), q = (1, 0): m = (0.75, 0.25);
        // JS = 0.5 (0.5 log2(0.5/0.75) + 0.5 log2(0.5/0.25)) + 0.5 (log2(1/0.75)).
        let want =
            0.5 * (0.5 * (0.5f64 / 0.75).log2() + 0.5 * 2f64.log2()) + 0.5 * (1.0f64 / 0.75).log2();
        assert!((js_divergence(&[5, 5], &[3, 0]).unwrap() - want).abs() < 1e-12);
        assert_eq!(js_divergence(&[0, 0], &[1, 0]), None);
    }

    #[test]
    fn comparison_reports_share_changes_and_gates() {
        let base = json!({"rows": 100, "label_counts": {"female": 50, "male": 50}});
        let cand = json!({"rows": 110, "label_counts": {"female": 44, "male": 66}});
        let gates = vec![
            Gate {
                metric: "label_share_linf".into(),
                min: None,
                max: Some(0.05),
            },
            Gate {
                metric: "row_count_change".into(),
                min: None,
                max: Some(0.2),
            },
            Gate {
                metric: "score_js_divergence".into(),
                min: None,
                max: Some(0.1),
            },
        ];
        let c = compare("last", &base, &cand, &gates);
        assert!((c["label_share_linf"].as_f64().unwrap() - 0.1).abs() < 1e-12);
        assert!((c["rows"]["change"].as_f64().unwrap() - 0.1).abs() < 1e-12);
        assert!((c["label_shares"]["male"]["change"].as_f64().unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(c["gates"][0]["passed"], false);
        assert_eq!(c["gates"][1]["passed"], true);
        // No histograms: the gate cannot pass, and says why.
        assert_eq!(c["gates"][2]["passed"], false);
        assert_eq!(c["passed"], false);
    }
}
