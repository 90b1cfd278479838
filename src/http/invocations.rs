//! `POST /invocations`: negotiate, read the body within the limit, decode against the model's
//! signature, score on the engine, encode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{error_response, AppState};
use crate::batch::BadRecords;
use crate::codec::{self, media, OutputFormat};
use crate::engine::LoadedModel;
use crate::error::ApiError;
use crate::monitor::{Metrics, Stage, Tap};
use crate::stream::{self, Answer, Spool, StreamError};

/// Bodies up to this size are decoded on the HTTP worker; larger ones on the blocking pool,
/// so one big request does not stall every connection of that worker.
pub(super) const INLINE_DECODE_BYTES: usize = 64 * 1024;
/// After the limit is passed, at most this much more is read (and dropped, never kept) so the
/// client can finish sending and read the 413; beyond that the connection is closed.
pub(super) const DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// A client may ask for a shorter deadline than the server's timeout with this header
/// (milliseconds); it cannot ask for a longer one.
pub const TIMEOUT_HEADER: &str = "x-mlapp-timeout-ms";

/// The caller's inference id, kept in captured records (SageMaker's `InferenceId`; how
/// SageMaker hands it to a container is not documented, so mlapp's own name is read too).
const INFERENCE_ID_HEADERS: [header::HeaderName; 2] = [
    header::HeaderName::from_static("x-amzn-sagemaker-inference-id"),
    header::HeaderName::from_static("x-mlapp-inference-id"),
];

pub(super) fn inference_id(req: &HttpRequest) -> Option<String> {
    INFERENCE_ID_HEADERS
        .iter()
        .find_map(|h| req.headers().get(h)?.to_str().ok())
        .map(str::to_string)
}

