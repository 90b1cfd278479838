//! One ONNX Runtime session: how it is built, and one run of a frame through it with every
//! output copied out into owned buffers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::logging::LogLevel;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynMapValueType, DynValue, Tensor, ValueType};

use super::combine;
use crate::codec::{Column, Frame};
use crate::model::{ModelError, OutputData, OutputTensor, Outputs};

/// Where sessions run (`--device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// CUDA when this ONNX Runtime has it and a GPU takes the model, else the CPU (logged).
    #[default]
    Auto,
    Cpu,
    /// CUDA or fail: the model does not load when CUDA cannot run it.
    Cuda,
}

pub const CPU: &str = "CPUExecutionProvider";
pub const CUDA: &str = "CUDAExecutionProvider";

/// CUDA sessions per visible GPU when `--workers` is not given. Each CUDA session has its own
/// memory arena and cuBLAS/cuDNN handles, and one or two already keep a GPU busy with the small
/// products of tabular models; the CPU count would put dozens on one GPU.
pub const SESSIONS_PER_GPU: usize = 2;

/// How many sessions to build when the model runs on CUDA.
pub fn cuda_sessions(workers: Option<usize>, gpus: usize) -> usize {
    workers.unwrap_or(SESSIONS_PER_GPU * gpus.max(1)).max(1)
}

/// The CUDA device of each of `sessions` sessions: round the `gpus` visible devices, so that
/// every GPU gets one before any gets two.
pub fn device_ids(sessions: usize, gpus: usize) -> Vec<i32> {
    let gpus = i32::try_from(gpus.max(1)).unwrap_or(i32::MAX);
    (0..sessions)
        .map(|i| i32::try_from(i).unwrap_or(i32::MAX) % gpus)
        .collect()
}

/// The GPUs this process can use: the entries of `CUDA_VISIBLE_DEVICES` when it is set (CUDA
/// numbers them 0..n), else the `/dev/nvidiaN` device files a container is given, else 1.
pub fn visible_gpus() -> usize {
    let devices = std::fs::read_dir("/dev").map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.strip_prefix("nvidia")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
    });
    gpu_count(
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
        devices,
    )
}

fn gpu_count(visible: Option<&str>, device_files: usize) -> usize {
    match visible {
        // CUDA stops at the first entry that is not a device ("-1" hides them all).
        Some(list) => list
            .split(',')
            .map(str::trim)
            .take_while(|d| !d.is_empty() && !d.starts_with('-'))
            .count()
            .max(1),
        None => device_files.max(1),
    }
}

/// A session and the execution provider it was built for. `device_id` is the CUDA device
/// it goes on when it runs on CUDA.
pub fn build_session(
    env: &Environment,
    file: &Path,
    intra_threads: usize,
    device: Device,
    device_id: i32,
) -> Result<(Session, &'static str), ModelError> {
    let load_err = |message: String| ModelError::Load {
        path: file.to_path_buf(),
        message,
    };
    let cpu = || -> Result<(Session, &'static str), ModelError> {
        builder(env, intra_threads)
            .and_then(|mut b| b.commit_from_file(file))
            .map(|s| (s, CPU))
            .map_err(|e| load_err(e.to_string()))
    };
    match device {
        Device::Cpu => cpu(),
        Device::Cuda => on_cuda(env, file, intra_threads, device_id)
            .map_err(|why| ModelError::Device(format!("--device cuda: {why}"))),
        Device::Auto => {
            // A CPU-only ONNX Runtime says so at once; asking it for CUDA would only log noise.
            if !ep::CUDA::is_available().unwrap_or(false) {
                return cpu();
            }
            match on_cuda(env, file, intra_threads, device_id) {
                Ok(built) => Ok(built),
                Err(why) => {
                    log::warn!(
                        "--device auto: CUDA cannot run {}, using the CPU: {why}",
                        file.display()
                    );
                    cpu()
                }
            }
        }
    }
}

fn builder(env: &Environment, intra_threads: usize) -> ort::Result<SessionBuilder> {
    Session::builder(env)
        .and_then(|b| {
            b.with_optimization_level(GraphOptimizationLevel::All)
                .map_err(Into::into)
        })
        .and_then(|b| b.with_intra_threads(intra_threads).map_err(Into::into))
        // Spinning threads burn idle CPU; with one intra thread there is nothing to spin for.
        .and_then(|b| {
            b.with_intra_op_spinning(intra_threads > 1)
                .map_err(Into::into)
        })
}

