//! Per-feature statistics of a data set, built from CSV records (`mlapp baseline`,
//! `mlapp monitor`) or from the frames the server decodes, and mergeable: the server keeps one
//! profile per worker and merges them when a window is read, as whylogs and Deequ do.

use std::collections::HashMap;
use std::sync::Arc;

use super::counts::{count_rows, count_rows_f32, integral, Seen};
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
/// Categories written to `statistics.json`, the most frequent first: every one counted, so a
/// check against the file knows each baseline category's share.
const MAX_BUCKETS_WRITTEN: usize = MAX_CATEGORIES;
/// Deequ's cardinality limit for suggesting a domain, and its share of singletons.
const DOMAIN_MAX_DISTINCT: usize = 120;
const DOMAIN_MAX_SINGLETON_SHARE: f64 = 0.1;

#[derive(Clone, Debug)]
pub struct Profile {
    pub rows: u64,
    pub features: Vec<FeatureProfile>,
    sampler: Sampler,
    /// Where each feature sits in a decoded frame (from the model's signature).
    placement: Option<Arc<Placement>>,
    /// Scratch for `count_rows`, kept between frames.
    seen: Vec<Seen>,
}

/// Each feature's (input, offset in a row, width) in a decoded frame, and for each input the
/// feature at each place of its rows.
#[derive(Debug)]
pub struct Placement {
    layout: Vec<(usize, usize, usize)>,
    owners: Vec<Vec<Option<usize>>>,
}

/// The number at `i` of a numeric column.
fn value_at(column: &Column, i: usize) -> Option<f64> {
    match column {
        Column::F32(v) => v.get(i).map(|&x| x.into()),
        Column::F64(v) => v.get(i).copied(),
        Column::I64(v) => v.get(i).map(|&x| x as f64),
        Column::I32(v) => v.get(i).map(|&x| x.into()),
        Column::Bool(v) => v.get(i).map(|&x| f64::from(u8::from(x))),
        Column::Str(_) => None,
    }
}

#[derive(Clone, Debug)]
pub struct FeatureProfile {
    pub name: String,
    /// The type the model declares; without a model the type is inferred from the values.
    pub declared: Option<InferredType>,
    pub missing: u64,
    /// Present values by kind: numbers with no fraction, other numbers, and text.
    /// Present numbers (every value).
    pub numbers: u64,
    /// Present numbers with no fraction and with one (every value: the type check must see
    /// a single stray value).
    pub integral: u64,
    pub fractional: u64,
    pub text: u64,
    pub moments: Moments,
    pub kll: Kll,
    pub categories: Categories,
}

/// A feature's numbers: their count, least and greatest (every value), and the weighted mean
/// and sum of squared deviations of the values the profile weighs (every value, at weight 1,
/// outside the server's busy windows), by West's weighted update, which stays exact to the
/// last bits whatever the data's level; merged with Chan et al.'s formula.
#[derive(Clone, Copy, Debug, Default)]
pub struct Moments {
    pub n: u64,
    pub min: f64,
    pub max: f64,
    weight: f64,
    sum_w: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// A value seen: counted, and its bounds kept.
    #[inline]
    fn see(&mut self, x: f64) {
        if self.n == 0 {
            self.min = x;
            self.max = x;
        }
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
        self.n += 1;
    }

    /// A value weighed, standing for `w` values.
    #[inline]
    fn weigh(&mut self, x: f64, w: f64) {
        self.weight += w;
        self.sum_w += w * x;
        let d = x - self.mean;
        self.mean += d * (w / self.weight);
        self.m2 += w * d * (x - self.mean);
    }

