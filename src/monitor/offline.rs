//! `mlapp baseline` (statistics and suggested constraints of training data) and
//! `mlapp monitor` (a data set or captured traffic checked against a baseline, with a report).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::captured_v2;
use super::check::{self, Baseline, Columns};
use super::files::{self, InferredType};
use super::profile::{FeatureProfile, Profile};
use crate::portal::results::{Histogram, Tally, BINS};
use crate::storage::{Listing, S3Options, S3Store, S3Uri};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    File(#[from] files::FileError),
    #[error("{0}")]
    Setup(#[from] super::setup::SetupError),
}

fn input_err(path: &Path, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Input(format!("{}: {e}", path.display()))
}

/// The files of an input: a file, the data files under a folder, or an S3 object or prefix
/// downloaded to `scratch`.
pub fn input_files(
    uri: &str,
    s3: &S3Options,
    scratch: &Path,
) -> Result<Vec<PathBuf>, OfflineError> {
    let mut out = Vec::new();
    if let Some(parsed) = S3Uri::parse(uri) {
        let parsed = parsed.map_err(|e| OfflineError::Input(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OfflineError::Input(format!("cannot start a runtime: {e}")))?;
        rt.block_on(async {
            let store = S3Store::connect(s3).await;
            let listing = store
                .object_or_prefix(&parsed)
                .await
                .map_err(|e| OfflineError::Input(format!("{uri}: {e}")))?;
            let keys: Vec<String> = match listing {
                Listing::Object(o) => vec![o.key],
                Listing::Prefix { objects, .. } => objects.into_iter().map(|o| o.key).collect(),
            };
            for (i, key) in keys.iter().enumerate() {
                let name = key.rsplit('/').next().unwrap_or("object");
                let dest = scratch.join(format!("{i:06}-{name}"));
                let from = S3Uri {
                    bucket: parsed.bucket.clone(),
                    key: key.clone(),
                };
                store
                    .download(&from, &dest)
                    .await
                    .map_err(|e| OfflineError::Input(format!("{from}: {e}")))?;
                out.push(dest);
            }
            Ok::<(), OfflineError>(())
        })?;
    } else {
        let path = PathBuf::from(uri);
        if path.is_dir() {
            for e in walkdir::WalkDir::new(&path).sort_by_file_name() {
                let e = e.map_err(|e| input_err(&path, e))?;
                let name = e.file_name().to_string_lossy();
                if e.file_type().is_file() && !name.starts_with('.') {
                    out.push(e.into_path());
                }
            }
        } else if path.is_file() {
            out.push(path);
        } else {
            return Err(input_err(&path, "no such file or folder"));
        }
    }
    out.retain(|p| {
        p.extension()
            .is_some_and(|e| e == "csv" || e == "jsonl" || e == "json")
            || p.extension().is_none()
    });
    if out.is_empty() {
        return Err(OfflineError::Input(format!(
            "{uri}: no .csv or .jsonl files to read"
        )));
    }
    Ok(out)
}

/// How a CSV's columns map to the profile's features.
pub struct Layout {
    pub header: bool,
    /// Feature names when known (a model or a baseline); None: from the header, else `_c0`...
    pub names: Option<Vec<String>>,
    pub types: Option<Vec<InferredType>>,
}

/// The profile of CSV files, and the column checks' findings. Each file's columns are
/// matched by its own header (files of one data set may order them differently).
pub fn profile_csv(files: &[PathBuf], layout: &Layout) -> Result<(Profile, Columns), OfflineError> {
    let first = files
        .first()
        .ok_or_else(|| OfflineError::Input("no input files".into()))?;
    let names: Vec<String> = match &layout.names {
        Some(n) => n.clone(),
        None => match header_of(first, layout.header)? {
            Some(h) => h.iter().map(str::to_string).collect(),
            None => (0..first_width(first)?).map(|i| format!("_c{i}")).collect(),
        },
    };
    let types = layout.types.clone();
    let empty = Profile::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| FeatureProfile::new(n, types.as_ref().and_then(|t| t.get(i).copied())))
            .collect(),
    );
    let mut whole = empty.empty_like();
    let mut columns = Columns::default();
    for (k, file) in files.iter().enumerate() {
        let (index, found) = match_columns(file, layout.header, &names)?;
        if k == 0 {
            columns.count = found.count;
        }
        for n in found.missing {
            if !columns.missing.contains(&n) {
                columns.missing.push(n);
            }
        }
        for n in found.extra {
            if !columns.extra.contains(&n) {
                columns.extra.push(n);
            }
        }
        let parts = split_ranges(file, layout.header)?;
        let profiles: Vec<Result<Profile, OfflineError>> = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .map(|&(start, end)| {
                    let mut p = empty.empty_like();
                    let index = &index;
                    s.spawn(move || {
                        read_range(file, start, end, index, &mut p)?;
                        Ok(p)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(input_err(file, "a reader thread panicked")))
                })
                .collect()
        });
        for p in profiles {
            whole.merge(&p?);
        }
    }
    Ok((whole, columns))
}

