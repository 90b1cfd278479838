//! Per-feature statistics of a data set, built from CSV records (`mlapp baseline`,
//! `mlapp monitor`) or from the frames the server decodes, and mergeable: the server keeps one
//! profile per worker and merges them when a window is read, as whylogs and Deequ do.

use std::collections::HashMap;

use super::files::{
    CategoricalBucket, CategoricalDistribution, Common, Constraints, Dataset, FeatureConstraints,
    FeatureStatistics, InferredType, KllDistribution, KllParameters, KllSketch, MonitoringConfig,
    NumConstraints, NumericBucket, NumericDistribution, NumericalStatistics, Statistics,
    StringConstraints, StringDistribution, StringStatistics, BUCKETS,
};
use super::sketch::{Hll, Kll};
use crate::codec::frame::{Column, Frame};
use crate::model::signature::{ElemType, ModelSignature};

/// Distinct values counted exactly per feature; values past this are counted together (the
/// distinct count stays an estimate from the HyperLogLog).
const MAX_CATEGORIES: usize = 10_000;
const MAX_CATEGORY_CHARS: usize = 256;
/// Categories written to `statistics.json`, the most frequent first.
const MAX_BUCKETS_WRITTEN: usize = 1_000;
/// Deequ's cardinality limit for suggesting a domain, and its share of singletons.
const DOMAIN_MAX_DISTINCT: usize = 120;
const DOMAIN_MAX_SINGLETON_SHARE: f64 = 0.1;

#[derive(Clone, Debug)]
pub struct Profile {
    pub rows: u64,
    pub features: Vec<FeatureProfile>,
}

#[derive(Clone, Debug)]
pub struct FeatureProfile {
    pub name: String,
    /// The type the model declares; without a model the type is inferred from the values.
    pub declared: Option<InferredType>,
    pub missing: u64,
    /// Present values by kind: numbers with no fraction, other numbers, and text.
    pub integral: u64,
    pub fractional: u64,
    pub text: u64,
    pub moments: Moments,
    pub kll: Kll,
    pub categories: Categories,
}

/// Count, mean and sum of squared deviations, merged with Chan et al.'s formula: numerically
/// stable where a plain sum of squares is not.
#[derive(Clone, Copy, Debug, Default)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        if self.n == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += 1;
        self.sum += x;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = (self.n + o.n) as f64;
        let d = o.mean - self.mean;
        self.m2 += o.m2 + d * d * self.n as f64 * o.n as f64 / n;
        self.mean += d * o.n as f64 / n;
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// The population standard deviation, as Deequ's `StandardDeviation` computes it.
    pub fn std_dev(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.m2 / self.n as f64).max(0.0).sqrt()
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Categories {
    pub counts: HashMap<String, u64>,
    /// Values of categories past `MAX_CATEGORIES`.
    pub overflow: u64,
    pub hll: Hll,
}

impl Categories {
    fn add(&mut self, v: &str) {
        self.hll.insert(v.as_bytes());
        // A category is a short label: a long value is kept by its first bytes, so one key
        // cannot hold a whole request body.
        let v = match v.char_indices().nth(MAX_CATEGORY_CHARS) {
            Some((cut, _)) => &v[..cut],
            None => v,
        };
        if let Some(c) = self.counts.get_mut(v) {
            *c += 1;
        } else if self.counts.len() < MAX_CATEGORIES {
            self.counts.insert(v.to_owned(), 1);
        } else {
            self.overflow += 1;
        }
    }

    fn merge(&mut self, o: &Categories) {
        self.hll.merge(&o.hll);
        self.overflow += o.overflow;
        for (k, &v) in &o.counts {
            if let Some(c) = self.counts.get_mut(k) {
                *c += v;
            } else if self.counts.len() < MAX_CATEGORIES {
                self.counts.insert(k.clone(), v);
            } else {
                self.overflow += v;
            }
        }
    }