    #[cfg(test)]
    fn add(&mut self, x: f64) {
        self.see(x);
        self.weigh(x, 1.0);
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The sum of the values: exact when every value was weighed, else the weighed mean times
    /// the count.
    pub fn sum(&self) -> f64 {
        if self.weight == self.n as f64 {
            self.sum_w
        } else {
            self.mean * self.n as f64
        }
    }

    fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.n += o.n;
        if o.weight == 0.0 {
            return;
        }
        if self.weight == 0.0 {
            (self.weight, self.sum_w, self.mean, self.m2) = (o.weight, o.sum_w, o.mean, o.m2);
            return;
        }
        let (wa, wb) = (self.weight, o.weight);
        let w = wa + wb;
        let d = o.mean - self.mean;
        self.m2 += o.m2 + d * d * wa * wb / w;
        self.mean += d * wb / w;
        self.weight = w;
        self.sum_w += o.sum_w;
    }

    /// The population standard deviation, as Deequ's `StandardDeviation` computes it.
    pub fn std_dev(&self) -> f64 {
        if self.weight == 0.0 {
            0.0
        } else {
            (self.m2.max(0.0) / self.weight).sqrt()
        }
    }
}

/// Which rows go into the distribution sketches. Every value is counted (missing, types,
/// moments); a window's first rows are also sketched one by one, and past them a random one
/// in `2^level`, entered with weight `2^level` so the sketch stays unbiased: sketching every
/// value of a busy server would cost more than scoring it.
#[derive(Clone, Debug)]
pub struct Sampler {
    exact: u64,
    left: u64,
    level: usize,
    rng: u64,
}

impl Sampler {
    /// Every row, at weight 1 (`mlapp baseline`, `mlapp monitor`).
    pub fn every_row() -> Self {
        Self::after(u64::MAX, 0)
    }