fn header_of(file: &Path, header: bool) -> Result<Option<csv::StringRecord>, OfflineError> {
    if !header {
        return Ok(None);
    }
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(file)
        .map_err(|e| input_err(file, e))?;
    Ok(Some(r.headers().map_err(|e| input_err(file, e))?.clone()))
}

/// Which cell of `file`'s records holds each feature, and which columns are missing or extra.
fn match_columns(
    file: &Path,
    header: bool,
    names: &[String],
) -> Result<(Vec<Option<usize>>, Columns), OfflineError> {
    let mut columns = Columns::default();
    let index = match header_of(file, header)? {
        Some(h) => {
            columns.count = h.len();
            let at: HashMap<&str, usize> = h.iter().enumerate().map(|(i, n)| (n, i)).collect();
            let index: Vec<Option<usize>> =
                names.iter().map(|n| at.get(n.as_str()).copied()).collect();
            columns.missing = names
                .iter()
                .zip(&index)
                .filter(|(_, i)| i.is_none())
                .map(|(n, _)| n.clone())
                .collect();
            columns.extra = h
                .iter()
                .filter(|c| !names.iter().any(|n| n == c))
                .map(str::to_string)
                .collect();
            index
        }
        None => {
            let width = first_width(file)?;
            columns.count = width;
            columns.missing = names.iter().skip(width).cloned().collect();
            columns.extra = (names.len()..width).map(|i| format!("_c{i}")).collect();
            (0..names.len()).map(|i| (i < width).then_some(i)).collect()
        }
    };
    Ok((index, columns))
}

fn first_width(file: &Path) -> Result<usize, OfflineError> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(file)
        .map_err(|e| input_err(file, e))?;
    let mut rec = csv::StringRecord::new();
    r.read_record(&mut rec).map_err(|e| input_err(file, e))?;
    Ok(rec.len())
}

/// Byte ranges of a CSV file, one per thread, cut at line ends (records are taken to have
/// no quoted newlines, as Batch Transform's line split does).
fn split_ranges(file: &Path, header: bool) -> Result<Vec<(u64, u64)>, OfflineError> {
    let len = std::fs::metadata(file)
        .map_err(|e| input_err(file, e))?
        .len();
    let mut f = BufReader::new(std::fs::File::open(file).map_err(|e| input_err(file, e))?);
    let mut line = Vec::new();
    let start = if header {
        f.read_until(b'\n', &mut line)
            .map_err(|e| input_err(file, e))? as u64
    } else {
        0
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let parts = if len.saturating_sub(start) < (4 << 20) {
        1
    } else {
        threads
    };
    let mut cuts = vec![start];
    for i in 1..parts {
        let at = start + len.saturating_sub(start) * i as u64 / parts as u64;
        f.seek(SeekFrom::Start(at))
            .map_err(|e| input_err(file, e))?;
        line.clear();
        let skipped = f
            .read_until(b'\n', &mut line)
            .map_err(|e| input_err(file, e))? as u64;
        let cut = (at + skipped).min(len);
        if cut > *cuts.last().unwrap_or(&0) {
            cuts.push(cut);
        }
    }
    cuts.push(len);
    cuts.dedup();
    Ok(cuts.windows(2).map(|w| (w[0], w[1])).collect())
}

fn read_range(
    file: &Path,
    start: u64,
    end: u64,
    index: &[Option<usize>],
    p: &mut Profile,
) -> Result<(), OfflineError> {
    let mut f = std::fs::File::open(file).map_err(|e| input_err(file, e))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| input_err(file, e))?;
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, f.take(end - start)));
    let mut rec = csv::StringRecord::new();
    loop {
        match r.read_record(&mut rec) {
            Ok(true) => p.record(&rec, index),
            Ok(false) => return Ok(()),
            Err(e) => {
                let line = e.position().map_or(0, |pos| pos.line());
                return Err(input_err(
                    file,
                    format!("bytes {start}..{end}, line {line} of that range: {e}"),
                ));
            }
        }
    }
}