/// The body length the client declared, when it did.
pub(super) fn declared_length(req: &HttpRequest) -> Option<u64> {
    header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// The model a request was served by, left in the request's extensions for the metrics (its
/// name) and for the error path (a refused row is counted by that model's monitor).
#[derive(Clone)]
pub struct ServedBy(pub Arc<LoadedModel>);

/// SageMaker's header naming the model of a multi-model endpoint (`[path/]name.tar.gz`).
const TARGET_MODEL: &str = "x-amzn-sagemaker-target-model";

/// Which model a request asks for.
enum Which {
    /// `/invocations`: the one served model, or in multi-model mode the one the
    /// Target-Model header or `?model_name=` names.
    Request,
    /// `/models/{name}/invoke`.
    Named(String),
}

pub async fn invocations(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    invoke(req, payload, state, Which::Request).await
}

pub async fn invoke_named(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> HttpResponse {
    let name = name.into_inner();
    invoke(req, payload, state, Which::Named(name)).await
}

async fn invoke(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    which: Which,
) -> HttpResponse {
    let started = Instant::now();
    // Tests of the panic guard need a handler that panics; release builds have none.
    #[cfg(debug_assertions)]
    if req.headers().contains_key("x-mlapp-test-panic")
        && std::env::var_os("MLAPP_TEST_PANICS").is_some()
    {
        panic!("a test asked for a panic");
    }
    let timeout = match request_timeout(&req, state.settings.timeout) {
        Ok(t) => t,
        Err(e) => return reject(&req, &state, &e),
    };
    let deadline = started + timeout;
    let result = tokio::time::timeout_at(deadline.into(), async {
        let model = pick(&req, &state, which).await?;
        req.extensions_mut().insert(ServedBy(Arc::clone(&model)));
        handle(&req, payload, &state, model, deadline, timeout).await
    })
    .await;
    match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => reject(&req, &state, &e),
        Err(_) => reject(&req, &state, &ApiError::Timeout(timeout.as_secs_f64())),
    }
}

/// The model this request is for (in multi-model mode, loaded on first use when the
/// repository holds it).
async fn pick(
    req: &HttpRequest,
    state: &AppState,
    which: Which,
) -> Result<Arc<LoadedModel>, ApiError> {
    let Some(registry) = &state.registry else {
        return match which {
            Which::Request => state.model().map_err(ApiError::NotReady),
            Which::Named(_) => Err(ApiError::Registry(crate::registry::RegistryError::NotFound(
                "this server serves one model: POST /invocations (the /models API is there in multi-model mode)".into(),
            ))),
        };
    };
    let name = match which {
        Which::Named(n) => n,
        Which::Request => {
            // The opaque name (MMS's `?model_name=`) first; SageMaker's Target-Model header
            // is the client's path of the artifact.
            let query = web::Query::<ModelName>::from_query(req.query_string())
                .ok()
                .and_then(|q| q.into_inner().model_name);
            let header = req.headers().get(TARGET_MODEL).map(|v| {
                v.to_str().map_err(|_| {
                    ApiError::BadHeader("X-Amzn-SageMaker-Target-Model is not ASCII text".into())
                })
            });
            match (query, header.transpose()?) {
                (Some(name), _) => name,
                (None, Some(target)) => registry.resolve(target.trim()),
                (None, None) => {
                    return Err(ApiError::BadHeader(
                        "this server serves many models: name one with the \
                         X-Amzn-SageMaker-Target-Model header or ?model_name="
                            .into(),
                    ))
                }
            }
        }
    };
    Ok(registry.get(&name).await?)
}

#[derive(serde::Deserialize)]
struct ModelName {
    model_name: Option<String>,
}

fn reject(req: &HttpRequest, state: &AppState, e: &ApiError) -> HttpResponse {
    reject_as(req, state, e, error_response)
}

/// Counts a refused request (a refused row also by its model's monitor) and answers it in
/// the shape `render` gives errors.
pub(super) fn reject_as(
    req: &HttpRequest,
    state: &AppState,
    e: &ApiError,
    render: fn(&ApiError) -> HttpResponse,
) -> HttpResponse {
    state.metrics.rejected(e.code());
    if let ApiError::Decode(d) = e {
        let picked = req.extensions().get::<ServedBy>().map(|p| Arc::clone(&p.0));
        if let Some(m) = picked.and_then(|m| m.monitor.clone()) {
            m.rejected(d);
        }
    }
    let mut resp = render(e);
    if matches!(e, ApiError::BodyTimeout(_)) {
        // The rest of a stalled body may still come: the connection cannot be reused.
        resp.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    resp
}

pub(super) fn request_timeout(req: &HttpRequest, server: Duration) -> Result<Duration, ApiError> {
    let Some(v) = req.headers().get(TIMEOUT_HEADER) else {
        return Ok(server);
    };
    let ms = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .ok_or_else(|| {
            ApiError::BadHeader(format!(
                "{TIMEOUT_HEADER} must be a positive number of milliseconds, got {:?}",
                String::from_utf8_lossy(v.as_bytes())
            ))
        })?;
    // Any finite number is accepted; one past what a Duration holds (1e23 ms) is simply
    // longer than the server's timeout, which caps it.
    Ok(Duration::try_from_secs_f64(ms / 1e3).map_or(server, |asked| server.min(asked)))
}

pub(super) fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    model: Arc<LoadedModel>,
    deadline: Instant,
    timeout: Duration,
) -> Result<HttpResponse, ApiError> {
    let admit = || {
        model
            .engine
            .admit()
            .map_err(|e| ApiError::from_engine(e, timeout))
    };
    let settings = &state.settings;
    let metrics = &state.metrics;
    let accept_header = header_str(req, header::ACCEPT);
    // Refused before the body is read; the body's format may still pick the type (below).
    media::output_format(accept_header, settings.default_accept)?;
    let answer_to = |format| {
        let like_input = settings
            .answer_like_input
            .then(|| media::line_answer(format));
        media::output_format(
            accept_header,
            like_input.flatten().unwrap_or(settings.default_accept),
        )
    };
    let placeholders = settings.bad_records == BadRecords::Placeholder;
    let tap = |accept: OutputFormat| {
        state.capture.as_ref().map(|c| Tap {
            capture: Arc::clone(c),
            input_type: Arc::from(
                header_str(req, header::CONTENT_TYPE).unwrap_or(&settings.default_content_type),
            ),
            output_type: Arc::from(accept.mime()),
            inference_id: inference_id(req),
        })
    };
    let declared = declared_length(req);
    // A large input goes to the streaming scorer: pieces parsed, scored and encoded in
    // parallel across sessions.
    let job = |format, accept, ticket, max_record| stream::Job {
        model: Arc::clone(&model),
        ticket: Arc::new(ticket),
        format,
        accept,
        split: stream::Split::Line,
        placeholders,
        deadline,
        chunk_bytes: settings.chunk_bytes,
        max_record,
        window: stream::window(model.sessions),
        observer: None,
        capture: tap(accept).map(Arc::new),
    };
    let body_read = BodyRead::of(state);
    if settings.stream_bodies && model.batching {
        let format = media::input_format(
            header_str(req, header::CONTENT_TYPE),
            &settings.default_content_type,
            model.source.config.csv_header,
            b"",
        )?;
        if stream::streamable(format) {
            let accept = answer_to(format)?;
            let limit = (!settings.unbounded_bodies).then_some(settings.max_payload_bytes);
            if let Some(limit) = limit.filter(|&l| declared.is_some_and(|d| d > l as u64)) {
                // Refused before anything is scored; drained as a body read whole would be.
                return Err(body_read
                    .read(payload, limit, declared)
                    .await
                    .err()
                    .unwrap_or(ApiError::PayloadTooLarge {
                        limit,
                        given: declared,
                    }));
            }
            // A streamed body holds a few pieces, not the body: admitted like any request.
            let job = job(format, accept, admit()?, stream::MAX_RECORD_BYTES);
            let mut body = BodyStream {
                payload,
                idle: body_read.idle,
                limit,
                seen: 0,
                done: false,
            };
            let mut held: Held = None;
            let hold = |bytes| body_read.hold(&mut held, bytes);
            let mut spool = Spool::default();
            let scored = stream::score(job, &mut body, &mut spool, hold).await;
            let done = match scored {
                Ok(done) => done,
                Err(e) => return Err(body.refuse(e, timeout).await),
            };
            return answer(metrics, done, spool, accept).await;
        }
    }
    let (body, held) = body_read
        .read(payload, settings.max_payload_bytes, declared)
        .await?;

    let ticket = admit()?;
    let format = media::input_format(
        header_str(req, header::CONTENT_TYPE),
        &settings.default_content_type,
        model.source.config.csv_header,
        &body[..body.len().min(8)],
    )?;
    let accept = answer_to(format)?;
    // Line-oriented bodies go piece by piece when large, and always in placeholder mode,
    // which scores the good lines of a piece with bad ones.
    if model.batching
        && codec::line_oriented(format, &body)
        && (body.len() > settings.chunk_bytes || placeholders)
    {
        let mut spool = Spool::default();
        let whole = &mut stream::Whole::new(body);
        // Read whole, the body is bounded already: a record may be as long as the body.
        let job = job(format, accept, ticket, usize::MAX);
        let done = stream::score(job, whole, &mut spool, |_| Ok(()))
            .await
            .map_err(|e| from_stream(e, timeout, |never| match never {}))?;
        let resp = answer(metrics, done, spool, accept).await;
        drop(held);
        return resp;
    }
    // Shared, not copied, by the capture, the shadow and the blocking pool.
    let body = body.freeze();
    // Sampled before anything is built for them.
    let shadowed = state
        .shadow
        .get()
        .and_then(|s| s.begin())
        .map(|turn| (turn, body.clone()));
    let captured = (state.capture.as_ref())
        .is_some_and(|c| c.sample())
        .then(|| tap(accept))
        .flatten()
        .map(|mut t| {
            // The shadow's captured answer is found by the same inference id.
            if shadowed.is_some() {
                t.inference_id
                    .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
            }
            (t, body.clone())
        });
    let t = Instant::now();
    let m = Arc::clone(&model);
    let (frame, ticket) = off_loop(body.len() <= INLINE_DECODE_BYTES, "decode", move || {
        let frame = codec::decode(format, &body, &m.signature);
        drop((body, held));
        Ok(frame.map(|f| (f, ticket))?)
    })
    .await?;
    metrics.stage(Stage::Decode, t.elapsed());
    let outputs = score(metrics, &model, &ticket, frame, deadline, timeout).await?;
    let t = Instant::now();
    let shadow_outputs = shadowed.as_ref().map(|_| outputs.clone());
    // What is encoded is the answer: its width is the outputs', not the features'.
    let values: usize = outputs.tensors.iter().map(|t| t.data.len()).sum();
    let m = Arc::clone(&model);
    let body = off_loop(values <= INLINE_DECODE_BYTES / 8, "encode", move || {
        let answer = encode(&m, outputs, accept);
        drop(ticket);
        answer
    })
    .await?;
    metrics.stage(Stage::Encode, t.elapsed());
    let body = web::Bytes::from(body);
    // Only for a request both captured and shadowed: nothing is cloned for the others.
    let link = captured
        .as_ref()
        .filter(|_| shadowed.is_some())
        .map(|(tap, _)| crate::monitor::shadow::CaptureLink {
            input_type: Arc::clone(&tap.input_type),
            inference_id: tap.inference_id.clone().unwrap_or_default(),
        });
    if let Some((tap, input)) = captured {
        tap.record(input, body.clone());
    }
    if let (Some((turn, input)), Some(outputs)) = (shadowed, shadow_outputs) {
        turn.offer(crate::monitor::shadow::Offer {
            body: input,
            format,
            accept,
            plan: model.plan.clone(),
            outputs,
            captured: link,
        });
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, accept.mime()))
        .body(body))
}