    pub fn after(exact: u64, level: usize) -> Self {
        Self {
            exact,
            left: exact,
            level: level.min(16),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A fresh sampler with the same rule, for the next window.
    fn fresh(&self) -> Self {
        Self::after(self.exact, self.level)
    }

    /// Sketch every row from now on (`true`), or sample (`false`), with a new seed: the
    /// server decides by its window's row count, which no one shard knows.
    pub fn set_exact(&mut self, exact: bool, seed: u64) {
        self.left = if exact { u64::MAX } else { 0 };
        self.rng = seed | 1;
    }

    /// The level a row is sketched at, or None when it is not sketched.
    #[inline]
    fn pick(&mut self) -> Option<usize> {
        if self.left > 0 {
            self.left -= 1;
            return Some(0);
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mask = (1u64 << self.level) - 1;
        (self.rng & mask == 0).then_some(self.level)
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
            numbers: 0,
            integral: 0,
            fractional: 0,
            text: 0,
            moments: Moments::default(),
            kll: Kll::new(),
            categories: Categories::default(),
        }
    }

    pub fn present(&self) -> u64 {
        self.numbers + self.text
    }

    /// The share of present numbers with no fraction (1 when none was weighed).
    pub fn integral_share(&self) -> f64 {
        let typed = self.integral + self.fractional;
        if typed > 0 {
            self.integral as f64 / typed as f64
        } else {
            1.0
        }
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

    /// A number seen: counted and typed (`fraction`: whether it has one), or missing when NaN.
    #[inline]
    pub(super) fn see(&mut self, x: f64, fraction: bool) {
        if x.is_nan() {
            self.missing += 1;
            return;
        }
        self.numbers += 1;
        if fraction {
            self.fractional += 1;
        } else {
            self.integral += 1;
        }
        if x.is_finite() {
            self.moments.see(x);
        }
    }

    /// A seen number also weighed and sketched at `level` (standing for 2^level values).
    #[inline]
    fn weigh(&mut self, x: f64, level: usize) {
        if x.is_finite() {
            self.moments.weigh(x, (1u64 << level.min(30)) as f64);
            self.kll.update_at(x, level);
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
        self.cell_at(text, Some(0));
    }

    /// A CSV cell, entering the sketch at `sketch`'s level when given.
    pub fn cell_at(&mut self, text: &str, sketch: Option<usize>) {
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
                let dotted = t.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
                self.see(x, dotted || !integral(x));
                if let Some(level) = sketch {
                    self.weigh(x, level);
                }
            }
            _ => self.string(t),
        }
    }

    pub fn merge(&mut self, o: &FeatureProfile) {
        self.missing += o.missing;
        self.numbers += o.numbers;
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
                mean: m.mean(),
                sum: m.sum(),
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
    /// A profile that sketches every row (`mlapp baseline`, `mlapp monitor`).
    pub fn new(features: Vec<FeatureProfile>) -> Self {
        Self {
            rows: 0,
            features,
            sampler: Sampler::every_row(),
            placement: None,
            seen: Vec::new(),
        }
    }

    pub fn sampler_mut(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    /// The same profile, sketching by `sampler`'s rule.
    pub fn sampled(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// An empty profile of the model's features, typed as the model declares them.
    pub fn of_model(sig: &ModelSignature) -> Self {
        let mut p = Self::new(
            sig.features
                .iter()
                .map(|f| FeatureProfile::new(&f.name, Some(declared(f.elem))))
                .collect(),
        );
        p.placement = Some(Arc::new(placement(sig)));
        p
    }

    /// An empty profile with the same features and sampling rule.
    pub fn empty_like(&self) -> Self {
        Self {
            rows: 0,
            features: self
                .features
                .iter()
                .map(|f| FeatureProfile::new(&f.name, f.declared))
                .collect(),
            sampler: self.sampler.fresh(),
            placement: self.placement.clone(),
            seen: Vec::new(),
        }
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
        let sketch = self.sampler.pick();
        for (f, col) in self.features.iter_mut().zip(columns) {
            match col.and_then(|c| record.get(c)) {
                Some(cell) => f.cell_at(cell, sketch),
                None => f.missing += 1,
            }
        }
    }

    /// A decoded frame of the model's features (`of_model`'s profile). Column by column:
    /// every value counted, the sampled rows sketched.
    pub fn frame(&mut self, frame: &Frame, sig: &ModelSignature) {
        self.rows += frame.rows as u64;
        let computed;
        let Placement { layout, owners } = match &self.placement {
            Some(p) if p.layout.len() == self.features.len() => &**p,
            _ => {
                computed = placement(sig);
                &computed
            }
        };
        // The rows to sketch; on the stack for the small frames of online requests.
        let mut few = [(0usize, 0usize); 16];
        let many: Vec<(usize, usize)>;
        let picks: &[(usize, usize)] = if frame.rows <= few.len() {
            let mut k = 0;
            for r in 0..frame.rows {
                if let Some(level) = self.sampler.pick() {
                    few[k] = (r, level);
                    k += 1;
                }
            }
            &few[..k]
        } else {
            many = (0..frame.rows)
                .filter_map(|r| self.sampler.pick().map(|level| (r, level)))
                .collect();
            &many
        };
        let rows = frame.rows;
        for (input, column) in frame.columns.iter().enumerate() {
            let Some(owners) = owners.get(input).filter(|o| !o.is_empty()) else {
                continue;
            };
            let (features, seen) = (&mut self.features, &mut self.seen);
            match column {
                Column::F32(v) => count_rows_f32(features, owners, seen, v, rows),
                Column::F64(v) => count_rows(features, owners, seen, v, rows, |x| x),
                Column::I64(v) => count_rows(features, owners, seen, v, rows, |x| x as f64),
                Column::I32(v) => count_rows(features, owners, seen, v, rows, |x| x.into()),
                Column::Bool(v) => {
                    count_rows(features, owners, seen, v, rows, |x| f64::from(u8::from(x)))
                }
                Column::Str(v) => {
                    let w = owners.len().max(1);
                    for row in v.chunks_exact(w).take(rows) {
                        for (s, owner) in row.iter().zip(owners) {
                            if let Some(f) = owner.and_then(|o| features.get_mut(o)) {
                                f.string(s);
                            }
                        }
                    }
                }
            }
        }
        for (f, &(input, j, w)) in self.features.iter_mut().zip(layout) {
            let Some(column) = frame.columns.get(input) else {
                continue;
            };
            for &(r, level) in picks {
                if let Some(x) = value_at(column, r * w + j) {
                    f.weigh(x, level);
                }
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

/// Where each feature of `sig` sits in the frames decoded for it.
fn placement(sig: &ModelSignature) -> Placement {
    let mut owners: Vec<Vec<Option<usize>>> = sig
        .inputs
        .iter()
        .map(|i| vec![None; i.width.max(1)])
        .collect();
    let mut next = vec![0usize; sig.inputs.len()];
    let layout = sig
        .features
        .iter()
        .enumerate()
        .map(|(f, feature)| {
            let w = sig.inputs.get(feature.input).map_or(1, |i| i.width.max(1));
            let j = next.get_mut(feature.input).map_or(0, |o| {
                *o += 1;
                *o - 1
            });
            if let Some(o) = owners.get_mut(feature.input).and_then(|o| o.get_mut(j)) {
                *o = Some(f);
            }
            (feature.input, j, w)
        })
        .collect();
    Placement { layout, owners }
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
        assert!((a.mean() - mean).abs() < 1e-6 && (whole.mean() - mean).abs() < 1e-6);
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

    /// A sampled profile counts every value but sketches a weighted sample: its quantiles
    /// stay unbiased, and `observed` is the sample's size (what a test's margin needs).
    #[test]
    fn a_sampled_sketch_is_unbiased_and_knows_its_sample_size() {
        let n = 200_000u64;
        let mut p =
            Profile::new(vec![FeatureProfile::new("x", None)]).sampled(Sampler::after(1000, 4));
        let mut rec = csv::StringRecord::new();
        for i in 0..n {
            rec.clear();
            // Early rows are small, late ones large: an unweighted exact head would skew
            // the quantiles down.
            rec.push_field(&((i * 7919) % n + i / 1000).to_string());
            p.record(&rec, &[Some(0)]);
        }
        let f = &p.features[0];
        assert_eq!(f.moments.n, n);
        let observed = f.kll.observed();
        let expected = 1000 + (n - 1000) / 16;
        assert!(
            observed.abs_diff(expected) < expected / 20,
            "{observed} vs {expected}"
        );
        let mut xs: Vec<f64> = (0..n).map(|i| ((i * 7919) % n + i / 1000) as f64).collect();
        xs.sort_by(f64::total_cmp);
        for q in [0.1, 0.25, 0.5, 0.75, 0.9] {
            let got = f.kll.quantile(q).unwrap();
            let rank = xs.partition_point(|v| *v <= got) as f64 / n as f64;
            assert!((rank - q).abs() < 0.02, "q{q}: {got} has rank {rank}");
        }
        assert!((f.kll.count() as f64 - n as f64).abs() < 0.05 * n as f64);
        // Kish's effective size of 1,000 values at weight 1 and the rest at weight 16.
        let sampled = (observed - 1000) as f64;
        let kish = (1000.0 + 16.0 * sampled).powi(2) / (1000.0 + 256.0 * sampled);
        assert!((f.kll.effective_n() - kish).abs() < 1e-6 * kish);
        // Counts and bounds are exact; mean and spread are estimated from the weighed sample.
        assert_eq!((f.moments.min, f.moments.max), (xs[0], xs[xs.len() - 1]));
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!(
            (f.moments.mean() - mean).abs() < 0.02 * mean,
            "{} vs {mean}",
            f.moments.mean()
        );
        assert!((f.moments.std_dev() - sd).abs() < 0.02 * sd);
        assert!((f.moments.sum() - mean * n as f64).abs() < 0.02 * mean * n as f64);
    }

    /// A sentinel far from the rest does not cost the spread its precision.
    #[test]
    fn moments_keep_precision_far_from_the_first_value() {
        let mut m = Moments::default();
        m.add(0.0);
        let xs: Vec<f64> = (0..10_000).map(|i| 1e8 + (i % 3) as f64).collect();
        xs.iter().for_each(|&x| m.add(x));
        let all: Vec<f64> = std::iter::once(0.0).chain(xs).collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / all.len() as f64;
        assert!(
            (m.std_dev() - var.sqrt()).abs() < 1e-6 * var.sqrt(),
            "{} vs {}",
            m.std_dev(),
            var.sqrt()
        );
    }
}