/// `mlapp baseline`: the training data's `statistics.json` and suggested `constraints.json`.
pub fn baseline(
    files: &[PathBuf],
    layout: &Layout,
    output: &Path,
) -> Result<Profile, OfflineError> {
    let (profile, columns) = profile_csv(files, layout)?;
    if !columns.missing.is_empty() {
        return Err(OfflineError::Input(format!(
            "the data has no column for feature(s) {}: a baseline needs every feature",
            columns.missing.join(", ")
        )));
    }
    if !columns.extra.is_empty() {
        log::info!(
            "columns not among the model's features, left out: {}",
            columns.extra.join(", ")
        );
    }
    std::fs::create_dir_all(output).map_err(|e| input_err(output, e))?;
    files::write_compact(&output.join("statistics.json"), &profile.statistics())?;
    files::write(&output.join("constraints.json"), &profile.constraints())?;
    Ok(profile)
}

/// What `mlapp monitor` read: the features' profile, the column findings, and the captured
/// answers' predictions.
pub struct Current {
    pub profile: Profile,
    pub columns: Columns,
    pub predictions: Option<Tally>,
    pub records: u64,
}

/// Reads captured traffic (Data Capture JSONL, ours or SageMaker's) or plain CSV.
pub fn current(
    files: &[PathBuf],
    baseline: &Baseline,
    header: bool,
) -> Result<Current, OfflineError> {
    let captures: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .cloned()
        .collect();
    if captures.is_empty() {
        let layout = Layout {
            header,
            names: Some(baseline.feature_names()),
            types: Some(
                baseline
                    .constraints
                    .features
                    .iter()
                    .map(|f| f.inferred_type)
                    .collect(),
            ),
        };
        let (profile, columns) = profile_csv(files, &layout)?;
        return Ok(Current {
            records: profile.rows,
            profile,
            columns,
            predictions: None,
        });
    }
    let mut profile = baseline.profile();
    let width = profile.features.len();
    let index: Vec<Option<usize>> = (0..width).map(Some).collect();
    let mut tally = Tally::default();
    let features: Vec<String> = profile.features.iter().map(|f| f.name.clone()).collect();
    let mut records = 0;
    let mut widest = 0;
    for file in &captures {
        let f = std::fs::File::open(file).map_err(|e| input_err(file, e))?;
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| input_err(file, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let at = |e: String| input_err(file, format!("line {}: {e}", n + 1));
            let v: Value = serde_json::from_str(&line).map_err(|e| at(e.to_string()))?;
            records += 1;
            let data = &v["captureData"];
            if let Some((ty, body)) = payload(&data["endpointInput"]).map_err(&at)? {
                let rows = match captured_v2::header(&ty, &body, "inputs") {
                    Some(header_len) => captured_v2::input_rows(&body, header_len, &features)
                        .map_err(|e| at(format!("captured V2 request: {e}")))?
                        .into_iter()
                        .map(csv::StringRecord::from)
                        .collect(),
                    None => input_rows(&ty, &text(body).map_err(&at)?, &profile).map_err(&at)?,
                };
                for row in rows {
                    widest = widest.max(row.len());
                    profile.record(&row, &index);
                }
            }
            if let Some((ty, body)) = payload(&data["endpointOutput"]).map_err(&at)? {
                match captured_v2::header(&ty, &body, "outputs") {
                    Some(header_len) => {
                        let answered = captured_v2::answers(&body, header_len)
                            .map_err(|e| at(format!("captured V2 answer: {e}")))?;
                        for (label, score, value) in answered {
                            tally_row(&mut tally, label, score, value);
                        }
                    }
                    None => add_output(&mut tally, &ty, &text(body).map_err(&at)?),
                }
            }
        }
    }
    let names = baseline.feature_names();
    let columns = Columns {
        count: widest,
        missing: names.iter().skip(widest).cloned().collect(),
        extra: (names.len()..widest).map(|i| format!("_c{i}")).collect(),
    };
    Ok(Current {
        profile,
        columns,
        predictions: (tally.rows > 0).then_some(tally),
        records,
    })
}

