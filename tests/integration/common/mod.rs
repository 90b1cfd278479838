//! Shared helpers: start the real `mlapp` binary on an ephemeral loopback port and talk to
//! it with a real HTTP client.

#![allow(dead_code)]

pub mod archives;
pub mod flaky;
pub mod moto;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn model_dir(name: &str) -> PathBuf {
    repo().join("examples/gender/models").join(name)
}

pub fn payload(model: &str, file: &str) -> Vec<u8> {
    std::fs::read(
        repo()
            .join("examples/gender/payloads")
            .join(model)
            .join(file),
    )
    .unwrap_or_else(|e| panic!("payload {model}/{file}: {e}"))
}

pub fn golden(model: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(
        repo()
            .join("examples/gender/golden")
            .join(format!("{model}.json")),
    )
    .unwrap_or_else(|e| panic!("golden {model}: {e}"));
    serde_json::from_str(&text).expect("golden json")
}

/// A CSV body of `rows` lines, cycling through the xgboost example's rows.
pub fn xgboost_rows(rows: usize) -> Vec<u8> {
    let one = String::from_utf8(payload("xgboost", "rows.csv")).expect("utf-8 payload");
    let lines: Vec<&str> = one.lines().collect();
    let mut out = String::new();
    for i in 0..rows {
        out.push_str(lines[i % lines.len()]);
        out.push('\n');
    }
    out.into_bytes()
}

/// Checks one CSV answer line (`label,p0,p1,...`) against row `r` of a classifier's golden
/// outputs, within 1e-5.
pub fn assert_csv_row(gold: &serde_json::Value, line: &str, r: usize, what: &str) {
    let mut cells = line.split(',');
    let label = cells.next().unwrap_or_default();
    let want_label = match &gold["labels"][r] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    assert_eq!(label, want_label, "{what}, row {r}");
    let probs: Vec<f64> = cells
        .map(|c| {
            c.parse()
                .unwrap_or_else(|e| panic!("{what}, row {r}: {c:?}: {e}"))
        })
        .collect();
    let want: Vec<f64> = gold["probabilities"][r]
        .as_array()
        .expect("golden probabilities")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    assert_eq!(probs.len(), want.len(), "{what}, row {r}");
    for (a, b) in probs.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-5,
            "{what}, row {r}: {probs:?} vs {want:?}"
        );
    }
}

pub struct Server {
    child: Child,
    pub base: String,
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", self.body))
    }

    /// `(code, message)` of the one error shape.
    pub fn error(&self) -> (String, String) {
        let v = self.json();
        let code = v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {}", self.body));
        let message = v["error"]["message"].as_str().expect("error message");
        (code.to_string(), message.to_string())
    }
}

impl Server {
    /// Starts `mlapp serve --host 127.0.0.1 --port 0 ARGS` and waits for its listening line.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(Some("serve"), args, &[])
    }

    pub fn start_with(command: Option<&str>, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let stderr = if std::env::var_os("MLAPP_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        Self::start_logging(command, args, envs, stderr)
    }

    /// As `start_with`, with the server's log going to `stderr` (`RUST_LOG` may be in `envs`).
    pub fn start_logging(
        command: Option<&str>,
        args: &[&str],
        envs: &[(&str, &str)],
        stderr: Stdio,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlapp"));
        if let Some(c) = command {
            cmd.arg(c).args(["--host", "127.0.0.1", "--port", "0"]);
        }
        cmd.args(args)
            .env(
                "RUST_LOG",
                std::env::var("MLAPP_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("spawn mlapp");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("mlapp listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("mlapp did not print its listening line within 30 s");
            }
        };
        Server { child, base }
    }

    /// Starts a server for a model and waits until /ping says ready.
    pub fn ready(model: &Path, extra: &[&str]) -> Server {
        let dir = model.to_str().expect("utf-8 path");
        let mut args = vec!["--model-dir", dir];
        args.extend_from_slice(extra);
        let s = Self::start(&args);
        s.wait_ready(Duration::from_secs(60));
        s
    }

    /// Waits for /ping to say the load failed (503 all along), and returns the reason.
    pub fn failure(&self) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get("/ping");
            assert_eq!(r.status, 503, "{}", r.body);
            let v = r.json();
            if v["status"] == "failed" {
                return v["reason"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < until, "still loading: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ready(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let r = self.get("/ping");
            if r.status == 200 {
                return;
            }
            assert!(
                Instant::now() < until,
                "not ready after {limit:?}: {} {}",
                r.status,
                r.body
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> Reply {
        reply(agent().get(&format!("{}{path}", self.base)).call())
    }

    pub fn post(&self, content_type: Option<&str>, accept: Option<&str>, body: &[u8]) -> Reply {
        let mut req = agent().post(&format!("{}/invocations", self.base));
        if let Some(ct) = content_type {
            req = req.set("Content-Type", ct);
        }
        if let Some(a) = accept {
            req = req.set("Accept", a);
        }
        reply(req.send_bytes(body))
    }

    /// Waits for the process to exit, up to `limit`; returns its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion, with its output captured; a run past `limit` is killed and
/// fails the test, so that a hang fails one test and not the whole CI run.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    // Read while it runs, so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{cmd:?} ran past {limit:?}:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

pub fn reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("transport error: {e}"),
    };
    Reply {
        status: resp.status(),
        content_type: resp.header("Content-Type").unwrap_or("").to_string(),
        retry_after: resp.header("Retry-After").map(str::to_string),
        body: resp.into_string().expect("utf-8 body"),
    }
}

pub fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of a child this test spawned; no memory is touched.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// A status and the first CSV cell of an answer.
pub type Answer = (u16, String);

/// Clients sending continuously until stopped, every answer kept as (status, first CSV cell):
/// the load under which reloads and unloads must fail no request.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(u16, String)>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(clients: usize, call: impl Fn() -> Reply + Send + Sync + 'static) -> Traffic {
        use std::sync::{atomic::AtomicBool, Arc, Mutex};
        let (stop, seen) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let call = Arc::new(call);
        let clients = (0..clients)
            .map(|_| {
                let (stop, seen, call) = (stop.clone(), seen.clone(), call.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = call();
                        let first = r.body.split(',').next().unwrap_or_default().to_string();
                        seen.lock().unwrap().push((r.status, first));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            seen,
            clients,
        }
    }

    /// The first cell of the latest answer.
    pub fn last(&self) -> Option<String> {
        self.seen.lock().unwrap().last().map(|(_, l)| l.clone())
    }

    /// Stops the clients and checks that every answer was a 200; every answer, in order.
    pub fn stop(self) -> Vec<Answer> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in self.clients {
            c.join().unwrap();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let failed: Vec<&Answer> = seen.iter().filter(|(s, _)| *s != 200).collect();
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            seen.len(),
            &failed[..failed.len().min(5)]
        );
        seen
    }
}
