//! The GPU image on a machine without a GPU (CI's): it carries ONNX Runtime's CUDA provider
//! and the CUDA libraries it loads; `--device cuda` refuses to load, saying why, instead of
//! quietly running on the CPU; `--device auto` (the default) serves on the CPU, correctly. Its
//! CUDA path itself is checked on a GPU machine with container/gpu-check.sh.

use std::time::{Duration, Instant};

use crate::common::{assert_csv_row, golden, model_dir, payload};
use crate::docker::{docker, docker_output, gpu_image, require_images, Container};

#[test]
fn the_gpu_image_carries_cuda_and_falls_back_or_refuses_without_a_gpu() {
    let image = gpu_image();
    require_images(std::slice::from_ref(&image));
    let bytes: f64 = docker(&["image", "inspect", "-f", "{{.Size}}", &image])
        .parse()
        .unwrap();
    println!("image {image}: {:.1} MB", bytes / 1e6);

    let listing = docker(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "ls /opt/onnxruntime/lib /opt/cuda/lib",
    ]);
    for lib in [
        "libonnxruntime_providers_cuda.so",
        "libcudart.so.13",
        "libcublasLt.so.13",
        "libcudnn.so.9",
        "libcurand.so.10",
        "libcufft.so.12",
    ] {
        assert!(listing.contains(lib), "{lib} missing:\n{listing}");
    }
    // No driver inside: the container toolkit mounts the host's.
    let driver = docker_output(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "ls /usr/lib/x86_64-linux-gnu/libcuda.so*",
    ]);
    assert!(!driver.status.success(), "the image carries a driver");

    let model = model_dir("mlp");
    let mount = format!("{}:/opt/ml/model:ro", model.display());
    let id = std::process::id();
    let strict = Container::run(
        &format!("mlapp-gpu-{id}-cuda"),
        &[
            "-p",
            "127.0.0.1::8080",
            "-v",
            &mount,
            "-e",
            "MLAPP_DEVICE=cuda",
            &image,
            "serve",
        ],
    );
    let until = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        match crate::common::agent()
            .get(&format!("{}/ping", strict.url()))
            .call()
        {
            Ok(r) => panic!("--device cuda answered {} without a GPU", r.status()),
            Err(ureq::Error::Status(503, r)) => {
                let body = r.into_string().unwrap_or_default();
                if body.contains("\"failed\"") {
                    break body;
                }
            }
            Err(_) => {} // not listening yet
        }
        assert!(Instant::now() < until, "{}", strict.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reason.contains("--device cuda"), "{reason}");
    println!("--device cuda without a GPU: {reason}");

    let auto = Container::run(
        &format!("mlapp-gpu-{id}-auto"),
        &["-p", "127.0.0.1::8080", "-v", &mount, &image, "serve"],
    );
    auto.wait_ready(Duration::from_secs(60));
    let url = auto.url();
    let ping: serde_json::Value = crate::common::agent()
        .get(&format!("{url}/ping"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(ping["provider"], "CPUExecutionProvider", "{ping}");
    let csv = crate::common::agent()
        .post(&format!("{url}/invocations"))
        .set("Content-Type", "text/csv")
        .set("Accept", "text/csv")
        .send_bytes(&payload("mlp", "rows.csv"))
        .unwrap()
        .into_string()
        .unwrap();
    let gold = golden("mlp");
    for (i, line) in csv.split('\n').enumerate() {
        assert_csv_row(&gold, line, i, "the GPU image on the CPU");
    }
    let logs = auto.logs();
    assert!(logs.contains("--device auto: CUDA cannot run"), "{logs}");
}