/// A captured payload as (media type, bytes); None when the direction was not captured.
fn payload(p: &Value) -> Result<Option<(String, Vec<u8>)>, String> {
    let Some(data) = p.get("data").and_then(Value::as_str) else {
        return Ok(None);
    };
    let ty = p["observedContentType"].as_str().unwrap_or("").to_string();
    let bytes = match p["encoding"].as_str().unwrap_or("CSV") {
        "BASE64" => base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("data is not base64: {e}"))?,
        _ => data.as_bytes().to_vec(),
    };
    Ok(Some((ty, bytes)))
}

fn text(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "base64 data is not UTF-8 text".to_string())
}

fn is_json(ty: &str, text: &str) -> bool {
    ty.contains("json") || text.trim_start().starts_with(['{', '['])
}

/// Rows of a captured input: CSV lines, or JSON (`instances`/`inputs` of lists or objects,
/// a bare list of rows, or JSON Lines), cells as text in the baseline's feature order.
fn input_rows(ty: &str, text: &str, profile: &Profile) -> Result<Vec<csv::StringRecord>, String> {
    if !is_json(ty, text) {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        return r
            .records()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("captured CSV: {e}"));
    }
    let docs: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(v) => vec![v],
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("captured JSON: {e}"))?,
    };
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut rows = Vec::new();
    for doc in docs {
        let list = match &doc {
            Value::Object(o) if columnar(o) => Value::Array(transpose(o)),
            Value::Object(o) => o
                .get("instances")
                .or_else(|| o.get("inputs"))
                .cloned()
                .unwrap_or_else(|| Value::Array(vec![doc.clone()])),
            Value::Array(_) => doc.clone(),
            _ => return Err("captured JSON is neither an object nor a list".into()),
        };
        let items = match list {
            // A list of plain values is one row, not one row per value.
            Value::Array(a) if a.iter().all(|v| !v.is_array() && !v.is_object()) => {
                vec![Value::Array(a)]
            }
            Value::Array(a) => a,
            other => vec![other],
        };
        for item in items {
            let row: Vec<String> = match &item {
                Value::Array(cells) => cells.iter().map(cell).collect(),
                Value::Object(o) => {
                    let o = o.get("features").and_then(Value::as_object).unwrap_or(o);
                    profile
                        .features
                        .iter()
                        .map(|f| o.get(&f.name).map(cell).unwrap_or_default())
                        .collect()
                }
                other => vec![cell(other)],
            };
            rows.push(csv::StringRecord::from(row));
        }
    }
    Ok(rows)
}

/// `{"feature": [v1, v2, ...], ...}`: one list per feature, all as long (SageMaker users send
/// this; a real capture record in the reference notes has it).
fn columnar(o: &serde_json::Map<String, Value>) -> bool {
    let mut lens = o.values().map(|v| v.as_array().map(Vec::len));
    match lens.next() {
        Some(Some(n)) => lens.all(|l| l == Some(n)),
        _ => false,
    }
}

/// A columnar object's rows, as objects keyed by feature.
fn transpose(o: &serde_json::Map<String, Value>) -> Vec<Value> {
    let n = o
        .values()
        .next()
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), v.get(i).cloned().unwrap_or(Value::Null)))
                    .collect(),
            )
        })
        .collect()
}

