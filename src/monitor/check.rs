//! The data-quality checks of a profile against a baseline, as Model Monitor runs them
//! (../shared/reference/monitoring-formats.md §2.4): the same check names, the same
//! description wording (tools parse it with regexes), and Deequ's distances.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::files::{
    enabled, Constraints, FeatureConstraints, FeatureStatistics, InferredType, Statistics,
    Violation, Violations,
};
use super::profile::{FeatureProfile, Profile};
use super::sketch::Kll;

pub const DATA_TYPE: &str = "data_type_check";
pub const COMPLETENESS: &str = "completeness_check";
pub const DRIFT: &str = "baseline_drift_check";
pub const MISSING_COLUMN: &str = "missing_column_check";
pub const EXTRA_COLUMN: &str = "extra_column_check";
pub const CATEGORICAL_VALUES: &str = "categorical_values_check";
pub const CHECKS: [&str; 6] = [
    DATA_TYPE,
    COMPLETENESS,
    DRIFT,
    MISSING_COLUMN,
    EXTRA_COLUMN,
    CATEGORICAL_VALUES,
];

/// Deequ's default c(α) for the Robust correction (α ≈ 0.003).
const C_ALPHA: f64 = 1.8;

/// A baseline ready to check against: the files, and each numeric feature's sketch rebuilt
/// once.
pub struct Baseline {
    pub statistics: Statistics,
    pub constraints: Constraints,
    sketches: HashMap<String, Kll>,
}

impl Baseline {
    pub fn new(statistics: Statistics, constraints: Constraints) -> Self {
        let sketches = statistics
            .features
            .iter()
            .filter_map(|f| {
                let n = f.numerical_statistics.as_ref()?;
                let sketch = n.distribution.as_ref()?.kll.sketch.as_ref()?;
                let kll = Kll::from_levels(
                    sketch.data.clone(),
                    sketch.parameters.k as usize,
                    sketch.parameters.c,
                    (n.common.num_present > 0).then_some(n.min),
                    (n.common.num_present > 0).then_some(n.max),
                );
                Some((f.name.clone(), kll))
            })
            .collect();
        Self {
            statistics,
            constraints,
            sketches,
        }
    }

    pub fn feature_names(&self) -> Vec<String> {
        self.constraints
            .features
            .iter()
            .map(|f| f.name.clone())
            .collect()
    }

    /// An empty profile of the baseline's features, typed as the baseline says.
    pub fn profile(&self) -> Profile {
        Profile::new(
            self.constraints
                .features
                .iter()
                .map(|f| FeatureProfile::new(&f.name, Some(f.inferred_type)))
                .collect(),
        )
    }

    fn statistics_of(&self, name: &str) -> Option<&FeatureStatistics> {
        self.statistics.features.iter().find(|f| f.name == name)
    }
}

/// What the current data's columns were, for the column checks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Columns {
    /// Baseline features the data did not have.
    pub missing: Vec<String>,
    /// Columns of the data the baseline does not have.
    pub extra: Vec<String>,
    /// Columns in the current data set.
    pub count: usize,
}

/// One feature's figures against its baseline.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureCheck {
    pub name: String,
    pub inferred_type: InferredType,
    pub present: u64,
    pub completeness: f64,
    pub baseline_completeness: Option<f64>,
    /// The share of present values of the baseline's type.
    pub type_match: f64,
    /// The share of present values inside the baseline's domain, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_match: Option<f64>,
    /// L∞ before and after the Robust correction, and the threshold it is held to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_raw: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
    pub threshold: f64,
    /// Values seen now that the baseline never saw (strings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unseen: Vec<String>,
    pub violations: Vec<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub rows: u64,
    pub columns: Columns,
    pub features: Vec<FeatureCheck>,
    pub violations: Violations,
}