/// Scores a decoded request: its rows go to the model's live monitor, then to the engine,
/// and the queue and inference times to the metrics.
pub(super) async fn score(
    metrics: &Metrics,
    model: &LoadedModel,
    ticket: &crate::engine::Admitted,
    frame: codec::Frame,
    deadline: Instant,
    timeout: Duration,
) -> Result<crate::model::Outputs, ApiError> {
    if let Some(m) = &model.monitor {
        m.frame(&frame);
    }
    let scored = model
        .score(ticket, frame, deadline)
        .await
        .map_err(|e| ApiError::from_engine(e, timeout))?;
    metrics.stage(Stage::Queue, scored.queued);
    metrics.stage(Stage::Inference, scored.inference);
    Ok(scored.outputs)
}

/// Runs `work` here when it is `small`, else on the blocking pool, so that one large body
/// does not stall every connection of its HTTP worker. What `work` holds (the body, its share
/// of the body budget, the admission ticket) goes with it: if the deadline passes first, it
/// stays counted until the work really ends.
pub(super) async fn off_loop<T: Send + 'static>(
    small: bool,
    what: &'static str,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if small {
        return work();
    }
    web::block(work)
        .await
        .map_err(|e| ApiError::Internal(format!("{what} task failed: {e}")))?
}

/// The answer of an input scored by `stream`, its stage times observed once, as for any
/// request.
async fn answer(
    metrics: &Metrics,
    done: stream::Done,
    spool: Spool,
    accept: OutputFormat,
) -> Result<HttpResponse, ApiError> {
    let s = done.stages;
    for (stage, took) in [
        (Stage::Decode, s.decode),
        (Stage::Queue, s.queue),
        (Stage::Inference, s.inference),
        (Stage::Encode, s.encode),
    ] {
        metrics.stage(stage, took);
    }
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::CONTENT_TYPE, accept.mime()));
    Ok(match spool.finish().await.map_err(ApiError::Internal)? {
        Answer::Memory(bytes) => resp.body(bytes),
        Answer::Spool(file) => resp.streaming(stream::spool_stream(file)),
    })
}