/// A session on CUDA, strictly: registration and session creation must both succeed. ORT's
/// placement lines (captured at verbose level) say which provider got the nodes, since a
/// registered provider may still leave every node on the CPU.
fn on_cuda(
    env: &Environment,
    file: &Path,
    intra_threads: usize,
    device_id: i32,
) -> Result<(Session, &'static str), String> {
    let placed = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&placed);
    let logger: ort::logging::LoggerFunction =
        Arc::new(move |_level, _category, _id, _location, message: &str| {
            if message.contains("placed on [") {
                if let Ok(mut lines) = sink.lock() {
                    lines.push(message.to_string());
                }
            }
        });
    let mut b = builder(env, intra_threads)
        .and_then(|b| b.with_logger(logger).map_err(Into::into))
        .and_then(|b| b.with_log_level(LogLevel::Verbose).map_err(Into::into))
        .and_then(|b| {
            // Full float32 matrix products: TF32 would move probabilities by ~1e-3 for no
            // speed that tabular models' small products would notice.
            b.with_execution_providers([ep::CUDA::default()
                .with_device_id(device_id)
                .with_tf32(false)
                .build()
                .error_on_failure()])
                .map_err(Into::into)
        })
        .map_err(|e| format!("the CUDA execution provider did not register: {e}"))?;
    let session = b
        .commit_from_file(file)
        .map_err(|e| format!("creating the session on CUDA failed: {e}"))?;
    let lines = placed.lock().map(|l| l.clone()).unwrap_or_default();
    for line in &lines {
        log::info!("{}: {line}", file.display());
    }
    if !lines.is_empty() && !lines.iter().any(|l| l.contains(CUDA)) {
        return Err(format!(
            "ONNX Runtime placed no node on CUDA: {}",
            lines.join("; ")
        ));
    }
    Ok((session, CUDA))
}

/// The frame through the model, every output copied out (the outputs borrow the session).
/// A model whose graph fixes the batch size (`[1, F]` exports) runs `k` rows at a time, the
/// last run padded, so requests of any size and coalesced batches work with it too.
pub fn run(session: &mut Session, frame: Frame) -> Result<Outputs, String> {
    run_unless(session, frame, &|| false)
}

/// As `run`; a model that runs k rows at a time stops between runs once `abandoned` says
/// nobody waits for the answer any more (its request timed out or its client left).
pub fn run_unless(
    session: &mut Session,
    frame: Frame,
    abandoned: &dyn Fn() -> bool,
) -> Result<Outputs, String> {
    match fixed_rows(session) {
        Some(k) if frame.rows != k && frame.rows > 0 => {
            run_in_pieces(session, &frame, k, abandoned)
        }
        _ => run_once(session, frame),
    }
}

/// The batch size the graph fixes, read like `ModelSignature::fixed_batch`.
fn fixed_rows(session: &Session) -> Option<usize> {
    session.inputs().iter().find_map(|o| {
        let n = *o.dtype().tensor_shape()?.first()?;
        usize::try_from(n).ok().filter(|&n| n > 0)
    })
}

fn run_in_pieces(
    session: &mut Session,
    frame: &Frame,
    k: usize,
    abandoned: &dyn Fn() -> bool,
) -> Result<Outputs, String> {
    let mut parts = Vec::with_capacity(frame.rows.div_ceil(k));
    for start in (0..frame.rows).step_by(k) {
        if abandoned() {
            return Err("nobody waits for this answer any more".into());
        }
        let end = (start + k).min(frame.rows);
        let outputs = run_once(session, combine::take_rows(frame, start, end, k))?;
        if !combine::follows_rows(&outputs) {
            return Err(format!(
                "the model takes exactly {k} rows per run and its outputs do not have one row \
                 per input row, so it cannot score {} rows at once",
                frame.rows
            ));
        }
        let real = end - start;
        parts.push(if real < k {
            combine::split(outputs, &[real, k - real])?.swap_remove(0)
        } else {
            outputs
        });
    }
    combine::join(parts)
}

