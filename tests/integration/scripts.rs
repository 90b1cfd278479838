//! `build_and_push.sh` with stand-in `aws` and `docker` executables on PATH that record their
//! arguments (and stdin, for the login password): what it runs, in what order, with what
//! tags, and its errors when a tool is missing or AWS is not logged in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{repo, run_bounded};

/// A git checkout holding the script, and a folder of stand-ins that log to `calls`.
struct Stage {
    _dir: tempfile::TempDir,
    checkout: PathBuf,
    bin: PathBuf,
    tools: PathBuf,
    calls: PathBuf,
}

const AWS: &str = r#"#!/bin/sh
echo "aws $*" >>"$CALLS"
case "$*" in
  "sts get-caller-identity --query Account --output text")
    [ -n "${STUB_NOT_LOGGED_IN:-}" ] && { echo "Unable to locate credentials" >&2; exit 255; }
    echo 123456789012 ;;
  "configure get region") echo "${STUB_PROFILE_REGION:-}" ;;
  "ecr describe-repositories"*) [ -n "${STUB_REPO_EXISTS:-}" ] || exit 254 ;;
  "ecr get-login-password"*) echo secret-password ;;
esac
"#;

const DOCKER: &str = r#"#!/bin/sh
echo "docker $*" >>"$CALLS"
if [ "$1" = login ]; then echo "docker login stdin: $(cat)" >>"$CALLS"; fi
exit 0
"#;