/// The status and message of a failed input; `source` maps the source's own errors.
fn from_stream<E>(
    e: StreamError<E>,
    timeout: Duration,
    source: impl FnOnce(E) -> ApiError,
) -> ApiError {
    match e {
        StreamError::Source(e) => source(e),
        StreamError::Decode(e) => e.into(),
        StreamError::Record(e) => e.into(),
        StreamError::Engine(e) => ApiError::from_engine(e, timeout),
        StreamError::Sink(m) => ApiError::Internal(format!("answer spool: {m}")),
        StreamError::Failed(m) => ApiError::Internal(m),
    }
}

fn encode(
    model: &LoadedModel,
    outputs: crate::model::Outputs,
    accept: OutputFormat,
) -> Result<Vec<u8>, ApiError> {
    let predictions = model.plan.apply(outputs).map_err(|m| {
        ApiError::Internal(format!("the model's outputs do not fit its signature: {m}"))
    })?;
    if let Some(m) = &model.monitor {
        m.predictions(&predictions);
    }
    Ok(codec::encode(&predictions, accept))
}

/// How bodies are read: within a memory budget shared by every request, and with a bound
/// on how long a client may stall.
pub(super) struct BodyRead<'a> {
    budget: &'a Arc<Semaphore>,
    /// The budget's size, for messages.
    total_kib: usize,
    idle: Duration,
}