    /// Categories by count, most frequent first (ties by value, so files are reproducible).
    pub fn sorted(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.counts.iter().map(|(k, &c)| (k.as_str(), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    /// Exact while no category overflowed, else the HyperLogLog's estimate.
    pub fn distinct(&self) -> f64 {
        if self.overflow == 0 {
            self.counts.len() as f64
        } else {
            self.hll.estimate().max(self.counts.len() as f64)
        }
    }
}

impl FeatureProfile {
    pub fn new(name: impl Into<String>, declared: Option<InferredType>) -> Self {
        Self {
            name: name.into(),
            declared,
            missing: 0,
            integral: 0,
            fractional: 0,
            text: 0,
            moments: Moments::default(),
            kll: Kll::new(),
            categories: Categories::default(),
        }
    }

    pub fn present(&self) -> u64 {
        self.integral + self.fractional + self.text
    }

    /// The type written to the files: the model's, else Deequ's rule on the values (any text
    /// makes a String, any fraction a Fractional). A column with no value at all is typed
    /// Fractional rather than `Unknown`, which SageMaker's own visualizer cannot read.
    pub fn inferred(&self) -> InferredType {
        if let Some(t) = self.declared {
            return t;
        }
        if self.text > 0 {
            InferredType::String
        } else if self.integral > 0 && self.fractional == 0 {
            InferredType::Integral
        } else {
            InferredType::Fractional
        }
    }

    fn number(&mut self, x: f64) {
        if x.is_nan() {
            self.missing += 1;
            return;
        }
        if x.fract() == 0.0 {
            self.integral += 1;
        } else {
            self.fractional += 1;
        }
        if x.is_finite() {
            self.moments.add(x);
            self.kll.update(x);
        }
    }

    fn string(&mut self, s: &str) {
        if s.is_empty() {
            self.missing += 1;
        } else {
            self.text += 1;
            self.categories.add(s);
        }
    }

    /// A CSV cell: empty is missing (as Spark reads CSV); numbers count as numbers unless the
    /// model declares a string feature.
    pub fn cell(&mut self, text: &str) {
        if self.declared == Some(InferredType::String) {
            return self.string(text);
        }
        let t = text.trim();
        if t.is_empty() {
            self.missing += 1;
            return;
        }
        match t.parse::<f64>() {
            Ok(x) if !x.is_nan() => {
                // Deequ types "53.0" as Fractional: the text, not the value, decides.
                let fractional = t.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
                if fractional || x.fract() != 0.0 {
                    self.fractional += 1;
                } else {
                    self.integral += 1;
                }
                if x.is_finite() {
                    self.moments.add(x);
                    self.kll.update(x);
                }
            }
            _ => self.string(t),
        }
    }

    pub fn merge(&mut self, o: &FeatureProfile) {
        self.missing += o.missing;
        self.integral += o.integral;
        self.fractional += o.fractional;
        self.text += o.text;
        self.moments.merge(&o.moments);
        self.kll.merge(&o.kll);
        self.categories.merge(&o.categories);
    }

    pub fn common(&self) -> Common {
        Common {
            num_present: self.present(),
            num_missing: self.missing,
        }
    }

    pub fn statistics(&self) -> FeatureStatistics {
        let ty = self.inferred();
        let common = self.common();
        let (numerical_statistics, string_statistics) = if ty.is_numeric() {
            let m = &self.moments;
            let buckets = self
                .kll
                .buckets(BUCKETS)
                .into_iter()
                .map(|b| NumericBucket {
                    lower_bound: b.lower,
                    upper_bound: b.upper,
                    count: b.count,
                })
                .collect();
            let n = NumericalStatistics {
                common,
                mean: if m.n == 0 { 0.0 } else { m.mean },
                sum: m.sum,
                std_dev: m.std_dev(),
                min: if m.n == 0 { 0.0 } else { m.min },
                max: if m.n == 0 { 0.0 } else { m.max },
                distribution: Some(NumericDistribution {
                    kll: KllDistribution {
                        buckets,
                        sketch: Some(KllSketch {
                            parameters: KllParameters {
                                c: self.kll.c(),
                                k: self.kll.k() as f64,
                            },
                            data: self.kll.levels().to_vec(),
                        }),
                    },
                }),
            };
            (Some(n), None)
        } else {
            let buckets = self
                .categories
                .sorted()
                .into_iter()
                .take(MAX_BUCKETS_WRITTEN)
                .map(|(value, count)| CategoricalBucket {
                    value: value.to_owned(),
                    count,
                })
                .collect();
            let s = StringStatistics {
                common,
                distinct_count: self.categories.distinct(),
                distribution: Some(StringDistribution {
                    categorical: CategoricalDistribution { buckets },
                }),
            };
            (None, Some(s))
        };
        FeatureStatistics {
            name: self.name.clone(),
            inferred_type: ty,
            numerical_statistics,
            string_statistics,
        }
    }

    /// Deequ's suggestions: completeness as observed, non-negative when the minimum is, and a
    /// domain for a string column of few values with few singletons.
    pub fn constraints(&self) -> FeatureConstraints {
        let ty = self.inferred();
        let num_constraints = (ty.is_numeric() && self.moments.n > 0).then_some(NumConstraints {
            is_non_negative: self.moments.min >= 0.0,
        });
        let cats = &self.categories;
        let singletons = cats.counts.values().filter(|&&c| c == 1).count();
        let domain = ty == InferredType::String
            && cats.overflow == 0
            && !cats.counts.is_empty()
            && cats.counts.len() <= DOMAIN_MAX_DISTINCT
            && singletons as f64 <= DOMAIN_MAX_SINGLETON_SHARE * cats.counts.len() as f64;
        let string_constraints = domain.then(|| {
            let mut domains: Vec<String> = cats.counts.keys().cloned().collect();
            domains.sort();
            StringConstraints {
                domains,
                overrides: None,
            }
        });
        FeatureConstraints {
            name: self.name.clone(),
            inferred_type: ty,
            completeness: Some(self.common().completeness()),
            num_constraints,
            string_constraints,
            overrides: None,
        }
    }
}

impl Profile {
    pub fn new(features: Vec<FeatureProfile>) -> Self {
        Self { rows: 0, features }
    }

    /// An empty profile of the model's features, typed as the model declares them.
    pub fn of_model(sig: &ModelSignature) -> Self {
        Self::new(
            sig.features
                .iter()
                .map(|f| FeatureProfile::new(&f.name, Some(declared(f.elem))))
                .collect(),
        )
    }

    /// An empty profile with the same features.
    pub fn empty_like(&self) -> Self {
        Self::new(
            self.features
                .iter()
                .map(|f| FeatureProfile::new(&f.name, f.declared))
                .collect(),
        )
    }

    pub fn merge(&mut self, o: &Profile) {
        self.rows += o.rows;
        for (a, b) in self.features.iter_mut().zip(&o.features) {
            a.merge(b);
        }
    }

    /// One CSV record, its cells in feature order (`columns[f]` is feature f's cell index;
    /// None where the data lacks the feature).
    pub fn record(&mut self, record: &csv::StringRecord, columns: &[Option<usize>]) {
        self.rows += 1;
        for (f, col) in self.features.iter_mut().zip(columns) {
            match col.and_then(|c| record.get(c)) {
                Some(cell) => f.cell(cell),
                None => f.missing += 1,
            }
        }
    }

    /// A decoded frame of the model's features (`of_model`'s profile).
    pub fn frame(&mut self, frame: &Frame, sig: &ModelSignature) {
        self.rows += frame.rows as u64;
        let mut offset = vec![0usize; sig.inputs.len()];
        for (f, feature) in self.features.iter_mut().zip(&sig.features) {
            let (Some(input), Some(column)) = (
                sig.inputs.get(feature.input),
                frame.columns.get(feature.input),
            ) else {
                continue;
            };
            let w = input.width.max(1);
            let j = offset[feature.input];
            offset[feature.input] += 1;
            let cells = (0..frame.rows).map(|r| r * w + j);
            match column {
                Column::F32(v) => cells
                    .filter_map(|i| v.get(i))
                    .for_each(|&x| f.number(x.into())),
                Column::F64(v) => cells.filter_map(|i| v.get(i)).for_each(|&x| f.number(x)),
                Column::I64(v) => cells
                    .filter_map(|i| v.get(i))
                    .for_each(|&x| f.number(x as f64)),
                Column::I32(v) => cells
                    .filter_map(|i| v.get(i))
                    .for_each(|&x| f.number(x.into())),
                Column::Bool(v) => cells
                    .filter_map(|i| v.get(i))
                    .for_each(|&x| f.number(f64::from(u8::from(x)))),
                Column::Str(v) => cells.filter_map(|i| v.get(i)).for_each(|s| f.string(s)),
            }
        }
    }

    pub fn statistics(&self) -> Statistics {
        Statistics {
            version: 0.0,
            dataset: Dataset {
                item_count: self.rows,
            },
            features: self
                .features
                .iter()
                .map(FeatureProfile::statistics)
                .collect(),
        }
    }

    pub fn constraints(&self) -> Constraints {
        Constraints {
            version: 0.0,
            features: self
                .features
                .iter()
                .map(FeatureProfile::constraints)
                .collect(),
            monitoring_config: MonitoringConfig::default(),
        }
    }
}

/// The file type of a model input's element type.
pub fn declared(elem: ElemType) -> InferredType {
    match elem {
        ElemType::Float32 | ElemType::Float64 => InferredType::Fractional,
        ElemType::Int64 | ElemType::Int32 | ElemType::Bool => InferredType::Integral,
        ElemType::String => InferredType::String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_merge_like_one_pass() {
        let xs: Vec<f64> = (0..1000)
            .map(|i| ((i * 37) % 101) as f64 * 0.5 + 1e6)
            .collect();
        let mut whole = Moments::default();
        xs.iter().for_each(|&x| whole.add(x));
        let (mut a, mut b) = (Moments::default(), Moments::default());
        xs[..300].iter().for_each(|&x| a.add(x));
        xs[300..].iter().for_each(|&x| b.add(x));
        a.merge(&b);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((a.mean - mean).abs() < 1e-6 && (whole.mean - mean).abs() < 1e-6);
        assert!((a.std_dev() - var.sqrt()).abs() < 1e-6);
        assert!((whole.std_dev() - var.sqrt()).abs() < 1e-6);
        assert_eq!((a.min, a.max, a.n), (whole.min, whole.max, whole.n));
    }

    #[test]
    fn cells_are_typed_as_deequ_types_csv_text() {
        let mut f = FeatureProfile::new("x", None);
        for c in ["1", "2", ""] {
            f.cell(c);
        }
        assert_eq!(f.inferred(), InferredType::Integral);
        f.cell("3.0");
        assert_eq!(f.inferred(), InferredType::Fractional);
        f.cell("abc");
        assert_eq!(f.inferred(), InferredType::String);
        assert_eq!((f.present(), f.missing), (4, 1));
        let mut s = FeatureProfile::new("s", Some(InferredType::String));
        s.cell("12");
        assert_eq!((s.text, s.integral), (1, 0));
    }

    #[test]
    fn domains_follow_deequs_rule() {
        let mut few = FeatureProfile::new("os", None);
        for i in 0..100 {
            few.cell(["android", "ios", "kaios"][i % 3]);
        }
        let c = few.constraints();
        assert_eq!(
            c.string_constraints.unwrap().domains,
            ["android", "ios", "kaios"]
        );
        let mut ids = FeatureProfile::new("id", None);
        for i in 0..50 {
            ids.cell(&format!("id{i}"));
        }
        assert!(ids.constraints().string_constraints.is_none());
    }
}
