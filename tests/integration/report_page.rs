//! The data-quality report opened in a real browser: Debian's chromium, headless and with no
//! network, screenshots the page built from the gender example's training and drifted data,
//! and the picture must show the charts (not a blank or broken page).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlapp::monitor::check::{evaluate, Baseline, Columns};
use mlapp::monitor::files::Statistics;
use mlapp::monitor::profile::{FeatureProfile, Profile};
use mlapp::monitor::report::{render, ReportInput, BASELINE_COLOR, CURRENT_COLOR};
use mlapp::portal::results::{Histogram, Tally};

use crate::common::repo;

const CHROMIUM: &str = "/usr/bin/chromium";
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 4000;

fn data(name: &str) -> PathBuf {
    repo().join("examples/gender/monitoring").join(name)
}

/// Profiles a CSV with a header row into `profile`, its columns mapped by name; returns the
/// header.
fn read_into(path: &Path, profile: &mut Profile) -> Vec<String> {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let header: Vec<String> = reader
        .headers()
        .expect("a header row")
        .iter()
        .map(str::to_owned)
        .collect();
    let columns: Vec<Option<usize>> = profile
        .features
        .iter()
        .map(|f| header.iter().position(|h| *h == f.name))
        .collect();
    for record in reader.records() {
        profile.record(&record.expect("a CSV record"), &columns);
    }
    header
}

fn rgb(hex: &str) -> [u8; 3] {
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect("a hex color");
    [byte(1), byte(3), byte(5)]
}

/// RGB pixels of a PNG of any 8-bit color type chromium writes.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let mut decoder = png::Decoder::new(File::open(path).expect("the screenshot"));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let bytes = &buf[..info.buffer_size()];
    let pixels = match info.color_type {
        png::ColorType::Rgb => bytes.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Rgba => bytes.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => bytes.iter().map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => {
            bytes.chunks_exact(2).map(|p| [p[0], p[0], p[0]]).collect()
        }
        other => panic!("unexpected PNG color type {other:?}"),
    };
    (info.width, info.height, pixels)
}

/// Runs chromium in its own process group with its output in files (no pipe that a leftover
/// child could hold open), and kills the whole group past `limit`.
fn screenshot(dir: &Path, page: &Path, out: &Path, limit: Duration) {
    let log = |name: &str| File::create(dir.join(name)).expect("a log file");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-extensions",
            "--no-first-run",
            "--hide-scrollbars",
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(log("chromium.out"))
        .stderr(log("chromium.err"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {CHROMIUM}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if started.elapsed() > limit {
            // The group is chromium's own (process_group(0) above): its renderer and helpers.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "chromium ran past {limit:?}:\n{}",
                std::fs::read_to_string(dir.join("chromium.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    assert!(
        status.success() && out.exists(),
        "chromium failed ({status}), no screenshot:\n{}",
        std::fs::read_to_string(dir.join("chromium.err")).unwrap_or_default()
    );
}

#[test]
fn report_renders_in_headless_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is not installed: the report's browser test needs Debian's chromium \
         (`apt-get install -y chromium`; `make test` installs it)"
    );
    let train = data("train.csv");
    let header = csv::Reader::from_path(&train)
        .and_then(|mut r| r.headers().cloned())
        .expect("train.csv's header");
    let mut base = Profile::new(
        header
            .iter()
            .map(|h| FeatureProfile::new(h, None))
            .collect(),
    );
    read_into(&train, &mut base);
    let base_stats = base.statistics();
    let baseline = Baseline::new(base_stats.clone(), base.constraints());
    let mut current = baseline.profile();
    let cur_header = read_into(&data("drifted.csv"), &mut current);
    let names = baseline.feature_names();
    let columns = Columns {
        missing: names
            .iter()
            .filter(|n| !cur_header.contains(n))
            .cloned()
            .collect(),
        extra: cur_header
            .iter()
            .filter(|h| !names.contains(h))
            .cloned()
            .collect(),
        count: cur_header.len(),
    };
    let evaluation = evaluate(&baseline, &current, columns);
    let cur_stats: Statistics = current.statistics();
    // The page draws whatever tally it is given; these counts stand in for the model's answers
    // on the drifted rows, which would need ONNX Runtime here.
    let mut bins = vec![0u64; 20];
    for (i, b) in bins.iter_mut().enumerate() {
        *b = 5 + (i as u64 * 7) % 60;
    }
    let predictions = Tally {
        rows: 1000,
        labels: [("F".to_owned(), 430), ("M".to_owned(), 570)]
            .into_iter()
            .collect(),
        score: Some(Histogram {
            score_of: "M".into(),
            bins,
        }),
        values: None,
        layout: None,
    };
    let html = render(&ReportInput {
        title: "mlapp data-quality report",
        baseline: &base_stats,
        current: &cur_stats,
        evaluation: &evaluation,
        predictions: Some(&predictions),
        baseline_predictions: None,
        generated_at: "2025-01-01T00:00:00Z",
    });

    let table = html
        .split("<table class=\"violations\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("a violation table");
    for (feature, check) in [
        ("n_apps", "baseline_drift_check"),
        ("brand", "categorical_values_check"),
        ("screen_inches", "completeness_check"),
    ] {
        assert!(
            table.contains(&format!("<tr><td>{feature}</td><td>{check}</td>")),
            "{feature} {check} not in the violation table: {:?}",
            evaluation.violations
        );
    }
    assert_eq!(
        html.matches("<svg").count(),
        evaluation.features.len() + 2,
        "one chart per feature and two for the predictions"
    );

    let dir = tempfile::tempdir().expect("a temp dir");
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).expect("write the page");
    let shot = dir.path().join("report.png");
    screenshot(dir.path(), &page, &shot, Duration::from_secs(60));

    // For a look at what the browser drew: MLAPP_KEEP_REPORT=DIR keeps the page and the shot.
    if let Some(keep) = std::env::var_os("MLAPP_KEEP_REPORT") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).expect("the folder to keep the report in");
        std::fs::copy(&page, keep.join("report.html")).expect("keep the page");
        std::fs::copy(&shot, keep.join("report.png")).expect("keep the screenshot");
    }
    let (w, h, pixels) = decode(&shot);
    assert_eq!((w, h), (WIDTH, HEIGHT), "the screenshot's size");
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(&a, b)| a.abs_diff(b) <= 8);
    let inked = pixels.iter().filter(|p| p.iter().any(|&v| v < 235)).count();
    let share = inked as f64 / pixels.len() as f64;
    assert!(
        share > 0.02,
        "only {:.2}% of the page is not white",
        share * 100.0
    );
    for color in [BASELINE_COLOR, CURRENT_COLOR] {
        let n = pixels.iter().filter(|p| near(p, rgb(color))).count();
        assert!(n > 2000, "{color} covers only {n} pixels");
    }
    eprintln!(
        "report page: {} bytes, {:.1}% inked",
        html.len(),
        share * 100.0
    );
}