/// Bytes of a body counted against the budget (in KiB permits: a `u32` count of them covers
/// any body mlapp accepts), released when the body is dropped.
pub(super) type Held = Option<OwnedSemaphorePermit>;

impl<'a> BodyRead<'a> {
    /// Bodies read within the server's shared budget and idle limit.
    pub fn of(state: &'a AppState) -> Self {
        Self {
            budget: &state.body_budget,
            total_kib: state.settings.body_memory_bytes / 1024,
            idle: state.settings.body_idle_timeout,
        }
    }

    /// Reads the whole body, refusing it past `limit`. A declared Content-Length over the
    /// limit is refused before reading, and a body that grows past the limit or the memory
    /// budget is drained for at most `DRAIN_BYTES` more (without keeping them) so that the
    /// client reads the 413 or 503 rather than a reset connection.
    ///
    /// The budget is charged for memory the body really holds, as it arrives: a client that
    /// announces 6 MiB and sends nothing holds one small buffer, not 6 MiB.
    pub async fn read(
        &self,
        mut payload: web::Payload,
        limit: usize,
        declared: Option<u64>,
    ) -> Result<(web::BytesMut, Held), ApiError> {
        let mut refused =
            declared
                .filter(|&n| n > limit as u64)
                .map(|n| ApiError::PayloadTooLarge {
                    limit,
                    given: Some(n),
                });
        let mut held: Held = None;
        let mut body = web::BytesMut::new();
        let mut seen: u64 = 0;
        let mut drained: u64 = 0;
        while let Some(chunk) = self.next(&mut payload, seen).await? {
            let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
            seen += chunk.len() as u64;
            if refused.is_none() && seen > limit as u64 {
                refused = Some(ApiError::PayloadTooLarge {
                    limit,
                    given: declared.or(Some(seen)),
                });
            }
            if refused.is_none() {
                let need = body.len() + chunk.len();
                if need > body.capacity() {
                    // Grown by doubling, up to what was announced: few copies, and never
                    // more memory than twice what arrived.
                    let to = need
                        .max(body.capacity() * 2)
                        .max(64 * 1024)
                        .min(declared.map_or(usize::MAX, |n| (n as usize).max(need)));
                    match self.hold(&mut held, to) {
                        Ok(()) => body.reserve(to - body.len()),
                        Err(e) => refused = Some(e),
                    }
                }
            }
            if refused.is_some() {
                if held.is_some() {
                    body = web::BytesMut::new();
                    held = None;
                }
                drained += chunk.len() as u64;
                if drained > DRAIN_BYTES as u64 {
                    break;
                }
                continue;
            }
            body.extend_from_slice(&chunk);
        }
        match refused {
            Some(ApiError::PayloadTooLarge { limit, .. }) if declared.is_none() => {
                Err(ApiError::PayloadTooLarge {
                    limit,
                    given: Some(seen),
                })
            }
            Some(e) => Err(e),
            None => Ok((body, held)),
        }
    }

