//! The Open Inference Protocol (KServe V2) over REST: `/v2`, `/v2/health/{live,ready}`,
//! `/v2/models/{name}[/versions/{version}]`, `.../ready` and `.../infer`.
//!
//! Infer reads, admits, scores, monitors and captures as `/invocations` does; only the body's
//! format (`codec::v2`) and the error shape (`{"error": "..."}`) are the protocol's. Each model
//! has one version, "1".

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::json;

use super::invocations::{
    declared_length, inference_id, off_loop, request_timeout, score, BodyRead, ServedBy,
    INLINE_DECODE_BYTES,
};
use super::{AppState, Readiness};
use crate::codec::media::MediaError;
use crate::codec::v2;
use crate::engine::LoadedModel;
use crate::error::ApiError;
use crate::monitor::{Stage, Tap};
use crate::registry::RegistryError;

/// The one version of every model.
const VERSION: &str = "1";
/// ONNX Runtime's platform name in Triton's model metadata.
const PLATFORM: &str = "onnxruntime_onnx";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/v2", server_metadata))
        .service(get("/v2/health/live", live))
        .service(get("/v2/health/ready", ready))
        .service(get("/v2/models/{name}", model_metadata))
        .service(get("/v2/models/{name}/versions/{version}", model_metadata))
        .service(get("/v2/models/{name}/ready", model_ready))
        .service(get(
            "/v2/models/{name}/versions/{version}/ready",
            model_ready,
        ));
    for path in [
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ] {
        cfg.service(
            web::resource(path)
                .route(web::post().to(infer))
                .default_service(web::to(|| not_allowed("POST"))),
        );
    }
}

fn get<F, Args>(path: &str, to: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(to))
        .default_service(web::to(|| not_allowed("GET")))
}

/// The protocol's error object: `{"error": "<message>"}`, with the status, headers and log
/// line of any error (`super::error_with`).
pub(super) fn error(e: &ApiError) -> HttpResponse {
    super::error_with(e, e.v2_body())
}

/// The protocol's "false" for a readiness question: a 4xx, with the reason.
fn not_ready(why: &str) -> HttpResponse {
    HttpResponse::BadRequest()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::RETRY_AFTER, "5"))
        .body(ApiError::NotReady(why.to_string()).v2_body())
}

async fn not_allowed(allowed: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(json!({"error": format!("this route answers {allowed}")}))
}

async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": "mlapp",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// Ready when the model is (with many models: while the process lives, as `/ping`). The
/// protocol says a 4xx for "not ready"; the reason is in the body.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.registry.is_some() {
        return HttpResponse::Ok().finish();
    }
    match state.readiness() {
        Readiness::Ready(_) => HttpResponse::Ok().finish(),
        Readiness::Loading(why) | Readiness::Failed(why) => not_ready(&why),
    }
}

fn path_parts(req: &HttpRequest) -> (String, Option<String>) {
    let m = req.match_info();
    (
        m.get("name").unwrap_or_default().to_string(),
        m.get("version").map(str::to_string),
    )
}

fn not_found(message: String) -> ApiError {
    ApiError::Registry(RegistryError::NotFound(message))
}

/// The model a V2 path names. With many models, one the repository holds is loaded on first
/// use, as on `/invocations`.
async fn model_for(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<LoadedModel>, ApiError> {
    if let Some(v) = version.filter(|v| *v != VERSION) {
        return Err(not_found(format!(
            "model \"{name}\" has one version, \"{VERSION}\"; version \"{v}\" is not served"
        )));
    }
    if let Some(registry) = &state.registry {
        return Ok(registry.get(name).await?);
    }
    let model = state.model().map_err(ApiError::NotReady)?;
    if *model.name != *name {
        return Err(not_found(format!(
            "unknown model \"{name}\"; this server serves \"{}\"",
            model.name
        )));
    }
    Ok(model)
}

async fn model_metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (name, version) = path_parts(&req);
    let model = match model_for(&state, &name, version.as_deref()).await {
        Ok(m) => m,
        Err(e) => return error(&e),
    };
    let rows_fixed = model.rows_fixed();
    HttpResponse::Ok().json(json!({
        "name": name,
        "versions": [VERSION],
        "platform": PLATFORM,
        "inputs": v2::inputs(&model.signature, rows_fixed),
        "outputs": v2::outputs(&model.signature, &model.plan, rows_fixed),
    }))
}

/// 200 when the model is loaded and ready. With many models, asking loads a model of the
/// repository, as its metadata or first infer would: clients ask before they infer.
async fn model_ready(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (name, version) = path_parts(&req);
    match model_for(&state, &name, version.as_deref()).await {
        Ok(_) => HttpResponse::Ok().finish(),
        Err(ApiError::NotReady(why)) => not_ready(&why),
        Err(e) => error(&e),
    }
}

