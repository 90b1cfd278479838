//! A real PostgreSQL for tests: Debian's server (`scripts/install-postgres.sh`, which `make
//! test` runs), a private cluster per test in a temporary folder, on a free loopback port,
//! run as the `postgres` user when the tests run as root (initdb refuses root). Stopped and
//! removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    root: bool,
}

fn find_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is missing: run scripts/install-postgres.sh (make test does)")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = find_bin();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("mlapp-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let port = free_port();
        let mut pg = Postgres {
            bin,
            dir,
            port,
            root,
        };
        if root {
            let ok = Command::new("chown")
                .args(["postgres:", &pg.dir.path().display().to_string()])
                .status()
                .expect("chown");
            assert!(ok.success(), "chown of the cluster folder failed");
        }
        let data = pg.dir.path().join("data");
        let out = pg.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "mlapp",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = pg.dir.path().join("log");
        // The port was free when picked; a test starting beside this one may take it first:
        // then another is picked.
        let mut tries = 0;
        loop {
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                pg.port,
                pg.dir.path().display()
            );
            let out = pg.run(
                "pg_ctl",
                &[
                    "-D",
                    &data.display().to_string(),
                    "-l",
                    &log.display().to_string(),
                    "-w",
                    "-t",
                    "60",
                    "start",
                    "-o",
                    &opts,
                ],
            );
            if out.status.success() {
                break;
            }
            tries += 1;
            assert!(
                tries < 5,
                "pg_ctl start: {} {}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            pg.port = free_port();
        }
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let path = self.bin.join(tool);
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A new, empty database and its URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "mlapp",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE \"{name}\""),
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "create database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://mlapp@127.0.0.1:{}/{name}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