fn run_once(session: &mut Session, frame: Frame) -> Result<Outputs, String> {
    let rows = frame.rows;
    let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(frame.columns.len());
    for (outlet, column) in session.inputs().iter().zip(frame.columns) {
        let width = column.len() / rows.max(1);
        let shape: Vec<i64> = match outlet.dtype().tensor_shape().map(|s| s.len()) {
            Some(1) => vec![rows as i64],
            _ => vec![rows as i64, width as i64],
        };
        let value: DynValue = match column {
            Column::F32(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::F64(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::I64(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::I32(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::Bool(v) => Tensor::from_array((shape, v)).map(Tensor::into_dyn),
            Column::Str(v) => Tensor::from_string_array((shape, &v[..])).map(Tensor::into_dyn),
        }
        .map_err(|e| format!("input \"{}\": {e}", outlet.name()))?;
        inputs.push((outlet.name().to_string(), value.into()));
    }
    let specs: Vec<(String, ValueType)> = session
        .outputs()
        .iter()
        .map(|o| (o.name().to_string(), o.dtype().clone()))
        .collect();
    let out = session.run(inputs).map_err(|e| e.to_string())?;
    let mut tensors = Vec::with_capacity(specs.len());
    for (name, ty) in specs {
        let value = &out[name.as_str()];
        let fail = |e: ort::Error| format!("output \"{name}\": {e}");
        let (shape, data) = match ty {
            ValueType::Sequence(_) => {
                let maps = value
                    .try_extract_sequence::<DynMapValueType>()
                    .map_err(fail)?;
                let is_str_key = matches!(&ty, ValueType::Sequence(inner)
                    if matches!(inner.as_ref(), ValueType::Map { key, .. } if *key == ort::value::TensorElementType::String));
                let data = if is_str_key {
                    OutputData::MapStr(
                        maps.iter()
                            .map(|m| m.try_extract_key_values::<String, f32>())
                            .collect::<Result<_, _>>()
                            .map_err(fail)?,
                    )
                } else {
                    OutputData::MapI64(
                        maps.iter()
                            .map(|m| m.try_extract_key_values::<i64, f32>())
                            .collect::<Result<_, _>>()
                            .map_err(fail)?,
                    )
                };
                (vec![maps.len()], data)
            }
            ValueType::Tensor { ty, .. } => {
                use ort::value::TensorElementType as T;
                macro_rules! copy {
                    ($t:ty, $variant:ident) => {{
                        let (s, d) = value.try_extract_tensor::<$t>().map_err(fail)?;
                        (dims(s), OutputData::$variant(d.to_vec()))
                    }};
                }
                match ty {
                    T::Float32 => copy!(f32, F32),
                    T::Float64 => copy!(f64, F64),
                    T::Int64 => copy!(i64, I64),
                    T::Int32 => copy!(i32, I32),
                    T::Bool => copy!(bool, Bool),
                    T::String => {
                        let (s, d) = value.try_extract_strings().map_err(fail)?;
                        (dims(s), OutputData::Str(d))
                    }
                    other => {
                        return Err(format!("output \"{name}\" has unsupported type {other:?}"))
                    }
                }
            }
            other => return Err(format!("output \"{name}\" has unsupported type {other}")),
        };
        tensors.push(OutputTensor { name, shape, data });
    }
    Ok(Outputs { rows, tensors })
}

fn dims(s: &[i64]) -> Vec<usize> {
    s.iter().map(|&d| d.max(0) as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_gets_a_few_sessions_per_gpu_unless_workers_says_otherwise() {
        assert_eq!(cuda_sessions(None, 1), SESSIONS_PER_GPU);
        assert_eq!(cuda_sessions(None, 8), 8 * SESSIONS_PER_GPU);
        assert_eq!(cuda_sessions(None, 0), SESSIONS_PER_GPU);
        assert_eq!(cuda_sessions(Some(5), 8), 5);
        assert_eq!(cuda_sessions(Some(0), 8), 1);
    }

    #[test]
    fn sessions_go_round_the_gpus() {
        assert_eq!(device_ids(4, 1), [0, 0, 0, 0]);
        assert_eq!(device_ids(5, 2), [0, 1, 0, 1, 0]);
        assert_eq!(device_ids(16, 8)[..9], [0, 1, 2, 3, 4, 5, 6, 7, 0]);
        assert_eq!(device_ids(2, 0), [0, 0]);
    }

    #[test]
    fn visible_gpus_follow_cuda_visible_devices_then_the_device_files() {
        assert_eq!(gpu_count(Some("0,1,2,3"), 8), 4);
        assert_eq!(gpu_count(Some("GPU-8f1c,GPU-22ab"), 8), 2);
        assert_eq!(gpu_count(Some("3"), 8), 1);
        assert_eq!(gpu_count(Some("0,1,-1,2"), 8), 2);
        assert_eq!(gpu_count(None, 8), 8);
        assert_eq!(gpu_count(None, 0), 1);
    }
}
