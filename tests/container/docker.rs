//! The docker CLI, and containers and networks removed when the test ends however it ends.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn image() -> String {
    std::env::var("MLAPP_IMAGE").unwrap_or_else(|_| "mlapp:test".into())
}

pub fn gpu_image() -> String {
    std::env::var("MLAPP_GPU_IMAGE").unwrap_or_else(|_| "mlapp-gpu:test".into())
}

pub fn nginx_image() -> String {
    std::env::var("MLAPP_NGINX_IMAGE").unwrap_or_else(|_| "mlapp-nginx:test".into())
}

/// Runs `docker ARGS`; its stdout, or a panic with its stderr.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker is not installed or not on PATH: {e}"))
}

/// Fails loudly, naming the fix, when the engine or the images are missing.
pub fn require_images(images: &[String]) {
    let info = docker_output(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.status.success(),
        "the Docker Engine is not reachable: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    for i in images {
        assert!(
            docker_output(&["image", "inspect", i]).status.success(),
            "image {i} is missing: build it with `make container-images` (make test does)"
        );
    }
}

/// A container, removed on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    pub fn run(name: &str, args: &[&str]) -> Container {
        let _ = docker_output(&["rm", "-f", name]);
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        docker(&all);
        Container {
            name: name.to_string(),
        }
    }

    /// `http://127.0.0.1:PORT` of the container's port 8080, published on loopback.
    pub fn url(&self) -> String {
        let mapped = docker(&["port", &self.name, "8080/tcp"]);
        let first = mapped.lines().next().unwrap_or_default();
        format!("http://{first}")
    }

    pub fn logs(&self) -> String {
        let out = docker_output(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.name])
    }

    /// Waits until GET /ping answers 200.
    pub fn wait_ready(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let url = self.url();
            if let Ok(r) = crate::common::agent().get(&format!("{url}/ping")).call() {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < until,
                "{} not ready after {limit:?}:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_output(&["rm", "-f", &self.name]);
    }
}

/// A private network, removed on drop (after its containers, which are dropped first).
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create(name: &str, subnet: &str) -> Network {
        let _ = docker_output(&["network", "rm", name]);
        docker(&["network", "create", "--subnet", subnet, name]);
        Network {
            name: name.to_string(),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker_output(&["network", "rm", &self.name]);
    }
}
