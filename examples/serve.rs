//! Detection as an HTTP service: one shared [`Detector`] behind an axum server with bounded
//! concurrency, JSON answers and typed error codes.
//!
//! ```text
//! cargo run --release --no-default-features --features infer --example serve -- \
//!     models/neon-trees.onnx --addr 127.0.0.1:8080 --sessions 1 --threads 2
//!
//! curl -s --data-binary @models/samples/neon-yell-1.jpg -H 'Content-Type: image/jpeg' \
//!     http://127.0.0.1:8080/detect
//! curl -s http://127.0.0.1:8080/health      # {"status":"ok"}
//! curl -s http://127.0.0.1:8080/info        # classes, input size, provider, arch, settings
//! ```
//!
//! `POST /detect` takes the raw image bytes as the body (PNG, JPEG, GIF, BMP, WebP; the format is
//! sniffed from the content) and answers the SDK's `Detections` as JSON: boxes `[x1, y1, x2, y2]`
//! in original-image pixels, scores, class ids and names, stage timings and image warnings (a
//! truncated JPEG still decodes: 200 with a `truncated_jpeg` warning).
//!
//! Status codes (every error is JSON `{"error": "...", "status": N}`):
//!
//! | code | when |
//! |------|------|
//! | 200  | detections |
//! | 400  | the body could not be read (the client broke off) |
//! | 413  | body over `--max-body` bytes |
//! | 415  | `Content-Type` other than `image/*` or `application/octet-stream` (none is fine); empty body; content that is not an image, or an image format this build does not decode |
//! | 422  | a decodable format but a corrupt, zero-size or over-the-decode-limits image |
//! | 503  | overloaded (with `Retry-After: 1`): `--sessions` requests run and `--queue` more wait; any further one is refused at once |
//! | 404 / 405 | unknown route / wrong method |
//! | 500  | anything else (the model failed) |
//!
//! Concurrency: a request is admitted (or refused with 503) before its body is read, so at most
//! `sessions + queue` bodies of at most `--max-body` bytes are held at once. Admitted requests wait
//! for one of `--sessions` slots, then decode and detect on the blocking thread pool. A refused
//! request's body is read and discarded in the background (up to twice `--max-body` bytes, 10 s) so the
//! client receives the answer instead of a connection reset; a client that sent
//! `Expect: 100-continue` never uploads it.
//!
//! The server prints one line `listening on http://ADDR` (the bound address, so `--addr
//! 127.0.0.1:0` picks a free port) and stops on Ctrl-C or SIGTERM after finishing the requests in
//! flight (at most 10 s more).

use anyhow::Context as _;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use detnas_infer::image_io::ImageError;
use detnas_infer::{Detections, Detector, InferError};
use serde_json::json;
use std::future::IntoFuture;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a refused request's body is read and discarded before the connection is dropped.
const DRAIN_TIME: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serve an exported DetNAS model over HTTP (POST /detect, GET /health, GET /info).
#[derive(Parser, Debug)]
struct Args {
    /// Exported ONNX model.
    model: PathBuf,
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// ONNX Runtime sessions: detections that run at once.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    sessions: usize,
    /// ONNX Runtime intra-op threads per session (default: ONNX Runtime's, all cores).
    #[arg(long, value_parser = at_least_one)]
    threads: Option<usize>,
    /// Requests allowed to wait beyond the running ones; more get 503.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Largest request body in bytes; more gets 413.
    #[arg(long, default_value_t = 20 << 20, value_parser = at_least_one)]
    max_body: usize,
    /// Minimum detection score.
    #[arg(long, default_value_t = 0.25, value_parser = probability)]
    conf: f32,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

fn probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a number between 0 and 1")),
    }
}

struct App {
    detector: Arc<Detector>,
    /// `sessions + queue` permits, taken without waiting: the requests being served.
    admission: Arc<Semaphore>,
    /// `sessions` permits: the requests detecting.
    slots: Arc<Semaphore>,
    max_body: usize,
    settings: serde_json::Value,
}

/// An error answer: `{"error": message, "status": code}`.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message, "status": self.status.as_u16() }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The HTTP status of a detection error: the client's image (415 not an image or not a decoded
/// format, 422 a broken or oversized one) or the server (500).
fn infer_error(err: InferError) -> ApiError {
    let status = match &err {
        InferError::Image(image) => match image {
            ImageError::Empty { .. } | ImageError::UnknownFormat { .. } | ImageError::UnsupportedFormat { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ImageError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        },
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, err.to_string())
}

/// `image/*`, `application/octet-stream` or no `Content-Type` at all.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let text = String::from_utf8_lossy(value.as_bytes());
    let mime = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime.starts_with("image/") || mime == "application/octet-stream" {
        return Ok(());
    }
    let message =
        format!("unsupported Content-Type `{text}`: send the image bytes as image/* or application/octet-stream");
    Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message))
}