impl Evaluation {
    /// Features by how bad they look: most violations, then largest distance over threshold.
    pub fn worst_first(&self) -> Vec<&FeatureCheck> {
        let mut v: Vec<&FeatureCheck> = self.features.iter().collect();
        let score = |f: &FeatureCheck| f.distance.unwrap_or(0.0) / f.threshold.max(1e-9);
        v.sort_by(|a, b| {
            b.violations
                .len()
                .cmp(&a.violations.len())
                .then(score(b).total_cmp(&score(a)))
        });
        v
    }
}

/// Java's `Double.toString` for the numbers in descriptions ("0.0", not Rust's "0"), so a
/// description reads exactly as the container's.
pub fn java_double(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e7 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

fn value_description(x: f64) -> String {
    format!(
        "Value: {} does not meet the constraint requirement! ",
        java_double(x)
    )
}

fn robust_margin(n: f64, m: f64) -> f64 {
    if n <= 0.0 || m <= 0.0 {
        return f64::INFINITY;
    }
    C_ALPHA * ((n + m) / (n * m)).sqrt()
}

/// Checks `current` (a profile of the baseline's features, by name) against the baseline.
pub fn evaluate(baseline: &Baseline, current: &Profile, columns: Columns) -> Evaluation {
    let config = &baseline.constraints.monitoring_config;
    let dist = &config.distribution_constraints;
    let compare = enabled(&dist.perform_comparison);
    let mut features = Vec::new();
    let mut violations = Vec::new();
    let push = |v: &mut Vec<Violation>, name: &str, check: &'static str, description: String| {
        v.push(Violation {
            feature_name: name.to_owned(),
            constraint_check_type: check.to_owned(),
            description,
        })
    };
    for fc in &baseline.constraints.features {
        let Some(cur) = current.features.iter().find(|f| f.name == fc.name) else {
            continue;
        };
        if columns.missing.contains(&fc.name) {
            continue;
        }
        let check = feature_check(baseline, fc, cur, compare, dist.robust());
        if fc.evaluated(config) {
            for &c in &check.violations {
                let description = match c {
                    DRIFT => format!(
                        "Baseline drift distance: {} exceeds threshold: {}",
                        check.distance.unwrap_or(0.0),
                        java_double(check.threshold)
                    ),
                    DATA_TYPE => value_description(check.type_match),
                    COMPLETENESS => value_description(check.completeness),
                    _ => value_description(check.domain_match.unwrap_or(1.0)),
                };
                push(&mut violations, &fc.name, c, description);
            }
        }
        features.push(check);
    }
    let expected = baseline.constraints.features.len();
    let counts = format!(
        "Number of columns in current dataset: {}, Number of columns in baseline constraints: {expected}",
        columns.count
    );
    for name in &columns.missing {
        push(
            &mut violations,
            name,
            MISSING_COLUMN,
            format!("There are missing columns in current dataset. {counts}"),
        );
    }
    for name in &columns.extra {
        push(
            &mut violations,
            name,
            EXTRA_COLUMN,
            format!("There are extra columns in current dataset. {counts}"),
        );
    }
    Evaluation {
        rows: current.rows,
        columns,
        features,
        violations: Violations { violations },
    }
}

