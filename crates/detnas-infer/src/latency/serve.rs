//! The latency server (`detnas latency serve`): times the ONNX models it is sent on this machine,
//! one at a time, for a search or table build running elsewhere ([`super::remote`] has the wire
//! and the client).
//!
//! Bounded: a model body over the size limit is refused (413) before it is read; one measurement
//! runs at a time and any other request to measure meanwhile gets 503 at once (`Retry-After: 1`;
//! the client waits and asks again); with a token, requests without it get 401; a requested timing
//! plan beyond [`MAX_WARMUP`], [`MAX_TIMED_RUNS`] or [`MAX_SECONDS`] is refused (400). Models are
//! loaded from memory: the server writes no file at all. It runs on one thread besides the
//! measurement's, so that serving does not compete with what it measures.

use super::measure::{ModelKind, Runner};
use super::remote::{MEASURE_HEADER, MeasureRequest, Measured, ServerInfo};
use crate::device::Device;
use crate::error::{InferError, Result};
use crate::fingerprint::{Fingerprint, Precision};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The default largest model body, in bytes (256 MiB).
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 256 << 20;
/// The largest size limit a server may be given, in bytes (4 GiB).
pub const MAX_MODEL_BYTES: u64 = 4 << 30;
/// Most warm-up runs a request may ask for.
pub const MAX_WARMUP: usize = 1_000;
/// Most minimum timed runs a request may ask for; a larger maximum is lowered to this.
pub const MAX_TIMED_RUNS: usize = 100_000;
/// Longest minimum timing a request may ask for, in seconds.
pub const MAX_SECONDS: f64 = 600.0;
/// How long a refused request's body is read and discarded, so that its client gets the answer.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Where and how the server measures.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to listen on (`HOST:PORT`; port 0 picks a free one).
    pub addr: String,
    /// The device models run on (never a fallback: an unavailable device fails at start).
    pub device: Device,
    /// ONNX Runtime intra-op threads (`None`: its default, all cores).
    pub threads: Option<usize>,
    /// Requests must carry `Authorization: Bearer TOKEN` when set.
    pub token: Option<String>,
    /// Largest model body accepted, in bytes (1 to [`MAX_MODEL_BYTES`]).
    pub max_model_bytes: u64,
}

struct Shared {
    runner: Runner,
    info: ServerInfo,
    token: Option<String>,
    gate: Arc<Semaphore>,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

/// Serves until Ctrl-C or SIGTERM (the measurement in flight finishes first). `ready` gets the
/// bound address and what the server says about itself once it listens; `log` one line per
/// request that measured or failed. Fails at start when the device is unavailable, the size
/// limit is out of bounds or the address cannot be bound.
pub fn serve(
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr, &ServerInfo),
    log: impl Fn(&str) + Send + Sync + 'static,
) -> Result<()> {
    if !(1..=MAX_MODEL_BYTES).contains(&opts.max_model_bytes) {
        return Err(InferError::Config(format!(
            "model size limit {} bytes: from 1 to {MAX_MODEL_BYTES}",
            opts.max_model_bytes
        )));
    }
    if opts.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(InferError::Config("an empty token".into()));
    }
    let (_, choice) = crate::runtime::session_builder(opts.threads, opts.device, true, "latency server")?;
    let info = ServerInfo {
        service: "detnas latency server".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        fingerprint: Fingerprint::current(opts.device, opts.threads, &choice.provider, Precision::Fp32),
        max_model_bytes: opts.max_model_bytes,
    };
    let runner = Runner { device: opts.device, threads: opts.threads, strict: true, ..Runner::default() };
    let shared =
        Arc::new(Shared { runner, info, token: opts.token, gate: Arc::new(Semaphore::new(1)), log: Box::new(log) });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| InferError::Config(format!("starting the server's runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&opts.addr)
            .await
            .map_err(|e| InferError::Config(format!("cannot listen on {}: {e}", opts.addr)))?;
        let addr = listener.local_addr().map_err(|e| InferError::Config(format!("{}: {e}", opts.addr)))?;
        ready(addr, &shared.info);
        let app = Router::new()
            .route("/v1/info", get(get_info))
            .route("/v1/measure", post(post_measure))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route (GET /v1/info, POST /v1/measure)") })
            .with_state(shared);
        axum::serve(listener, app)
            .with_graceful_shutdown(stop_signal())
            .await
            .map_err(|e| InferError::Config(format!("serving on {addr}: {e}")))
    })
}

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// A JSON error answer `{"error": ..., "status": N}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into(), "status": status.as_u16() });
    (status, axum::Json(body)).into_response()
}

impl Shared {
    /// `None` when the request may go on, else the 401 answer.
    fn refuse_unauthorised(&self, headers: &HeaderMap) -> Option<Response> {
        let token = self.token.as_deref()?;
        let given = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
        let expected = format!("Bearer {token}");
        if same_bytes(given, expected.as_bytes()) {
            return None;
        }
        Some(error(StatusCode::UNAUTHORIZED, "this server needs its token (Authorization: Bearer TOKEN)"))
    }
}

/// Equality that takes the same time wherever two equally long inputs differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn get_info(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = s.refuse_unauthorised(&headers) {
        return refused;
    }
    axum::Json(&s.info).into_response()
}

