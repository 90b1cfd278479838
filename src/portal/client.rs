//! `mlapp job run`: what a Jenkins stage calls. It creates the job (a replay when it exists
//! with the same definition, so a `retry {}` around it is safe), invokes it (a resume when it
//! failed or stopped), polls `check` and prints progress, and exits with a code per outcome.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

/// Exit codes, each an outcome a pipeline can branch on.
pub mod exit {
    pub const COMPLETED: i32 = 0;
    pub const FAILED: i32 = 1;
    /// The definition was refused (or bad arguments, as clap's own).
    pub const INVALID: i32 = 2;
    pub const PARTIALLY_COMPLETED: i32 = 3;
    pub const STOPPED: i32 = 4;
    /// Still running when --timeout passed: do not create it again, wait again.
    pub const TIMEOUT: i32 = 5;
    pub const UNREACHABLE: i32 = 6;
    /// Completed, but a comparison gate failed (with --require-gates).
    pub const GATES_FAILED: i32 = 7;
}

#[derive(Args, Debug, Clone)]
pub struct JobRunArgs {
    /// The portal's base URL (any replica, or the load balancer), e.g. http://mlapp:8080.
    #[arg(long, env = "MLAPP_PORTAL")]
    pub portal: String,
    /// The job's definition: a JSON file (the body of /api/providers/prediction/create).
    #[arg(long)]
    pub spec: PathBuf,
    /// Wait for the job to end, printing progress; without it, exit once it is queued.
    #[arg(long)]
    pub wait: bool,
    /// Longest wait, in seconds (exit 5 when the job is still running then).
    #[arg(long, default_value_t = 3600.0)]
    pub timeout: f64,
    /// Seconds between checks.
    #[arg(long, default_value_t = 10.0)]
    pub poll: f64,
    /// Exit 7 when the job completed but its comparison's gates failed.
    #[arg(long)]
    pub require_gates: bool,
    /// Bearer token for a portal started with --auth-token-file.
    #[arg(long, env = "MLAPP_PORTAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tries per call before the portal counts as unreachable (1 s, 2 s, 4 s ... apart).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

enum CallError {
    /// No answer: connection refused, reset, timed out, or a 5xx.
    Unreachable(String),
    /// The portal refused: status and its message.
    Refused(u16, String),
}

struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
    retries: u32,
}