fn feature_check(
    baseline: &Baseline,
    fc: &FeatureConstraints,
    cur: &FeatureProfile,
    compare: bool,
    robust: bool,
) -> FeatureCheck {
    let config = &baseline.constraints.monitoring_config;
    let dist = &config.distribution_constraints;
    let present = cur.present();
    let completeness = cur.common().completeness();
    let mut violations = Vec::new();
    let type_match = if present == 0 {
        1.0
    } else {
        let ok = match fc.inferred_type {
            InferredType::Integral => cur.numbers as f64 * cur.integral_share(),
            InferredType::Fractional => cur.numbers as f64,
            InferredType::String | InferredType::Unknown => present as f64,
        };
        ok / present as f64
    };
    if type_match < config.datatype_check_threshold {
        violations.push(DATA_TYPE);
    }
    // The baseline's completeness is what was observed, so sampling noise alone would trip an
    // exact comparison: with Robust, a drop is a violation only past the binomial margin.
    if let Some(base) = fc.completeness {
        let n = (present + cur.missing) as f64;
        let margin = if robust && n > 0.0 {
            C_ALPHA * (base * (1.0 - base) / n).sqrt()
        } else {
            0.0
        };
        if n > 0.0 && completeness < base - margin {
            violations.push(COMPLETENESS);
        }
    }
    let mut domain_match = None;
    let mut unseen = BTreeSet::new();
    let domain = fc
        .string_constraints
        .as_ref()
        .filter(|s| !s.domains.is_empty());
    if let Some(s) = domain {
        let known: BTreeSet<&str> = s.domains.iter().map(String::as_str).collect();
        let mut outside = cur.categories.overflow;
        for (v, &c) in &cur.categories.counts {
            if !known.contains(v.as_str()) {
                outside += c;
                unseen.insert(v.clone());
            }
        }
        let m = if cur.text == 0 {
            1.0
        } else {
            1.0 - outside as f64 / cur.text as f64
        };
        domain_match = Some(m);
        if m < config.domain_content_threshold {
            violations.push(CATEGORICAL_VALUES);
        }
    }
    let numeric = fc.inferred_type.is_numeric();
    let threshold = if numeric {
        dist.comparison_threshold
    } else {
        dist.categorical_threshold()
    };
    let mut distance_raw = None;
    let mut distance = None;
    if compare && present > 0 {
        let raw_and_sizes = if numeric {
            baseline
                .sketches
                .get(&fc.name)
                .filter(|k| !k.is_empty() && !cur.kll.is_empty())
                // The margin is for the effective sample size: a sampled window's sketch counts
                // each sampled value many times over.
                .map(|k| (cur.kll.linf(k), cur.kll.effective_n(), k.effective_n()))
        } else {
            baseline
                .statistics_of(&fc.name)
                .and_then(|s| categorical_linf(s, cur))
        };
        if let Some((raw, n, m)) = raw_and_sizes {
            let d = if robust {
                (raw - robust_margin(n, m)).max(0.0)
            } else {
                raw
            };
            distance_raw = Some(raw);
            distance = Some(d);
            if d > threshold {
                violations.push(DRIFT);
            }
        }
    }
    FeatureCheck {
        name: fc.name.clone(),
        inferred_type: fc.inferred_type,
        present,
        completeness,
        baseline_completeness: fc.completeness,
        type_match,
        domain_match,
        distance_raw,
        distance,
        threshold,
        unseen: unseen.into_iter().take(20).collect(),
        violations,
    }
}

