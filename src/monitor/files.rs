//! Model Monitor's files: `statistics.json`, `constraints.json` and
//! `constraint_violations.json` (../shared/reference/monitoring-formats.md §2).
//!
//! Written in the layout the Model Monitor container writes, and read leniently: files from
//! SageMaker carry legacy and camelCase keys, so unknown keys are ignored and every field that
//! a real file may lack has a default.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::sketch::{KLL_C, KLL_K};

/// The number of buckets Model Monitor materializes ("not currently configurable").
pub const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InferredType {
    Integral,
    Fractional,
    String,
    Unknown,
}

impl InferredType {
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Integral | Self::Fractional)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Statistics {
    #[serde(default)]
    pub version: f64,
    pub dataset: Dataset,
    pub features: Vec<FeatureStatistics>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dataset {
    pub item_count: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureStatistics {
    pub name: String,
    pub inferred_type: InferredType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerical_statistics: Option<NumericalStatistics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_statistics: Option<StringStatistics>,
}

impl FeatureStatistics {
    pub fn common(&self) -> Common {
        match (&self.numerical_statistics, &self.string_statistics) {
            (Some(n), _) => n.common,
            (None, Some(s)) => s.common,
            (None, None) => Common::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Common {
    pub num_present: u64,
    pub num_missing: u64,
}

impl Common {
    /// The non-missing share; 1 for an empty data set (nothing was missing).
    pub fn completeness(&self) -> f64 {
        let n = self.num_present + self.num_missing;
        if n == 0 {
            1.0
        } else {
            self.num_present as f64 / n as f64
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NumericalStatistics {
    pub common: Common,
    #[serde(default)]
    pub mean: f64,
    #[serde(default)]
    pub sum: f64,
    #[serde(default)]
    pub std_dev: f64,
    #[serde(default)]
    pub min: f64,
    #[serde(default)]
    pub max: f64,
    #[serde(default)]
    pub distribution: Option<NumericDistribution>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NumericDistribution {
    pub kll: KllDistribution,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KllDistribution {
    #[serde(default)]
    pub buckets: Vec<NumericBucket>,
    #[serde(default)]
    pub sketch: Option<KllSketch>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NumericBucket {
    pub lower_bound: f64,
    pub upper_bound: f64,
    pub count: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KllSketch {
    pub parameters: KllParameters,
    pub data: Vec<Vec<f64>>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct KllParameters {
    pub c: f64,
    pub k: f64,
}

impl Default for KllParameters {
    fn default() -> Self {
        Self {
            c: KLL_C,
            k: KLL_K as f64,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StringStatistics {
    pub common: Common,
    #[serde(default)]
    pub distinct_count: f64,
    #[serde(default)]
    pub distribution: Option<StringDistribution>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StringDistribution {
    pub categorical: CategoricalDistribution,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CategoricalDistribution {
    #[serde(default)]
    pub buckets: Vec<CategoricalBucket>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CategoricalBucket {
    pub value: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Constraints {
    #[serde(default)]
    pub version: f64,
    pub features: Vec<FeatureConstraints>,
    #[serde(default)]
    pub monitoring_config: MonitoringConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureConstraints {
    pub name: String,
    pub inferred_type: InferredType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completeness: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_constraints: Option<NumConstraints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_constraints: Option<StringConstraints>,
    /// The docs spell it in camelCase; the SDK writes snake_case: both are read.
    #[serde(
        default,
        rename = "monitoringConfigOverrides",
        alias = "monitoring_config_overrides",
        skip_serializing_if = "Option::is_none"
    )]
    pub overrides: Option<Overrides>,
}

impl FeatureConstraints {
    /// Whether this feature's checks run: the feature's override, else the string
    /// constraints' override, else the file's setting.
    pub fn evaluated(&self, config: &MonitoringConfig) -> bool {
        let own = self
            .overrides
            .as_ref()
            .and_then(|o| o.evaluate_constraints.as_deref());
        let strings = self
            .string_constraints
            .as_ref()
            .and_then(|s| s.overrides.as_ref())
            .and_then(|o| o.evaluate_constraints.as_deref());
        enabled(own.or(strings).unwrap_or(&config.evaluate_constraints))
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct NumConstraints {
    pub is_non_negative: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StringConstraints {
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(
        default,
        rename = "monitoring_config_overrides",
        alias = "monitoringConfigOverrides",
        skip_serializing_if = "Option::is_none"
    )]
    pub overrides: Option<Overrides>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluate_constraints: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_metrics: Option<String>,
}

/// The explicit configuration every file mlapp writes carries, with the values the Model
/// Monitor container writes (1.0 / 1.0 / 0.1 / Robust), so the docs' conflicting defaults
/// never matter.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringConfig {
    pub evaluate_constraints: String,
    pub emit_metrics: String,
    pub datatype_check_threshold: f64,
    pub domain_content_threshold: f64,
    pub distribution_constraints: DistributionConstraints,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            evaluate_constraints: "Enabled".into(),
            emit_metrics: "Enabled".into(),
            datatype_check_threshold: 1.0,
            domain_content_threshold: 1.0,
            distribution_constraints: DistributionConstraints::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct DistributionConstraints {
    pub perform_comparison: String,
    pub comparison_threshold: f64,
    pub comparison_method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categorical_comparison_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categorical_drift_method: Option<String>,
}

impl Default for DistributionConstraints {
    fn default() -> Self {
        Self {
            perform_comparison: "Enabled".into(),
            comparison_threshold: 0.1,
            comparison_method: "Robust".into(),
            categorical_comparison_threshold: Some(0.1),
            categorical_drift_method: Some("LInfinity".into()),
        }
    }
}

impl DistributionConstraints {
    pub fn categorical_threshold(&self) -> f64 {
        self.categorical_comparison_threshold
            .unwrap_or(self.comparison_threshold)
    }

    pub fn robust(&self) -> bool {
        !self.comparison_method.eq_ignore_ascii_case("simple")
    }
}

pub fn enabled(setting: &str) -> bool {
    !setting.eq_ignore_ascii_case("disabled")
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Violations {
    pub violations: Vec<Violation>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub feature_name: String,
    pub constraint_check_type: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a Model Monitor {what}: {source}")]
    Json {
        path: String,
        what: &'static str,
        source: serde_json::Error,
    },
}

pub fn read<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, FileError> {
    let text = std::fs::read(path).map_err(|source| FileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| FileError::Json {
        path: path.display().to_string(),
        what,
        source,
    })
}

/// Writes JSON next to its final name and renames it, so a reader never sees half a file.
/// Statistics are written compact: their sketches hold thousands of numbers each.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    write_as(path, value, true)
}

pub fn write_compact<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    write_as(path, value, false)
}

fn write_as<T: Serialize>(path: &Path, value: &T, pretty: bool) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SDK:tests/data/monitor/constraints.json's shape: legacy keys, snake_case overrides
    /// inside string constraints, no monitoring_config fields we write.
    #[test]
    fn reads_sagemaker_files_with_legacy_and_unknown_keys() {
        let text = r#"{"version": 0.0, "features": [{"name": "message", "inferred_type": "String",
            "completeness": 1.0, "string_constraints": {"domains": ["a"],
            "monitoring_config_overrides": {"evaluate_constraints": "Disabled", "emit_metrics": "Enabled"}}}],
            "monitoring_config": {"evaluate_constraints": "Enabled", "emit_metrics": "Enabled",
            "distribution_constraints": {"enable_comparisons": true, "min_domain_mass": 1.0,
            "comparison_threshold": 1.0}}}"#;
        let c: Constraints = serde_json::from_str(text).unwrap();
        assert_eq!(
            c.features[0].string_constraints.as_ref().unwrap().domains,
            ["a"]
        );
        assert!(!c.features[0].evaluated(&c.monitoring_config));
        assert_eq!(
            c.monitoring_config
                .distribution_constraints
                .comparison_threshold,
            1.0
        );
        assert!(c.monitoring_config.distribution_constraints.robust());
        let camel = r#"{"name": "x", "inferred_type": "Integral", "monitoringConfigOverrides": {"evaluate_constraints": "Disabled"}}"#;
        let f: FeatureConstraints = serde_json::from_str(camel).unwrap();
        assert!(!f.evaluated(&MonitoringConfig::default()));
    }

    /// A real container statistics excerpt (Jackson spacing) reads, sketch included.
    #[test]
    fn reads_container_statistics() {
        let text = r#"{ "version" : 0.0, "dataset" : { "item_count" : 3 }, "features" : [ {
            "name" : "_c0", "inferred_type" : "Fractional", "numerical_statistics" : {
            "common" : { "num_present" : 3, "num_missing" : 0 }, "mean" : 2.0, "sum" : 6.0,
            "std_dev" : 0.8, "min" : 1.0, "max" : 3.0, "distribution" : { "kll" : {
            "buckets" : [ { "lower_bound" : 1.0, "upper_bound" : 3.0, "count" : 3.0 } ],
            "sketch" : { "parameters" : { "c" : 0.64, "k" : 2048.0 }, "data" : [ [ 3.0, 1.0, 2.0 ] ] } } } } } ] }"#;
        let s: Statistics = serde_json::from_str(text).unwrap();
        let n = s.features[0].numerical_statistics.as_ref().unwrap();
        assert_eq!(n.common.num_present, 3);
        let sketch = n
            .distribution
            .as_ref()
            .unwrap()
            .kll
            .sketch
            .as_ref()
            .unwrap();
        assert_eq!(sketch.data, vec![vec![3.0, 1.0, 2.0]]);
        assert_eq!(sketch.parameters.k, 2048.0);
    }
}
