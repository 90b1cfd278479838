//! The rows a model is warmed up with before `/ping` says ready, and what the warm-up found.
//!
//! Real rows shipped in the model folder come first: made-up values cannot run every model
//! (scikit-learn's default `OneHotEncoder()` fails the run on a category it was not trained
//! on). Without them, synthetic rows are used, and an ONNX Runtime error on those only says
//! the model dislikes fake values (its session did load), so the model is still served, with
//! batching off: the check that its outputs follow the rows could not run.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::combine;
use crate::codec::{self, Frame, InputFormat};
use crate::model::{ModelError, ModelSignature, ModelSource, OutputPlan};

/// Files looked for in the model folder when its config names none, in this order.
pub const DEFAULT_FILES: [&str; 3] = ["warmup.jsonl", "warmup.json", "warmup.csv"];
/// Warm-up rows are a sample; a bigger file is a mistake that would slow every load.
const MAX_BYTES: u64 = 16 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    Shipped(PathBuf),
    Synthetic,
}

/// The frame every warm-up run feeds, and where its rows came from.
pub struct Rows {
    pub frame: Frame,
    pub origin: Origin,
}

/// What the warm-up found.
#[derive(Clone, Debug)]
pub struct Report {
    pub origin: Origin,
    pub rows: usize,
    /// ONNX Runtime's error on synthetic rows, tolerated (see the module comment).
    pub refused: Option<String>,
    /// Every output had one row per input row, so runs of several requests can be cut back.
    /// False when that could not be checked.
    pub follows_rows: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = if self.rows == 1 { "row" } else { "rows" };
        match &self.origin {
            Origin::Shipped(p) => write!(f, "{} {rows} from {}", self.rows, p.display())?,
            Origin::Synthetic => write!(f, "{} synthetic {rows}", self.rows)?,
        }
        match &self.refused {
            None => f.write_str(": ran"),
            Some(why) => write!(
                f,
                ": ONNX Runtime refused them ({why}); the model is served anyway, with \
                 batching off. Ship real rows as {} in the model folder to check it at load",
                DEFAULT_FILES[0]
            ),
        }
    }
}

impl Report {
    /// Why requests are or are not coalesced, for the log.
    pub fn batching(&self, batching: bool) -> &'static str {
        match (batching, &self.refused) {
            (true, _) => "on",
            (false, Some(_)) => "off: the warm-up could not check that outputs follow the rows",
            (false, None) => "off: outputs do not follow the batch rows",
        }
    }
}

/// The warm-up file of a model folder: the one its config names, else the first of
/// `DEFAULT_FILES` that exists.
pub fn file(source: &ModelSource) -> Result<Option<PathBuf>, ModelError> {
    let Some(name) = &source.config.warmup_file else {
        return Ok(DEFAULT_FILES
            .iter()
            .map(|n| source.dir.join(n))
            .find(|p| p.is_file()));
    };
    let rel = Path::new(name);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ModelError::Config(format!(
            "warmup_file \"{name}\" must be a path inside the model folder"
        )));
    }
    let path = source.dir.join(rel);
    if !path.is_file() {
        return Err(ModelError::Config(format!(
            "warmup_file \"{name}\" names {}, which does not exist",
            path.display()
        )));
    }
    Ok(Some(path))
}

/// The warm-up frame: the shipped rows, else `synthetic` made-up rows. A fixed-batch model
/// gets exactly its batch; any other model at least 2 rows, since an output that reduces
/// over the rows looks like one that follows them when there is only one.
pub fn rows(
    source: &ModelSource,
    sig: &ModelSignature,
    synthetic: usize,
) -> Result<Rows, ModelError> {
    let (frame, origin) = match file(source)? {
        Some(path) => (
            read(&path, sig, source.config.csv_header, "warm-up rows")?,
            Origin::Shipped(path),
        ),
        None => (
            Frame::synthetic(sig, sig.fixed_batch.unwrap_or(synthetic.max(2))),
            Origin::Synthetic,
        ),
    };
    let frame = match sig.fixed_batch {
        Some(k) if frame.rows != k => combine::take_rows(&frame, 0, frame.rows.min(k), k),
        None if frame.rows < 2 => combine::take_rows(&frame, 0, frame.rows, 2),
        _ => frame,
    };
    Ok(Rows { frame, origin })
}

/// Rows in a request format, from a file named by its extension (`what` names them in
/// errors).
pub fn read(
    path: &Path,
    sig: &ModelSignature,
    csv_header: bool,
    what: &str,
) -> Result<Frame, ModelError> {
    let bad = |why: String| ModelError::Config(format!("{what} {}: {why}", path.display()));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let body = read_bounded(path, MAX_BYTES, "a sample").map_err(bad)?;
    let format = match ext.to_ascii_lowercase().as_str() {
        "jsonl" => InputFormat::JsonLines,
        "json" => InputFormat::Json,
        "csv" => InputFormat::Csv {
            header: csv_header || has_header(&body, sig),
        },
        other => {
            return Err(bad(format!(
                "unknown extension \"{other}\"; use .csv, .json or .jsonl"
            )))
        }
    };
    codec::decode(format, &body, sig).map_err(|e| bad(e.to_string()))
}

