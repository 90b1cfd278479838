//! The image as users run it, with a real Docker Engine: `docker run IMAGE serve` with the
//! example model mounted read-only, and three replicas behind a real nginx on a private
//! network, one stopped and started again under load.
//!
//! Needs the images that `make test-container` (part of `make test`) builds first:
//! `$MLAPP_IMAGE` (default mlapp:test) and `$MLAPP_NGINX_IMAGE` (default mlapp-nginx:test).
//! Not part of a plain `cargo test`: it is a separate test target, run with
//! `cargo test --test container`.

#[path = "../integration/common/mod.rs"]
mod common;
mod docker;
mod gpu_image;
mod image;
mod scale_out;