/// L∞ between the category proportions of the baseline and the current data, over the union
/// of categories (Deequ's categorical LInfinity), with both sample sizes. Values the baseline
/// counted but did not list (past its category cap) form one "other" category, and so do
/// the current values the baseline does not list when there is such a remainder.
fn categorical_linf(base: &FeatureStatistics, cur: &FeatureProfile) -> Option<(f64, f64, f64)> {
    let s = base.string_statistics.as_ref()?;
    let buckets = &s.distribution.as_ref()?.categorical.buckets;
    let m = s.common.num_present as f64;
    let n = cur.text as f64;
    if m == 0.0 || n == 0.0 {
        return None;
    }
    let listed: u64 = buckets.iter().map(|b| b.count).sum();
    // A remainder is "other" only when the file lists fewer categories than there were (a
    // mixed column's numbers are present but never listed).
    let unlisted = s.distinct_count > buckets.len() as f64 + 0.5;
    let base_other = if unlisted {
        s.common.num_present.saturating_sub(listed) as f64 / m
    } else {
        0.0
    };
    let mut linf: f64 = 0.0;
    for b in buckets {
        let c = cur.categories.counts.get(&b.value).copied().unwrap_or(0);
        linf = linf.max((b.count as f64 / m - c as f64 / n).abs());
    }
    let known: BTreeSet<&str> = buckets.iter().map(|b| b.value.as_str()).collect();
    let mut cur_other = cur.categories.overflow as f64 / n;
    for (v, &c) in &cur.categories.counts {
        if !known.contains(v.as_str()) {
            if base_other > 0.0 {
                cur_other += c as f64 / n;
            } else {
                linf = linf.max(c as f64 / n);
            }
        }
    }
    linf = linf.max((cur_other - base_other).abs());
    Some((linf, n, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(name: &str, xs: impl Iterator<Item = f64>) -> Profile {
        let mut f = FeatureProfile::new(name, None);
        xs.for_each(|x| f.cell(&x.to_string()));
        let mut p = Profile::new(vec![f]);
        p.rows = p.features[0].present();
        p
    }

    fn baseline_of(p: &Profile) -> Baseline {
        Baseline::new(p.statistics(), p.constraints())
    }

    #[test]
    fn java_doubles_read_as_the_containers() {
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(0.009009009009009009), "0.009009009009009009");
        assert_eq!(
            value_description(0.0),
            "Value: 0.0 does not meet the constraint requirement! "
        );
    }

    #[test]
    fn the_same_data_has_no_violation_and_a_shift_is_drift() {
        let base = numbers("x", (0..5000).map(|i| (i % 1000) as f64 / 10.0));
        let b = baseline_of(&base);
        let same = evaluate(&b, &base, Columns::default());
        assert!(same.violations.violations.is_empty(), "{same:?}");
        let shifted = numbers("x", (0..2000).map(|i| (i % 1000) as f64 / 10.0 + 30.0));
        let e = evaluate(&b, &shifted, Columns::default());
        let v = &e.violations.violations;
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].constraint_check_type, DRIFT);
        // Exact K-S of uniform [0,100) against [30,130) is 0.3; the correction takes off
        // 1.8·sqrt(7000/1e7).
        let want = 0.3 - 1.8 * (7000.0f64 / 1e7).sqrt();
        assert!(
            (e.features[0].distance.unwrap() - want).abs() < 0.01,
            "{e:?}"
        );
        assert!(v[0].description.starts_with("Baseline drift distance: "));
        assert!(v[0].description.contains(" exceeds threshold: 0.1"));
    }

    #[test]
    fn type_completeness_and_domain_checks() {
        let mut f = FeatureProfile::new("os", None);
        (0..300).for_each(|i| f.cell(["android", "ios"][i % 2]));
        let b = baseline_of(&Profile::new(vec![f]));
        let mut cur = FeatureProfile::new("os", Some(InferredType::String));
        (0..1000).for_each(|i| cur.cell(["android", "ios", "kaios", ""][i % 4]));
        let e = evaluate(&b, &Profile::new(vec![cur]), Columns::default());
        let checks: Vec<&str> = e
            .violations
            .violations
            .iter()
            .map(|v| v.constraint_check_type.as_str())
            .collect();
        assert_eq!(checks, [COMPLETENESS, CATEGORICAL_VALUES, DRIFT]);
        assert_eq!(e.features[0].unseen, ["kaios"]);
        assert!((e.features[0].domain_match.unwrap() - 2.0 / 3.0).abs() < 1e-9);

        let ints = numbers("n", (0..100).map(f64::from));
        let b = baseline_of(&ints);
        let mut cur = FeatureProfile::new("n", Some(InferredType::Integral));
        ["1", "2", "2.5", "x"].iter().for_each(|c| cur.cell(c));
        let e = evaluate(&b, &Profile::new(vec![cur]), Columns::default());
        assert_eq!(e.violations.violations[0].constraint_check_type, DATA_TYPE);
        assert_eq!(
            e.violations.violations[0].description,
            "Value: 0.5 does not meet the constraint requirement! "
        );
    }
}