impl Stage {
    fn new(with_docker: bool) -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let checkout = dir.path().join("checkout");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&checkout).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(
            repo().join("build_and_push.sh"),
            checkout.join("build_and_push.sh"),
        )
        .unwrap();
        for args in [
            &["init", "-q"][..],
            &["add", "."],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "x",
            ],
        ] {
            let st = Command::new("git")
                .args(args)
                .current_dir(&checkout)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let mut tools = vec![("aws", AWS)];
        if with_docker {
            tools.push(("docker", DOCKER));
        }
        for (name, text) in tools {
            let path = bin.join(name);
            std::fs::write(&path, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // The system's tools, but never a real aws or docker, whatever this machine has.
        let tools = dir.path().join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        for sys in ["/usr/local/bin", "/usr/bin", "/bin"] {
            for e in std::fs::read_dir(sys).into_iter().flatten().flatten() {
                let name = e.file_name();
                let n = name.to_string_lossy();
                if n == "aws" || n.starts_with("docker") || tools.join(&name).exists() {
                    continue;
                }
                let _ = std::os::unix::fs::symlink(e.path(), tools.join(&name));
            }
        }
        let calls = dir.path().join("calls.log");
        Stage {
            _dir: dir,
            checkout,
            bin,
            tools,
            calls,
        }
    }

    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(self.checkout.join("build_and_push.sh"));
        // Only the stand-ins and the basic tools: no real aws or docker can be reached.
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                format!("{}:{}", self.bin.display(), self.tools.display()),
            )
            .env("HOME", self.checkout.as_os_str())
            .env("CALLS", &self.calls)
            .envs(envs.iter().copied());
        run_bounded(&mut cmd, Duration::from_secs(30))
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn commit(&self) -> String {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(&self.checkout)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn builds_for_amd64_tags_with_the_commit_and_pushes_to_a_new_repository() {
    let st = Stage::new(true);
    let out = st.run(&["gender-model", "v1"], &[("AWS_REGION", "eu-west-1")]);
    assert!(out.status.success(), "{}", text(&out));
    let repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/gender-model";
    let c = st.commit();
    let want = [
        "aws sts get-caller-identity --query Account --output text".to_string(),
        "aws ecr describe-repositories --repository-names gender-model --region eu-west-1".into(),
        "aws ecr create-repository --repository-name gender-model --region eu-west-1 --image-scanning-configuration scanOnPush=true".into(),
        "docker info".into(),
        "aws ecr get-login-password --region eu-west-1".into(),
        "docker login --username AWS --password-stdin 123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
        "docker login stdin: secret-password".into(),
        format!("docker build --platform linux/amd64 -f Dockerfile -t {repo}:{c} -t {repo}:v1 ."),
        format!("docker push {repo}:{c}"),
        format!("docker push {repo}:v1"),
    ];
    // The two sides of the login pipe run at once: their lines come in either order.
    let calls = st.calls();
    assert!(calls.contains(&"aws ecr get-login-password --region eu-west-1".to_string()));
    let ordered = |l: &String| l != "docker info" && !l.contains("get-login-password");
    let calls: Vec<&String> = calls.iter().filter(|l| ordered(l)).collect();
    let want: Vec<&String> = want.iter().filter(|l| ordered(l)).collect();
    assert_eq!(calls, want);
}

#[test]
fn an_existing_repository_is_reused_and_the_region_comes_from_the_profile() {
    let st = Stage::new(true);
    let out = st.run(
        &["--gpu", "gender-model"],
        &[
            ("STUB_REPO_EXISTS", "1"),
            ("STUB_PROFILE_REGION", "us-east-2"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let calls = st.calls();
    assert!(
        !calls.iter().any(|l| l.contains("create-repository")),
        "{calls:?}"
    );
    let repo = "123456789012.dkr.ecr.us-east-2.amazonaws.com/gender-model";
    let c = st.commit();
    assert!(
        calls.contains(&format!(
            "docker build --platform linux/amd64 -f container/Dockerfile.gpu -t {repo}:{c}-gpu ."
        )),
        "{calls:?}"
    );
    assert!(
        calls.contains(&format!("docker push {repo}:{c}-gpu")),
        "{calls:?}"
    );
}

#[test]
fn dry_run_prints_every_change_and_makes_none() {
    let st = Stage::new(true);
    let out = st.run(
        &["--dry-run", "gender-model", "v2"],
        &[("AWS_DEFAULT_REGION", "ap-south-1")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    let c = st.commit();
    let repo = "123456789012.dkr.ecr.ap-south-1.amazonaws.com/gender-model";
    for want in [
        "+ aws ecr create-repository --repository-name gender-model --region ap-south-1".to_string(),
        "+ aws ecr get-login-password --region ap-south-1 | docker login --username AWS --password-stdin 123456789012.dkr.ecr.ap-south-1.amazonaws.com".into(),
        format!("+ docker build --platform linux/amd64 -f Dockerfile -t {repo}:{c} -t {repo}:v2 ."),
        format!("+ docker push {repo}:{c}"),
        format!("+ docker push {repo}:v2"),
    ] {
        assert!(printed.contains(&want), "missing {want:?} in:\n{printed}");
    }
    let calls = st.calls();
    // Only read-only questions were asked.
    for l in &calls {
        assert!(
            l.starts_with("aws sts")
                || l.starts_with("aws configure get")
                || l.starts_with("aws ecr describe-repositories"),
            "{l} ran in a dry run"
        );
    }
}

#[test]
fn missing_tools_and_no_aws_login_are_clear_errors() {
    let st = Stage::new(false);
    let out = st.run(&["gender-model"], &[("AWS_REGION", "eu-west-1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("docker is not installed"),
        "{}",
        text(&out)
    );

    let st = Stage::new(true);
    let out = st.run(
        &["gender-model"],
        &[("AWS_REGION", "eu-west-1"), ("STUB_NOT_LOGGED_IN", "1")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("not logged in to AWS"),
        "{}",
        text(&out)
    );
    assert!(!st.calls().iter().any(|l| l.starts_with("docker build")));

    let out = st.run(&["gender-model"], &[]);
    assert!(text(&out).contains("no AWS region"), "{}", text(&out));

    let out = st.run(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("usage:"), "{}", text(&out));
    let out = st.run(&["Not_Valid"], &[("AWS_REGION", "eu-west-1")]);
    assert!(
        text(&out).contains("not a valid ECR repository name"),
        "{}",
        text(&out)
    );
}

/// The shell scripts pass shellcheck (installed by `make test`).
#[test]
fn shell_scripts_are_shellcheck_clean() {
    let scripts: Vec<PathBuf> = [
        "build_and_push.sh",
        "serve",
        "container/base-images.sh",
        "scripts/install-onnxruntime.sh",
        "scripts/install-moto.sh",
        "scripts/install-promtool.sh",
        "scripts/install-fuzz.sh",
        "scripts/fuzz.sh",
    ]
    .iter()
    .map(|p| repo().join(p))
    .chain(shell_files(&repo().join("container")))
    .collect();
    let out = Command::new("shellcheck")
        .args(&scripts)
        .output()
        .expect("shellcheck is not installed: make test installs it");
    assert!(out.status.success(), "{}", text(&out));
}

fn shell_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "sh") {
                out.push(p);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `serve` with a stand-in `mlapp` that prints what it was started with: it execs
/// `mlapp serve` with the arguments, maps the older env names, and puts the CUDA compat
/// libraries first only when the host driver is older than them.
#[test]
fn serve_maps_env_names_and_applies_the_cuda_compat_rule() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mlapp = bin.join("mlapp");
    std::fs::write(
        &mlapp,
        "#!/bin/sh\necho \"args=$*\"\necho \"workers=${SAGEMAKER_MODEL_SERVER_WORKERS:-}\"\necho \"timeout=${SAGEMAKER_MODEL_SERVER_TIMEOUT:-}\"\necho \"ld=${LD_LIBRARY_PATH:-}\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&mlapp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let compat = dir.path().join("compat");
    std::fs::create_dir_all(&compat).unwrap();
    std::fs::write(compat.join("libcuda.so.580.65.06"), b"").unwrap();
    std::os::unix::fs::symlink("libcuda.so.580.65.06", compat.join("libcuda.so.1")).unwrap();
    let version_file = |v: &str| {
        let f = dir.path().join(format!("version-{v}"));
        std::fs::write(
            &f,
            format!("NVRM version: NVIDIA UNIX x86_64 Kernel Module  {v}  Tue Jun 11 2025\nGCC version:  gcc version 11.4.0\n"),
        )
        .unwrap();
        f
    };
    let run = |driver: &Path, envs: &[(&str, &str)]| {
        let mut cmd = Command::new(repo().join("serve"));
        cmd.args(["--workers", "3"])
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("SAGEMAKER_MODEL_SERVER_WORKERS")
            .env("MLAPP_CUDA_COMPAT_DIR", &compat)
            .env("MLAPP_NVIDIA_VERSION_FILE", driver)
            .envs(envs.iter().copied());
        let out = run_bounded(&mut cmd, Duration::from_secs(10));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let old = run(
        &version_file("535.183.01"),
        &[
            ("MODEL_SERVER_WORKERS", "4"),
            ("MODEL_SERVER_TIMEOUT", "90"),
        ],
    );
    assert!(old.contains("args=serve --workers 3"), "{old}");
    assert!(
        old.contains("workers=4") && old.contains("timeout=90"),
        "{old}"
    );
    assert!(old.contains(&format!("ld={}", compat.display())), "{old}");

    let new = run(&version_file("580.159.04"), &[]);
    assert!(new.contains("ld=\n") || new.ends_with("ld="), "{new}");
    let same = run(&version_file("580.65.06"), &[]);
    assert!(same.contains("ld=\n"), "{same}");
    // SageMaker's own name wins over the sample's.
    let both = run(
        &version_file("580.159.04"),
        &[
            ("MODEL_SERVER_WORKERS", "4"),
            ("SAGEMAKER_MODEL_SERVER_WORKERS", "2"),
        ],
    );
    assert!(both.contains("workers=2"), "{both}");
}
