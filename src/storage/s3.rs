//! S3 through `aws-sdk-s3`: credentials and region from `aws-config`'s default chain (env,
//! profile, web identity, ECS and EC2 instance metadata), an endpoint override from
//! `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for S3-compatible stores, path-style addressing
//! when asked. Downloads are streamed to a file beside the destination, checked against the
//! size and (where it is an MD5) the ETag S3 announced, and renamed into place.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use aws_sdk_s3::Client;
use md5::{Digest, Md5};

use super::{archive, ObjectMeta, S3Failure, S3Uri, StorageError};

/// Parts of a multipart upload; S3 allows at most 10,000 parts of at least 5 MiB.
const PART_BYTES: u64 = 16 << 20;
const MAX_PARTS: u64 = 10_000;
/// Whole-download attempts (each request inside also has the SDK's own retries).
const ATTEMPTS: u32 = 4;

#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key`, which most
    /// S3-compatible stores on a plain address need.
    pub force_path_style: bool,
}

/// What an S3 URI names (see `S3Store::object_or_prefix`).
#[derive(Clone, Debug)]
pub enum Listing {
    Object(ObjectMeta),
    /// The objects under `prefix` (which ends in `/` unless it is empty), in key order.
    Prefix {
        prefix: String,
        objects: Vec<ObjectMeta>,
    },
}

#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
}