/// A file of the model folder read whole, refused past `max` bytes before it is read: a
/// folder from a URL must not make a load take all memory. `what` names it in the message.
pub(crate) fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > max {
        return Err(format!("{size} bytes; {what} may hold at most {max}"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// A CSV whose first line names every feature starts with a header: no data row of a model
/// looks like that, and a header row read as data would feed the names as values.
fn has_header(body: &[u8], sig: &ModelSignature) -> bool {
    let first = body.split(|&b| b == b'\n').next().unwrap_or(b"");
    let Ok(line) = std::str::from_utf8(first) else {
        return false;
    };
    let cells: Vec<&str> = line
        .trim_end_matches('\r')
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    cells.len() == sig.features.len() && cells.iter().all(|c| sig.feature_index(c).is_some())
}

/// Runs the warm-up rows `runs` times through every session, and each run's outputs through
/// the plan. Shipped rows must run; synthetic rows refused by the first run are tolerated
/// (nothing has run yet, so the model only dislikes made-up values), any later failure not.
pub fn run(
    sessions: &mut [super::unit::Unit],
    rows: &Rows,
    runs: usize,
    plan: &OutputPlan,
) -> Result<Report, ModelError> {
    let mut report = Report {
        origin: rows.origin.clone(),
        rows: rows.frame.rows,
        refused: None,
        follows_rows: true,
    };
    let failed = |why: String| {
        ModelError::Warmup(match &rows.origin {
            Origin::Shipped(p) => format!("on the rows of {}: {why}", p.display()),
            Origin::Synthetic => why,
        })
    };
    let mut first = true;
    for session in sessions.iter_mut() {
        for _ in 0..runs.max(1) {
            match session.run(rows.frame.clone()) {
                Ok(outputs) => {
                    report.follows_rows &= combine::follows_rows(&outputs);
                    plan.apply(outputs).map_err(failed)?;
                }
                Err(why) if first && rows.origin == Origin::Synthetic => {
                    report.refused = Some(why);
                    report.follows_rows = false;
                    return Ok(report);
                }
                Err(why) => return Err(failed(why)),
            }
            first = false;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ElemType, InputSpec, ModelConfig};

    fn sig() -> ModelSignature {
        let input = |name: &str, elem| InputSpec {
            name: name.into(),
            elem,
            shape: vec![-1, 1],
            width: 1,
        };
        ModelSignature::new(
            vec![
                input("city", ElemType::String),
                input("age", ElemType::Float32),
            ],
            vec![],
            None,
            &ModelConfig::default(),
        )
        .unwrap()
    }

    fn source(dir: &Path, config: ModelConfig) -> ModelSource {
        ModelSource {
            dir: dir.to_path_buf(),
            file: dir.join("model.onnx"),
            graphs: vec![],
            config,
            config_file: None,
        }
    }

    #[test]
    fn shipped_rows_are_found_decoded_and_padded_to_two() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), ModelConfig::default());
        let synthetic = rows(&src, &sig(), 8).unwrap();
        assert_eq!(synthetic.origin, Origin::Synthetic);
        assert_eq!(synthetic.frame.rows, 8);

        std::fs::write(dir.path().join("warmup.csv"), "age,city\n41,Lagos\n").unwrap();
        let shipped = rows(&src, &sig(), 8).unwrap();
        assert_eq!(
            shipped.origin,
            Origin::Shipped(dir.path().join("warmup.csv"))
        );
        assert_eq!(shipped.frame.rows, 2);
        assert_eq!(
            shipped.frame.columns[0],
            codec::Column::Str(vec!["Lagos".into(), "Lagos".into()])
        );
        // JSON Lines wins over CSV when both are there.
        std::fs::write(
            dir.path().join("warmup.jsonl"),
            "{\"city\": \"Abuja\", \"age\": 3}\n{\"city\": \"Recife\", \"age\": 4}\n{\"city\": \"Delhi\", \"age\": 5}\n",
        )
        .unwrap();
        let shipped = rows(&src, &sig(), 8).unwrap();
        assert_eq!(shipped.frame.rows, 3);
        assert_eq!(
            shipped.frame.columns[1],
            codec::Column::F32(vec![3.0, 4.0, 5.0])
        );
    }

    #[test]
    fn a_fixed_batch_model_warms_up_with_exactly_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sig();
        s.fixed_batch = Some(1);
        let src = source(dir.path(), ModelConfig::default());
        assert_eq!(rows(&src, &s, 8).unwrap().frame.rows, 1);
        std::fs::write(dir.path().join("warmup.csv"), "Lagos,1\nAbuja,2\n").unwrap();
        let r = rows(&src, &s, 8).unwrap();
        assert_eq!(r.frame.rows, 1);
        assert_eq!(r.frame.columns[0], codec::Column::Str(vec!["Lagos".into()]));
    }

    #[test]
    fn bad_warmup_files_are_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("warmup.csv"), "Lagos,1\nAbuja,old\n").unwrap();
        let src = source(dir.path(), ModelConfig::default());
        let err = rows(&src, &sig(), 8).err().unwrap().to_string();
        assert!(
            err.contains("warmup.csv") && err.contains("row 2") && err.contains("\"old\""),
            "{err}"
        );

        let named = |name: &str| {
            let config = ModelConfig {
                warmup_file: Some(name.into()),
                ..ModelConfig::default()
            };
            rows(&source(dir.path(), config), &sig(), 8)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(named("../rows.csv").contains("inside the model folder"));
        assert!(named("rows.csv").contains("does not exist"));
        std::fs::write(dir.path().join("rows.txt"), "Lagos,1\n").unwrap();
        assert!(named("rows.txt").contains("unknown extension \"txt\""));
    }
}