/// The request's [`MeasureRequest`], checked against the server's bounds.
fn measure_request(headers: &HeaderMap) -> std::result::Result<MeasureRequest, String> {
    let text = headers
        .get(MEASURE_HEADER)
        .ok_or_else(|| format!("no {MEASURE_HEADER} header (JSON: {{\"model\": ..., \"plan\": ...}})"))?
        .to_str()
        .map_err(|_| format!("{MEASURE_HEADER}: not text"))?;
    let mut req: MeasureRequest = serde_json::from_str(text).map_err(|e| format!("{MEASURE_HEADER}: {e}"))?;
    let plan = &mut req.plan;
    plan.validate().map_err(|e| e.to_string())?;
    if plan.warmup > MAX_WARMUP || plan.min_iters > MAX_TIMED_RUNS || plan.min_seconds > MAX_SECONDS {
        return Err(format!(
            "timing plan over this server's bounds ({MAX_WARMUP} warm-up runs, {MAX_TIMED_RUNS} timed runs, \
             {MAX_SECONDS} s)"
        ));
    }
    plan.max_iters = plan.max_iters.min(MAX_TIMED_RUNS);
    if let ModelKind::Graph { scale } = req.model
        && !(scale.is_finite() && scale > 0.0 && scale <= 1e6)
    {
        return Err(format!("input scale {scale}: from 0 (excluded) to 1e6"));
    }
    Ok(req)
}

async fn post_measure(State(s): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let expects_continue =
        parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let max = s.info.max_model_bytes;
    // A refused body is read and discarded in the background so that the client gets the answer,
    // unless it waits for `100 Continue` before sending it (then it never does).
    let refuse = |answer: Response, body: Body| {
        if !expects_continue {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(DRAIN_TIME, axum::body::to_bytes(body, 2 * max as usize)).await;
            });
        }
        answer
    };
    if let Some(refused) = s.refuse_unauthorised(&parts.headers) {
        return refuse(refused, body);
    }
    let req = match measure_request(&parts.headers) {
        Ok(req) => req,
        Err(m) => return refuse(error(StatusCode::BAD_REQUEST, m), body),
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        let m = format!("model of {} bytes: this server takes at most {max}", declared.unwrap_or_default());
        return refuse(error(StatusCode::PAYLOAD_TOO_LARGE, m), body);
    }
    let Ok(permit) = s.gate.clone().try_acquire_owned() else {
        let mut answer = error(StatusCode::SERVICE_UNAVAILABLE, "busy with another measurement: ask again");
        answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return refuse(answer, body);
    };
    let bytes = match axum::body::to_bytes(body, max as usize).await {
        Ok(b) if b.is_empty() => return error(StatusCode::BAD_REQUEST, "an empty body: send the ONNX model"),
        Ok(b) => b,
        Err(e) if e.to_string().contains("length limit") => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("model over this server's {max} bytes"));
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the model could not be read: {e}")),
    };
    let runner = Runner { timing: req.plan, ..s.runner.clone() };
    let start = Instant::now();
    let size = bytes.len();
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        runner.measure_here(&bytes, "sent model", req.model)
    })
    .await;
    let what = match req.model {
        ModelKind::Graph { .. } => "graph",
        ModelKind::Detector => "detector",
    };
    match outcome {
        Ok(Ok((latency, provider))) => {
            (s.log)(&format!(
                "measured a {what} of {size} bytes: mean {:.3} ms, p50 {:.3} ms over {} runs ({:.1} s)",
                latency.mean_ms,
                latency.p50_ms,
                latency.iterations,
                start.elapsed().as_secs_f64()
            ));
            axum::Json(Measured { latency, provider }).into_response()
        }
        Ok(Err(e)) => {
            (s.log)(&format!("refused a {what} of {size} bytes: {e}"));
            let status = match e {
                InferError::ModelLoad { .. }
                | InferError::Model { .. }
                | InferError::ModelContract { .. }
                | InferError::Metadata { .. }
                | InferError::BadOutput { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, error_chain(&e))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the measurement failed: {e}")),
    }
}

/// An error with its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(MEASURE_HEADER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn requests_are_bounded_before_any_work() {
        let ok = r#"{"model":{"kind":"graph","scale":255},"plan":{"warmup":1,"min_iters":2,"min_seconds":0,"max_iters":18446744073709551615}}"#;
        let req = measure_request(&headers(ok)).unwrap();
        assert_eq!(req.plan.max_iters, MAX_TIMED_RUNS, "an unbounded maximum is lowered");
        for (bad, says) in [
            (
                r#"{"model":{"kind":"detector"},"plan":{"warmup":1001,"min_iters":2,"min_seconds":0,"max_iters":2}}"#,
                "bounds",
            ),
            (
                r#"{"model":{"kind":"detector"},"plan":{"warmup":1,"min_iters":2,"min_seconds":601,"max_iters":2}}"#,
                "bounds",
            ),
            (
                r#"{"model":{"kind":"graph","scale":-1},"plan":{"warmup":1,"min_iters":2,"min_seconds":0,"max_iters":2}}"#,
                "scale",
            ),
            (
                r#"{"model":{"kind":"tensor"},"plan":{"warmup":1,"min_iters":2,"min_seconds":0,"max_iters":2}}"#,
                "unknown variant",
            ),
        ] {
            let e = measure_request(&headers(bad)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(measure_request(&HeaderMap::new()).unwrap_err().contains("no x-detnas-measure header"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_bytes(b"Bearer abc", b"Bearer abc"));
        assert!(!same_bytes(b"Bearer abd", b"Bearer abc"));
        assert!(!same_bytes(b"Bearer ab", b"Bearer abc"));
    }
}