/// Counts one answered row: its label, the second class's probability, or a regressor's value.
fn tally_row(tally: &mut Tally, label: Option<String>, score: Option<f64>, value: Option<f64>) {
    tally.rows += 1;
    if let Some(l) = label {
        *tally.labels.entry(l).or_insert(0) += 1;
    }
    if let Some(s) = score.filter(|s| s.is_finite()) {
        let h = tally.score.get_or_insert_with(|| Histogram {
            score_of: "second class".into(),
            bins: vec![0; BINS],
        });
        let bin = ((s.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        if let Some(b) = h.bins.get_mut(bin) {
            *b += 1;
        }
    }
    if let Some(x) = value {
        tally.add_value(x);
    }
}

/// Adds a captured answer's predictions: classifier CSV lines `label,p0,p1,...` or JSON
/// `{"label", "probabilities"}` entries; a single number per row (or `{"value"}`) is a
/// regressor's value.
fn add_output(tally: &mut Tally, ty: &str, text: &str) {
    let mut add = |label, score, value| tally_row(tally, label, score, value);
    if is_json(ty, text) {
        let docs: Vec<Value> = serde_json::from_str::<Value>(text).map_or_else(
            |_| {
                text.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            },
            |v| vec![v],
        );
        for doc in docs {
            let entries = match doc.get("predictions") {
                Some(Value::Array(a)) => a.clone(),
                _ => vec![doc],
            };
            for e in entries {
                let label = e.get("label").map(|l| match l {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                let score = e
                    .get("probabilities")
                    .and_then(Value::as_object)
                    .and_then(|p| p.values().nth(1))
                    .and_then(Value::as_f64);
                // A regressor's entry is `{"value": v, ...}` when a `fields` step adds to it.
                let value = e
                    .as_f64()
                    .or_else(|| e.get("value").and_then(Value::as_f64));
                add(label, score, value);
            }
        }
        return;
    }
    // Read as the captured input is (`input_rows`): quoted labels and constants whole.
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    for cells in r.records().flatten() {
        let cells: Vec<&str> = cells.iter().collect();
        let numeric = |c: &[&str]| c.iter().all(|x| x.parse::<f64>().is_ok());
        // A label and its probabilities, or a value alone. Other lines (a top_k answer's
        // class names, a fields step's constants) cannot be read without the model, and are
        // left out rather than counted as what they are not.
        match cells.as_slice() {
            [one] => add(None, None, one.parse().ok()),
            [label, rest @ ..] if rest.len() >= 2 && numeric(rest) => {
                add(Some((*label).to_string()), rest[1].parse().ok(), None)
            }
            _ => {}
        }
    }
}

/// `mlapp monitor`'s outputs: the current statistics, the violations and the report.
pub fn write_monitoring(
    baseline: &Baseline,
    cur: &Current,
    output: &Path,
) -> Result<check::Evaluation, OfflineError> {
    let evaluation = check::evaluate(baseline, &cur.profile, cur.columns.clone());
    std::fs::create_dir_all(output).map_err(|e| input_err(output, e))?;
    let statistics = cur.profile.statistics();
    files::write_compact(&output.join("statistics.json"), &statistics)?;
    files::write(
        &output.join("constraint_violations.json"),
        &evaluation.violations,
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let html = super::report::render(&super::report::ReportInput {
        title: "mlapp data-quality report",
        baseline: &baseline.statistics,
        current: &statistics,
        evaluation: &evaluation,
        predictions: cur.predictions.as_ref(),
        baseline_predictions: None,
        generated_at: &crate::portal::view::iso(now),
    });
    let path = output.join("report.html");
    std::fs::write(&path, html).map_err(|e| input_err(&path, e))?;
    Ok(evaluation)
}

#[derive(clap::Args, Debug)]
pub struct BaselineArgs {
    /// Training data: a CSV file, a folder of them, or s3://bucket/key or prefix.
    #[arg(long)]
    pub input: String,
    /// Folder for statistics.json and constraints.json.
    #[arg(long)]
    pub output: PathBuf,
    /// Name and type the features as this model does (columns matched by header name, or by
    /// position with --no-header; other columns, e.g. the label, are left out).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    #[arg(long, env = "MLAPP_MODEL_CONFIG", default_value = "mlapp.json")]
    pub model_config: String,
    /// The CSV has no header row (columns are then `_c0`, `_c1`, ... without a model).
    #[arg(long)]
    pub no_header: bool,
    /// Path of libonnxruntime.so.1.31.1 (only with --model-dir).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
    /// S3-compatible stores on a plain address need path-style URLs.
    #[arg(long, env = "MLAPP_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: bool,
}

#[derive(clap::Args, Debug)]
pub struct MonitorRunArgs {
    /// The baseline: a folder or s3:// prefix with statistics.json and constraints.json.
    #[arg(long)]
    pub baseline: String,
    /// Captured traffic (a capture folder, .jsonl files, ours or SageMaker's) or a CSV file or
    /// folder; or s3://.
    #[arg(long)]
    pub input: String,
    /// Folder for statistics.json, constraint_violations.json and report.html.
    #[arg(long)]
    pub output: PathBuf,
    /// CSV input has no header row: its columns are the baseline's features in order.
    #[arg(long)]
    pub no_header: bool,
    /// Exit with status 3 when there are violations (for pipelines).
    #[arg(long)]
    pub fail_on_violation: bool,
    #[arg(long, env = "MLAPP_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: bool,
}

pub fn run_baseline(
    args: &BaselineArgs,
    layout_of_model: Option<Layout>,
) -> Result<(), OfflineError> {
    let started = std::time::Instant::now();
    let scratch = tempfile::tempdir().map_err(|e| OfflineError::Input(e.to_string()))?;
    let s3 = S3Options {
        force_path_style: args.s3_force_path_style,
    };
    let files = input_files(&args.input, &s3, scratch.path())?;
    let layout = match layout_of_model {
        Some(mut l) => {
            l.header = !args.no_header;
            l
        }
        None => Layout {
            header: !args.no_header,
            names: None,
            types: None,
        },
    };
    let profile = baseline(&files, &layout, &args.output)?;
    log::info!(
        "baseline of {} rows, {} features written to {} in {:.2} s",
        profile.rows,
        profile.features.len(),
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Returns the number of violations.
pub fn run_monitor(args: &MonitorRunArgs) -> Result<usize, OfflineError> {
    let scratch = tempfile::tempdir().map_err(|e| OfflineError::Input(e.to_string()))?;
    let s3 = S3Options {
        force_path_style: args.s3_force_path_style,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OfflineError::Input(format!("cannot start a runtime: {e}")))?;
    let baseline = rt.block_on(super::setup::fetch_baseline(&args.baseline, &s3))?;
    let files = input_files(&args.input, &s3, scratch.path())?;
    let cur = current(&files, &baseline, !args.no_header)?;
    let e = write_monitoring(&baseline, &cur, &args.output)?;
    let n = e.violations.violations.len();
    log::info!(
        "{} rows ({} records) checked: {n} violation(s); report in {}",
        cur.profile.rows,
        cur.records,
        args.output.join("report.html").display()
    );
    for v in &e.violations.violations {
        log::warn!(
            "{} {}: {}",
            v.feature_name,
            v.constraint_check_type,
            v.description
        );
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn captured_csv_answers_are_read_only_where_their_layout_is_clear() {
        let mut t = Tally::default();
        // A classifier (a quoted label), a regressor, a top_k line and a regressor with a
        // constant: the last two cannot be read without the model and are left out.
        add_output(
            &mut t,
            "text/csv",
            "\"m, f\",0.25,0.75\n41.5\nM,M,0.7,F,0.3\n1.5,v-7\n",
        );
        assert_eq!(
            t.labels.into_iter().collect::<Vec<_>>(),
            [("m, f".to_string(), 1)]
        );
        assert_eq!(t.score.map(|h| h.bins[15]), Some(1));
        assert_eq!(t.values.map(|v| (v.count, v.sum)), Some((1, 41.5)));
        let mut t = Tally::default();
        add_output(
            &mut t,
            "application/json",
            r#"{"predictions": [{"value": 2.5, "v": "x"}]}"#,
        );
        assert_eq!(t.values.map(|v| v.sum), Some(2.5));
    }

    fn baseline() -> Baseline {
        let mut p = Profile::new(vec![
            FeatureProfile::new("a", None),
            FeatureProfile::new("b", Some(InferredType::String)),
        ]);
        let mut r = csv::StringRecord::new();
        for i in 0..50 {
            r.clear();
            r.push_field(&i.to_string());
            r.push_field(["x", "y"][i % 2]);
            p.record(&r, &[Some(0), Some(1)]);
        }
        Baseline::new(p.statistics(), p.constraints())
    }

    /// Capture lines as they come from elsewhere: real records, records with parts changed
    /// or missing, and any text.
    fn capture_line() -> impl Strategy<Value = String> {
        let data = prop_oneof![
            "[0-9,.\\n]{0,30}",
            "(?s).{0,30}",
            Just("{\"instances\":[[1,\"x\"],[2,\"y\"]]}".to_string()),
            Just("[[1,\"x\"]]".to_string()),
            Just("[3,\"y\"]".to_string()),
            Just("{\"a\":1,\"b\":\"x\"}\n{\"a\":null}".to_string()),
        ];
        let encoding = prop_oneof![Just("CSV"), Just("JSON"), Just("BASE64"), Just("x")];
        let ty = prop_oneof![Just("text/csv"), Just("application/json"), Just("")];
        prop_oneof![
            (data.clone(), encoding.clone(), ty.clone(), data, encoding, ty).prop_map(
                |(i, ie, it, o, oe, ot)| {
                    serde_json::json!({"captureData": {
                        "endpointInput": {"observedContentType": it, "mode": "INPUT", "data": i, "encoding": ie},
                        "endpointOutput": {"observedContentType": ot, "mode": "OUTPUT", "data": o, "encoding": oe}},
                        "eventMetadata": {"eventId": "e"}, "eventVersion": "0"})
                    .to_string()
                }
            ),
            "(?s).{0,60}".prop_map(|s| s.replace('\n', " ")),
            Just("{\"captureData\":{\"endpointInput\":{\"data\":5}}}".to_string()),
            Just("{}".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any capture file is read or refused with a message naming the file and line;
        /// never a panic.
        #[test]
        fn capture_files_never_panic(lines in prop::collection::vec(capture_line(), 0..8)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.jsonl");
            std::fs::write(&path, lines.join("\n")).unwrap();
            match current(std::slice::from_ref(&path), &baseline(), true) {
                Ok(c) => {
                    let e = check::evaluate(&baseline(), &c.profile, c.columns.clone());
                    for f in &e.features {
                        prop_assert!(f.distance.is_none_or(|d| (0.0..=1.0).contains(&d)));
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains("c.jsonl"), "{e}"),
            }
        }

        /// Any CSV bytes profile or are refused with a message; never a panic.
        #[test]
        fn csv_files_never_panic(body in prop::collection::vec(any::<u8>(), 0..300), header: bool) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("d.csv");
            std::fs::write(&path, &body).unwrap();
            let layout = Layout { header, names: None, types: None };
            if let Err(e) = profile_csv(std::slice::from_ref(&path), &layout) {
                prop_assert!(e.to_string().contains("d.csv"), "{e}");
            }
        }
    }

    #[test]
    fn a_json_row_of_plain_values_is_one_row() {
        let p = baseline().profile();
        let rows = input_rows("application/json", "[3,\"y\"]", &p).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].len(), 2);
        let rows = input_rows(
            "application/json",
            "{\"instances\":[[1,\"x\"],[2,\"y\"]]}",
            &p,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
    }

    /// A record SageMaker wrote (sagemaker-python-sdk#2629): columnar JSON in, a text/html
    /// answer stored as BASE64, an inference id.
    #[test]
    fn reads_a_real_sagemaker_capture_record() {
        let line = r#"{"captureData":{"endpointInput":{"observedContentType":"application/json","mode":"INPUT","data":"{\"longitude\": [-122.44, -116.99], \"latitude\": [37.8, 32.8], \"housing_median_age\": [52.0, 34.0], \"total_rooms\": [3161.0, 3657.0], \"total_bedrooms\": [472.0, 538.0], \"population\": [842.0, 1513.0], \"households\": [410.0, 562.0], \"median_income\": [7.9761, 5.2907]}","encoding":"JSON"},"endpointOutput":{"observedContentType":"text/html; charset=utf-8","mode":"OUTPUT","data":"eyJtZWRpYW5faG91c2VfdmFsdWUiOiBbNDc4MDQ2LjY2LCAyMDY1NTEuMDFdfQ==","encoding":"BASE64"}},"eventMetadata":{"eventId":"fffc6319-59a6-446f-b30f-46c6ed1aac64","inferenceId":"c7f0edc0-9397-4cd3-a948-bd7b639da2f5","inferenceTime":"2021-09-12T08:03:35Z"},"eventVersion":"0"}"#;
        let names = ["longitude", "latitude", "housing_median_age", "total_rooms"];
        let mut p = Profile::new(
            names
                .iter()
                .map(|n| FeatureProfile::new(*n, None))
                .collect(),
        );
        let mut r = csv::StringRecord::new();
        r.push_field("1");
        r.push_field("2");
        r.push_field("3");
        r.push_field("4");
        p.record(&r, &[Some(0), Some(1), Some(2), Some(3)]);
        let b = Baseline::new(p.statistics(), p.constraints());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sm.jsonl");
        std::fs::write(&path, line).unwrap();
        let c = current(std::slice::from_ref(&path), &b, true).unwrap();
        assert_eq!((c.records, c.profile.rows), (1, 2));
        let lon = &c.profile.features[0];
        assert_eq!((lon.moments.min, lon.moments.max), (-122.44, -116.99));
        let age = &c.profile.features[2];
        assert_eq!(age.moments.sum(), 86.0);
    }
}
