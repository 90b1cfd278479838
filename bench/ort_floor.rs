//! The in-process ONNX Runtime floor: `Session::run` on rows of a CSV file, no HTTP, one
//! session per thread, inputs rotated so that a tree model cannot coast on branch
//! prediction. mlapp's rows/s are reported as a fraction of this.
//!
//!     cargo run --release --example ort_floor -- MODEL_DIR ROWS.csv [SECONDS] [THREADS] [BATCH,...]
//!
//! Prints one JSON object per batch size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mlapp::codec::{self, Frame, InputFormat};
use mlapp::engine::{self, runtime, session};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, csv, rest @ ..] = &args[..] else {
        bail!("usage: ort_floor MODEL_DIR ROWS.csv [SECONDS] [THREADS] [BATCH,...]");
    };
    let seconds: f64 = rest.first().map_or(Ok(5.0), |s| s.parse())?;
    let threads: usize = rest.get(1).map_or(Ok(1), |s| s.parse())?;
    let batches: Vec<usize> = rest
        .get(2)
        .map_or("1,32,100,1024,10000", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let (env, _) = runtime::init(None)?;
    let signature = engine::open(env, dir.as_ref(), "mlapp.json", 1, engine::Device::Cpu)?
        .0
        .signature;
    let body = std::fs::read(csv).with_context(|| format!("reading {csv}"))?;
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let fmt = InputFormat::Csv { header: false };
    for &batch in &batches {
        // Distinct frames built by rotating through the file's rows.
        let frames: Arc<Vec<Frame>> = Arc::new(
            (0..16)
                .map(|k| {
                    let mut text = Vec::new();
                    for r in 0..batch {
                        text.extend_from_slice(lines[(k * 7919 + r) % lines.len()]);
                        text.push(b'\n');
                    }
                    codec::decode(fmt, &text, &signature)
                })
                .collect::<Result<_, _>>()?,
        );
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let frames = Arc::clone(&frames);
                let dir = dir.clone();
                std::thread::spawn(move || -> anyhow::Result<(usize, Duration)> {
                    let (_, mut s) =
                        engine::open(env, dir.as_ref(), "mlapp.json", 1, engine::Device::Cpu)?;
                    let (mut rows, mut runs, started) = (0usize, 0usize, Instant::now());
                    while Instant::now() < until {
                        let f = frames[runs % frames.len()].clone();
                        rows += f.rows;
                        session::run(&mut s[0], f).map_err(anyhow::Error::msg)?;
                        runs += 1;
                    }
                    Ok((rows, started.elapsed()))
                })
            })
            .collect();
        let mut rows = 0;
        let mut took = Duration::ZERO;
        for h in handles {
            let (r, t) = h
                .join()
                .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
            rows += r;
            took = took.max(t);
        }
        let rows_s = rows as f64 / took.as_secs_f64();
        println!(
            "{{\"batch\": {batch}, \"threads\": {threads}, \"rows_per_s\": {rows_s:.0}, \"us_per_run\": {:.2}}}",
            1e6 * threads as f64 * batch as f64 / rows_s
        );
    }
    Ok(())
}