fn too_large(max_body: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over the limit of {max_body} bytes"))
}

async fn next_frame(body: &mut Body) -> Option<Result<axum::body::Bytes, axum::Error>> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Reads and discards the rest of a body in the background (at most twice `max_body` bytes and
/// [`DRAIN_TIME`]), so that a client still sending it gets the answer rather than a reset.
fn drain(mut body: Body, max_body: usize) {
    let budget = max_body.saturating_mul(2);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut seen = 0usize;
            while let Some(Ok(data)) = next_frame(&mut body).await {
                seen += data.len();
                if seen > budget {
                    break;
                }
            }
        })
        .await;
    });
}

/// A body refused before any of it was read: discarded in the background unless the client waits
/// for `100 Continue` (then it never sends it).
fn refuse_unread(body: Body, headers: &HeaderMap, max_body: usize) {
    let waits = headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits {
        drain(body, max_body);
    }
}

async fn detect(State(app): State<Arc<App>>, request: Request) -> Result<Json<Detections>, ApiError> {
    let (parts, mut body) = request.into_parts();
    if let Err(e) = check_content_type(&parts.headers) {
        refuse_unread(body, &parts.headers, app.max_body);
        return Err(e);
    }
    let Ok(admitted) = Arc::clone(&app.admission).try_acquire_owned() else {
        refuse_unread(body, &parts.headers, app.max_body);
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded: too many requests, retry later"));
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body as u64) {
        refuse_unread(body, &parts.headers, app.max_body);
        return Err(too_large(app.max_body));
    }

    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = next_frame(&mut body).await {
        let chunk = chunk
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}")))?;
        if bytes.len() + chunk.len() > app.max_body {
            drain(body, app.max_body);
            return Err(too_large(app.max_body));
        }
        bytes.extend_from_slice(&chunk);
    }

    let slot = Arc::clone(&app.slots)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let detector = Arc::clone(&app.detector);
    // The permits move into the blocking task: they are held as long as the detection runs, even
    // when the client has gone away.
    let result = tokio::task::spawn_blocking(move || {
        let result = detector.detect_bytes(&bytes, "request body");
        drop((slot, admitted));
        result
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("detection failed: {e}")))?;
    result.map(Json).map_err(infer_error)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn info(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let info = app.detector.info();
    let config = &info.config;
    Json(json!({
        "model": app.detector.source(),
        "class_names": config.class_names,
        "input": { "width": config.input.width, "height": config.input.height },
        "provider": info.provider,
        "space": info.space,
        "arch": info.arch,
        "server": app.settings,
    }))
}

/// Makes the framework's own error answers (404, 405, ...) JSON like ours, keeping their headers.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let json = json!({ "error": message, "status": status.as_u16() }).to_string();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(Bytes::from(json)))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    eprintln!("shutting down: finishing the requests in flight");
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = Detector::builder().sessions(args.sessions).confidence(args.conf);
    if let Some(threads) = args.threads {
        builder = builder.threads(threads);
    }
    let detector = builder.load(&args.model)?;
    if let Some(warning) = detector.device_warning() {
        eprintln!("warning: {warning}");
    }
    let settings = json!({
        "sessions": args.sessions,
        "threads": args.threads,
        "queue": args.queue,
        "max_body": args.max_body,
        "score_threshold": args.conf,
    });
    let app = Arc::new(App {
        detector: Arc::new(detector),
        admission: Arc::new(Semaphore::new(args.sessions + args.queue)),
        slots: Arc::new(Semaphore::new(args.sessions)),
        max_body: args.max_body,
        settings,
    });
    let router = Router::new()
        .route("/detect", post(detect))
        .route("/health", get(health))
        .route("/info", get(info))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(app);

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on http://{addr}")?;
        stdout.flush()?;

        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(());
        });
        tokio::select! {
            result = server.into_future() => result.context("server failed")?,
            _ = async {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => eprintln!("requests still open {} s after the signal: stopping anyway", SHUTDOWN_GRACE.as_secs()),
        }
        anyhow::Ok(())
    })?;
    // Detections still running on the blocking pool are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