async fn infer(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let reject = |e: &ApiError| super::invocations::reject_as(&req, &state, e, error);
    let timeout = match request_timeout(&req, state.settings.timeout) {
        Ok(t) => t,
        Err(e) => return reject(&e),
    };
    let deadline = started + timeout;
    let result = tokio::time::timeout_at(deadline.into(), async {
        let (name, version) = path_parts(&req);
        let model = model_for(&state, &name, version.as_deref()).await?;
        req.extensions_mut().insert(ServedBy(Arc::clone(&model)));
        let version = version.as_deref().unwrap_or(VERSION);
        run(
            &req,
            payload,
            &state,
            model,
            (&name, version),
            deadline,
            timeout,
        )
        .await
    })
    .await;
    match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => reject(&e),
        Err(_) => reject(&ApiError::Timeout(timeout.as_secs_f64())),
    }
}

async fn run(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    model: Arc<LoadedModel>,
    (name, version): (&str, &str),
    deadline: Instant,
    timeout: Duration,
) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    let metrics = &state.metrics;
    // tritonclient can compress requests; mlapp reads them as sent.
    if let Some(coding) = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .filter(|c| !c.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
    {
        return Err(ApiError::Media(MediaError::UnsupportedContentType(
            format!(
                "Content-Encoding {:?}: send the request uncompressed",
                String::from_utf8_lossy(coding.as_bytes())
            ),
        )));
    }
    let header_len = match req.headers().get(v2::HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::BadHeader(format!(
                        "Inference-Header-Content-Length must be a whole number of bytes, got {:?}",
                        String::from_utf8_lossy(v.as_bytes())
                    ))
                })?,
        ),
    };
    let (body, held) = BodyRead::of(state)
        .read(payload, settings.max_payload_bytes, declared_length(req))
        .await?;
    let ticket = model
        .engine
        .admit()
        .map_err(|e| ApiError::from_engine(e, timeout))?;
    let body = body.freeze();
    let captured = state.capture.as_ref().filter(|c| c.sample()).map(|c| {
        let tap = Tap {
            capture: Arc::clone(c),
            input_type: captured_type(header_len),
            output_type: Arc::from(""),
            inference_id: inference_id(req),
        };
        (tap, body.clone())
    });

    let t = Instant::now();
    let m = Arc::clone(&model);
    let (request, ticket) = off_loop(body.len() <= INLINE_DECODE_BYTES, "decode", move || {
        let outputs = v2::outputs(&m.signature, &m.plan, None);
        let names: Vec<&str> = outputs.iter().map(|t| t.name).collect();
        let request = v2::decode(&body, header_len, &m.signature, &names);
        drop((body, held));
        Ok((request?, ticket))
    })
    .await?;
    metrics.stage(Stage::Decode, t.elapsed());
    let v2::InferRequest { frame, answer } = request;
    let outputs = score(metrics, &model, &ticket, frame, deadline, timeout).await?;
    let t = Instant::now();
    let (name, version) = (name.to_string(), version.to_string());
    let values: usize = outputs.tensors.iter().map(|t| t.data.len()).sum();
    let m = Arc::clone(&model);
    let encoded = off_loop(values <= INLINE_DECODE_BYTES / 8, "encode", move || {
        let predictions = m.plan.apply(outputs).map_err(|e| {
            ApiError::Internal(format!("the model's outputs do not fit its signature: {e}"))
        })?;
        if let Some(monitor) = &m.monitor {
            monitor.predictions(&predictions);
        }
        let metas = v2::outputs(&m.signature, &m.plan, None);
        let encoded = v2::encode(predictions, &metas, &answer, &name, &version)
            .map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")));
        drop(ticket);
        encoded
    })
    .await?;
    metrics.stage(Stage::Encode, t.elapsed());
    let body = web::Bytes::from(encoded.body);
    if let Some((mut tap, input)) = captured {
        tap.output_type = captured_type(encoded.header_len);
        tap.record(input, body.clone());
    }
    let mut resp = HttpResponse::Ok();
    resp.insert_header((
        header::CONTENT_TYPE,
        match encoded.header_len {
            Some(_) => "application/octet-stream",
            None => "application/json",
        },
    ));
    if let Some(n) = encoded.header_len {
        resp.insert_header((v2::HEADER_LENGTH, n.to_string()));
    }
    Ok(resp.body(body))
}

/// The content type a captured V2 body is recorded under: with binary data, SageMaker's type
/// for Triton's binary+JSON bodies, which carries where the JSON ends (`mlapp monitor` reads
/// it back).
fn captured_type(header_len: Option<usize>) -> Arc<str> {
    match header_len {
        Some(n) => Arc::from(format!("{}{n}", v2::CAPTURED_BINARY)),
        None => Arc::from("application/json"),
    }
}