    /// The next piece of the body, or 408 once the client stalled for `idle`.
    async fn next(
        &self,
        payload: &mut web::Payload,
        seen: u64,
    ) -> Result<Option<Result<web::Bytes, actix_web::error::PayloadError>>, ApiError> {
        tokio::time::timeout(self.idle, payload.next())
            .await
            .map_err(|_| stalled(self.idle, seen))
    }

    /// Grows what `held` counts to at least `bytes`.
    fn hold(&self, held: &mut Held, bytes: usize) -> Result<(), ApiError> {
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        let need = bytes.div_ceil(1024);
        if need <= have {
            return Ok(());
        }
        let more = u32::try_from(need - have).unwrap_or(u32::MAX);
        let permit = Arc::clone(self.budget)
            .try_acquire_many_owned(more)
            .map_err(|_| {
                ApiError::Overloaded(format!(
                    "request bodies being read already hold the body memory budget ({} MiB, --body-memory-mb)",
                    self.total_kib / 1024
                ))
            })?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// A body scored as it arrives (`stream`'s source): a client that stalls for `idle` gets 408,
/// and one that sends more than `limit` bytes 413.
struct BodyStream {
    payload: web::Payload,
    idle: Duration,
    limit: Option<usize>,
    seen: u64,
    /// The body ended, stalled or broke: there is nothing left to drain.
    done: bool,
}

impl stream::Source for BodyStream {
    type Error = ApiError;

    async fn fill(&mut self, buf: &mut web::BytesMut, _want: usize) -> Result<usize, ApiError> {
        loop {
            let next = tokio::time::timeout(self.idle, self.payload.next()).await;
            self.done = !matches!(next, Ok(Some(Ok(_))));
            let chunk = match next {
                Err(_) => return Err(stalled(self.idle, self.seen)),
                Ok(None) => return Ok(0),
                Ok(Some(chunk)) => chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?,
            };
            if chunk.is_empty() {
                continue;
            }
            self.seen += chunk.len() as u64;
            if let Some(limit) = self.limit.filter(|&l| self.seen > l as u64) {
                return Err(ApiError::PayloadTooLarge {
                    limit,
                    given: Some(self.seen),
                });
            }
            buf.extend_from_slice(&chunk);
            return Ok(chunk.len());
        }
    }
}

impl BodyStream {
    /// The answer to a body refused or failed while streaming. Unless the client stalled or
    /// the connection broke, at most `DRAIN_BYTES` more are read (and dropped) first, so that
    /// the client can finish sending and read the answer rather than a reset connection.
    async fn refuse(&mut self, e: StreamError<ApiError>, timeout: Duration) -> ApiError {
        let e = from_stream(e, timeout, |e| e);
        // An earlier piece's error may be the answer while the body itself stalled: a stalled
        // body is not waited for twice.
        if self.done {
            return e;
        }
        let until = self.seen + DRAIN_BYTES as u64;
        while self.seen <= until {
            match tokio::time::timeout(self.idle, self.payload.next()).await {
                Ok(Some(Ok(chunk))) => self.seen += chunk.len() as u64,
                _ => break,
            }
        }
        match e {
            ApiError::PayloadTooLarge { limit, .. } => ApiError::PayloadTooLarge {
                limit,
                given: Some(self.seen),
            },
            e => e,
        }
    }
}

fn stalled(idle: Duration, seen: u64) -> ApiError {
    ApiError::BodyTimeout(format!(
        "no bytes of the request body arrived for {:.1} s (after {seen} bytes; --body-idle-timeout)",
        idle.as_secs_f64()
    ))
}