impl Client {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CallError> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut wait = Duration::from_secs(1);
        let mut last = String::new();
        for attempt in 0..self.retries.max(1) {
            if attempt > 0 {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            let mut req = self.agent.request(method, &url);
            if let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let answer = match body {
                Some(b) => req.send_json(b.clone()),
                None => req.call(),
            };
            match answer {
                Ok(resp) => {
                    let status = resp.status();
                    let v: Value = resp.into_json().unwrap_or(Value::Null);
                    return Ok((status, v));
                }
                Err(ureq::Error::Status(code, resp)) if code < 500 => {
                    let v: Value = resp.into_json().unwrap_or(Value::Null);
                    let msg = v["error"]["message"].as_str().unwrap_or("").to_string();
                    return Err(CallError::Refused(code, msg));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let v: Value = resp.into_json().unwrap_or(Value::Null);
                    last = format!("{code}: {}", v["error"]["message"].as_str().unwrap_or(""));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(CallError::Unreachable(format!("{method} {url}: {last}")))
    }
}

/// The exit code of a job that ended as `status`; None while it runs.
fn code_of(status: &str) -> Option<i32> {
    match status {
        "Completed" => Some(exit::COMPLETED),
        "PartiallyCompleted" => Some(exit::PARTIALLY_COMPLETED),
        "Failed" => Some(exit::FAILED),
        "Stopped" | "Stopping" => Some(exit::STOPPED),
        _ => None,
    }
}

/// Runs the job; the process's exit code.
pub fn run(args: &JobRunArgs) -> i32 {
    if args.portal.starts_with("https://") {
        eprintln!(
            "mlapp job: this client speaks plain HTTP: give the portal's http:// address \
             (inside the private network), or a local TLS-terminating proxy's"
        );
        return exit::INVALID;
    }
    for (name, v) in [("--timeout", args.timeout), ("--poll", args.poll)] {
        if !(0.0..=7.0 * 86_400.0).contains(&v) {
            eprintln!("mlapp job: {name} must be between 0 and 604800 seconds, got {v}");
            return exit::INVALID;
        }
    }
    let spec: Value = match std::fs::read(&args.spec)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("mlapp job: {}: {e}", args.spec.display());
            return exit::INVALID;
        }
    };
    let Some(name) = spec["name"].as_str().map(str::to_string) else {
        eprintln!(
            "mlapp job: {}: the definition has no \"name\"",
            args.spec.display()
        );
        return exit::INVALID;
    };
    let client = Client {
        base: args.portal.clone(),
        agent: ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build(),
        token: args.token.clone(),
        retries: args.retries,
    };
    let failed = |e: CallError| match e {
        CallError::Unreachable(m) => {
            eprintln!("mlapp job: the portal is unreachable: {m}");
            exit::UNREACHABLE
        }
        CallError::Refused(code, m) => {
            eprintln!("mlapp job: refused ({code}): {m}");
            exit::INVALID
        }
    };
    match client.call("POST", "/api/providers/prediction/create", Some(&spec)) {
        Ok((code, _)) => eprintln!(
            "mlapp job: {name} {}",
            if code == 201 {
                "created"
            } else {
                "exists with this definition"
            }
        ),
        Err(e) => return failed(e),
    }
    let invoke = serde_json::json!({ "name": name });
    let ended = match client.call("POST", "/api/providers/prediction/invoke", Some(&invoke)) {
        Ok((code, v)) => {
            let what = if code == 202 {
                "queued"
            } else {
                "already queued or running"
            };
            eprintln!(
                "mlapp job: {name} {what} ({})",
                v["status"].as_str().unwrap_or("?")
            );
            false
        }
        // A completed (or stopping) job is not run again: report how it ended.
        Err(CallError::Refused(409, m)) => {
            eprintln!("mlapp job: {m}");
            true
        }
        Err(e) => return failed(e),
    };
    if !args.wait && !ended {
        return exit::COMPLETED;
    }
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(args.timeout.max(0.0));
    let poll = Duration::from_secs_f64(args.poll.max(0.05));
    loop {
        let v = match client.call(
            "GET",
            &format!("/api/providers/prediction/check?name={name}"),
            None,
        ) {
            Ok((_, v)) => v,
            Err(e) => return failed(e),
        };
        let status = v["status"].as_str().unwrap_or("?").to_string();
        let p = &v["progress"];
        eprintln!(
            "mlapp job: {name} {status}: items {}/{} done, {} failed, {} running; {} records, {:.0} rows/s, ETA {}",
            p["items_done"], p["items_total"], p["items_failed"], p["items_running"], p["records_ok"],
            p["rows_per_s"].as_f64().unwrap_or(0.0),
            p["eta_s"].as_f64().map(|s| format!("{s:.0} s")).unwrap_or_else(|| "?".into()),
        );
        let code = match status.as_str() {
            // Stopping ends the wait only when invoke was refused for it.
            "Stopping" if !ended => None,
            s => code_of(s),
        };
        if let Some(code) = code {
            if let Some(r) = v["reason"].as_str() {
                eprintln!("mlapp job: {name} {status}: {r}");
            }
            if !v["comparison"].is_null() {
                eprintln!("mlapp job: comparison: {}", v["comparison"]);
            }
            // The whole description on stdout, for the pipeline to archive.
            println!("{v}");
            if code == exit::COMPLETED && args.require_gates && v["comparison"]["passed"] == false {
                eprintln!("mlapp job: {name}: a comparison gate failed");
                return exit::GATES_FAILED;
            }
            return code;
        }
        if started.elapsed() >= timeout {
            eprintln!(
                "mlapp job: {name} still {status} after {:.0} s: run the same command again to keep waiting",
                started.elapsed().as_secs_f64()
            );
            return exit::TIMEOUT;
        }
        std::thread::sleep(poll);
    }
}
