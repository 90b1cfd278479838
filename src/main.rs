use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mlapp::config::ServeConfig;
use mlapp::engine::{self, runtime};

/// Serve ONNX models (scikit-learn, XGBoost, small neural nets) over the SageMaker
/// container contract: GET /ping, POST /invocations on port 8080.
#[derive(Parser, Debug)]
#[command(name = "mlapp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// `mlapp` with no command: every serve option from its environment variable or default.
#[derive(Parser, Debug)]
struct ServeOnly {
    #[command(flatten)]
    cfg: ServeConfig,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the model (what `docker run IMAGE serve` runs; also the default with no command).
    Serve(Box<ServeConfig>),
    /// Score files offline with Batch Transform's semantics: every input x gives x.out.
    Transform(Box<mlapp::transform::TransformConfig>),
    /// Prediction jobs on a portal (`job run` is what a Jenkins stage calls).
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Statistics and suggested constraints of training data, in Model Monitor's layout.
    Baseline(mlapp::monitor::offline::BaselineArgs),
    /// Check captured traffic or a data set against a baseline: statistics.json,
    /// constraint_violations.json and report.html.
    Monitor(mlapp::monitor::offline::MonitorRunArgs),
    /// A model.tar.gz of a model folder with sample rows and their expected answers, which
    /// every load checks before the model is served.
    Package(mlapp::package::PackageArgs),
    /// Print a model's inputs, outputs and what mlapp accepts and returns for it.
    Inspect {
        /// The model folder (or a folder holding one .onnx file).
        model_dir: PathBuf,
        /// Name of the model config file inside the folder.
        #[arg(long, env = "MLAPP_MODEL_CONFIG", default_value = "mlapp.json")]
        model_config: String,
        /// Path of libonnxruntime.so.1.31.1.
        #[arg(long, env = "ORT_DYLIB_PATH")]
        ort_dylib: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Create (or replay), invoke (or resume) and, with --wait, follow a job to its end.
    /// Exit codes: 0 Completed, 1 Failed, 2 refused definition, 3 PartiallyCompleted,
    /// 4 Stopped, 5 still running at --timeout, 6 portal unreachable, 7 a gate failed
    /// (with --require-gates).
    Run(mlapp::portal::client::JobRunArgs),
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,ort=warn"))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(cfg)) => mlapp::http::server::serve(*cfg)?,
        // `docker run IMAGE` with no arguments serves too; options then come from the env.
        None => {
            let only = ServeOnly::parse_from(["mlapp"]);
            mlapp::http::server::serve(only.cfg)?
        }
        Some(Command::Transform(cfg)) => {
            let s = mlapp::transform::run(&cfg)?;
            eprintln!(
                "transform: {} files done ({} rows), {} skipped as done already, {} failed",
                s.done,
                s.rows,
                s.skipped,
                s.failed.len()
            );
            if !s.failed.is_empty() {
                let list: Vec<String> = s
                    .failed
                    .iter()
                    .map(|(f, why)| format!("{f}: {why}"))
                    .collect();
                anyhow::bail!("{} files failed:\n{}", s.failed.len(), list.join("\n"));
            }
        }
        Some(Command::Job {
            command: JobCommand::Run(args),
        }) => std::process::exit(mlapp::portal::client::run(&args)),
        Some(Command::Baseline(args)) => {
            let layout = match &args.model_dir {
                Some(dir) => {
                    let (env, _) = runtime::init(args.ort_dylib.as_deref())?;
                    let (opened, _) =
                        engine::open(env, dir, &args.model_config, 1, engine::Device::Cpu)
                            .with_context(|| {
                                format!("cannot open the model in {}", dir.display())
                            })?;
                    let sig = opened.signature;
                    Some(mlapp::monitor::offline::Layout {
                        header: true,
                        names: Some(sig.features.iter().map(|f| f.name.clone()).collect()),
                        types: Some(
                            sig.features
                                .iter()
                                .map(|f| mlapp::monitor::profile::declared(f.elem))
                                .collect(),
                        ),
                    })
                }
                None => None,
            };
            mlapp::monitor::offline::run_baseline(&args, layout)?;
        }
        Some(Command::Monitor(args)) => {
            let violations = mlapp::monitor::offline::run_monitor(&args)?;
            if violations > 0 && args.fail_on_violation {
                std::process::exit(3);
            }
        }
        Some(Command::Package(args)) => {
            let (env, _) = runtime::init(args.ort_dylib.as_deref())?;
            let packed = mlapp::package::package(env, &args)?;
            println!(
                "{}: {} files, with {} sample rows and their expected answers",
                args.out.display(),
                packed.files,
                packed.rows
            );
        }
        Some(Command::Inspect {
            model_dir,
            model_config,
            ort_dylib,
        }) => {
            let (env, _) = runtime::init(ort_dylib.as_deref())?;
            let (opened, session) =
                engine::open(env, &model_dir, &model_config, 1, engine::Device::Cpu)
                    .with_context(|| format!("cannot open the model in {}", model_dir.display()))?;
            let warmup = engine::check_warmup(&opened, session, 8);
            print!("{}", mlapp::inspect::describe(&opened, &warmup));
        }
    }
    Ok(())
}