impl S3Store {
    pub async fn connect(opts: &S3Options) -> Self {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(opts.force_path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .build();
        Self {
            client: Client::from_conf(conf),
        }
    }

    /// A store over a client configured elsewhere (tests, or callers with their own config).
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    /// The client, for callers that need an operation this interface does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The object's metadata, or None when there is no such key.
    pub async fn head(&self, uri: &S3Uri) -> Result<Option<ObjectMeta>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
        {
            Ok(h) => Ok(Some(ObjectMeta {
                key: uri.key.clone(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                etag: h.e_tag().map(unquote),
                last_modified: h.last_modified().map(|t| t.secs()),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_error("HeadObject", uri, e)),
        }
    }

    /// Every object under the prefix `uri.key`, in key order.
    pub async fn list(&self, uri: &S3Uri) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&uri.bucket)
            .prefix(&uri.key)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", uri, e))?;
            for o in page.contents() {
                out.push(ObjectMeta {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(unquote),
                    last_modified: o.last_modified().map(|t| t.secs()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// What `uri` names: the object with that key, else the objects under `key/` as a folder
    /// (a key ending in `/`, or none, is a folder at once). Nothing at all is `NoSuchKey`.
    pub async fn object_or_prefix(&self, uri: &S3Uri) -> Result<Listing, StorageError> {
        let folder = uri.key.is_empty() || uri.key.ends_with('/');
        if !folder {
            if let Some(meta) = self.head(uri).await? {
                return Ok(Listing::Object(meta));
            }
        }
        let prefix = if folder {
            uri.key.clone()
        } else {
            format!("{}/", uri.key)
        };
        let under = S3Uri {
            bucket: uri.bucket.clone(),
            key: prefix.clone(),
        };
        let objects: Vec<ObjectMeta> = self
            .list(&under)
            .await?
            .into_iter()
            .filter(|o| !o.key.ends_with('/'))
            .collect();
        if objects.is_empty() {
            return Err(StorageError::s3(S3Failure {
                op: "HeadObject/ListObjectsV2",
                uri: uri.to_string(),
                bucket: uri.bucket.clone(),
                key: uri.key.clone(),
                code: "NoSuchKey".into(),
                status: Some(404),
                message: format!("no object with this key, and no objects under {under}"),
            }));
        }
        Ok(Listing::Prefix { prefix, objects })
    }

    /// Downloads the object to `dest` (via a temporary file beside it), retrying transient
    /// failures with backoff, and checks it against what S3 announced.
    pub async fn download(&self, uri: &S3Uri, dest: &Path) -> Result<ObjectMeta, StorageError> {
        retrying(&uri.to_string(), || self.download_once(uri, dest)).await
    }

    async fn download_once(&self, uri: &S3Uri, dest: &Path) -> Result<ObjectMeta, StorageError> {
        let resp = self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", uri, e))?;
        let announced = resp.content_length().map(|n| n.max(0) as u64);
        let etag = resp.e_tag().map(unquote);
        // An ETag is the MD5 of the bytes only for single-part uploads without KMS or
        // customer-key encryption; otherwise only the size can be checked.
        let md5_etag = etag.clone().filter(|e| {
            e.len() == 32
                && e.bytes().all(|b| b.is_ascii_hexdigit())
                && !matches!(
                    resp.server_side_encryption(),
                    Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
                )
                && resp.sse_customer_algorithm().is_none()
        });
        let last_modified = resp.last_modified().map(|t| t.secs());
        let part = archive::sibling(dest, "download");
        let result = async {
            let mut file = File::create(&part).map_err(StorageError::io(&part))?;
            let mut body = resp.body;
            let (mut hash, mut got) = (Md5::new(), 0u64);
            while let Some(bytes) = body.try_next().await.map_err(|e| StorageError::Transfer {
                op: "GetObject",
                uri: uri.to_string(),
                message: format!(
                    "the download failed after {got} bytes: {}",
                    DisplayErrorContext(&e)
                ),
                transient: true,
            })? {
                file.write_all(&bytes).map_err(StorageError::io(&part))?;
                hash.update(&bytes);
                got += bytes.len() as u64;
            }
            file.flush().map_err(StorageError::io(&part))?;
            if let Some(want) = announced.filter(|&w| w != got) {
                return Err(StorageError::Mismatch {
                    uri: uri.to_string(),
                    why: format!("{got} bytes received, Content-Length was {want}"),
                });
            }
            let md5 = hex(&hash.finalize());
            if let Some(want) = md5_etag.filter(|w| !w.eq_ignore_ascii_case(&md5)) {
                return Err(StorageError::Mismatch {
                    uri: uri.to_string(),
                    why: format!("MD5 {md5}, ETag {want}"),
                });
            }
            std::fs::rename(&part, dest).map_err(StorageError::io(dest))?;
            Ok(got)
        }
        .await;
        match result {
            Ok(size) => Ok(ObjectMeta {
                key: uri.key.clone(),
                size,
                etag,
                last_modified,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                Err(e)
            }
        }
    }

    /// Uploads a file: one PUT when small, a multipart upload otherwise (aborted on failure,
    /// so no orphan parts are left to pay for).
    pub async fn upload(&self, src: &Path, uri: &S3Uri) -> Result<(), StorageError> {
        let size = std::fs::metadata(src).map_err(StorageError::io(src))?.len();
        if size <= PART_BYTES {
            let body = ByteStream::from_path(src)
                .await
                .map_err(|e| StorageError::Io {
                    path: src.to_path_buf(),
                    source: std::io::Error::other(e),
                })?;
            self.client
                .put_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .body(body)
                .send()
                .await
                .map_err(|e| s3_error("PutObject", uri, e))?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", uri, e))?;
        let id = created.upload_id().unwrap_or_default().to_string();
        match self.upload_parts(src, size, uri, &id).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .upload_id(&id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        src: &Path,
        size: u64,
        uri: &S3Uri,
        id: &str,
    ) -> Result<(), StorageError> {
        let part_bytes = PART_BYTES.max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0;
        while offset < size {
            let len = part_bytes.min(size - offset);
            let number = parts.len() as i32 + 1;
            let body = ByteStream::read_from()
                .path(src)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| StorageError::Io {
                    path: src.to_path_buf(),
                    source: std::io::Error::other(e),
                })?;
            let done = self
                .client
                .upload_part()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .upload_id(id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(|e| s3_error("UploadPart", uri, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(done.e_tag().map(str::to_string))
                    .build(),
            );
            offset += len;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", uri, e))?;
        Ok(())
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `ATTEMPTS` tries have failed.
async fn retrying<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let mut delay = Duration::from_millis(250);
    for n in 1.. {
        match attempt().await {
            Err(e) if e.is_transient() && n < ATTEMPTS => {
                log::warn!("{what}: try {n} of {ATTEMPTS} failed, retrying in {delay:?}: {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    unreachable!("the loop returns")
}

/// S3's own answer when there was one (code, HTTP status, message), else why none came.
fn s3_error<E>(
    op: &'static str,
    uri: &S3Uri,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let (code, message) = match (ctx.err().code(), ctx.err().message()) {
                (Some(code), message) => (code.to_string(), message.unwrap_or_default().to_string()),
                // HEAD answers carry no body, so no code or message: say what they mean.
                (None, _) => match status {
                    403 => (
                        "AccessDenied".to_string(),
                        "wrong or missing credentials, or no s3:GetObject permission on this key (a HEAD answer has no details)".to_string(),
                    ),
                    404 => ("NotFound".to_string(), String::new()),
                    _ => ("an error".to_string(), String::new()),
                },
            };
            StorageError::s3(S3Failure {
                op,
                uri: uri.to_string(),
                bucket: uri.bucket.clone(),
                key: uri.key.clone(),
                code,
                status: Some(status),
                message,
            })
        }
        _ => {
            let transient = match &err {
                SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
                SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
                _ => false,
            };
            StorageError::Transfer {
                op,
                uri: uri.to_string(),
                message: DisplayErrorContext(&err).to_string(),
                transient,
            }
        }
    }
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
