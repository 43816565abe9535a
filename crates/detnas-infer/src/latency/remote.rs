//! Measuring on the target machine from another one: the client of a latency server
//! (`detnas latency serve`, [`super::serve`]) and what the two say to each other.
//!
//! A search runs where the GPUs are; the device it searches for is often another machine. The
//! server runs there and times the ONNX models it is sent, one at a time, with its own device and
//! threads; everything else — which models, in which order, the protocol's repetitions and drift
//! reference ([`super::protocol`]) — stays with the client, so a remote table is measured exactly as
//! a local one. The wire:
//!
//! - `GET /v1/info` → [`ServerInfo`] (the server's fingerprint and model size limit);
//! - `POST /v1/measure` with the model's bytes as the body and the header [`MEASURE_HEADER`] holding
//!   a [`MeasureRequest`] as JSON → [`Measured`];
//! - with a token, every request carries `Authorization: Bearer TOKEN`;
//! - errors are JSON `{"error": "...", "status": N}`: 400 bad request, 401 missing or wrong token,
//!   413 model over the size limit, 422 a model the server cannot time, 503 busy with another
//!   measurement (the client waits and asks again, up to [`BUSY_WAIT`]).
//!
//! Plain HTTP only: for a target outside a trusted network, tunnel it (`ssh -L`).

use super::measure::ModelKind;
use crate::error::{InferError, Result};
use crate::fingerprint::Fingerprint;
use crate::timing::{Latency, TimingPlan};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The request header carrying a [`MeasureRequest`] as JSON.
pub const MEASURE_HEADER: &str = "x-detnas-measure";
/// The environment variable a token is read from when none is given on the command line.
pub const TOKEN_ENV: &str = "DETNAS_REMOTE_TOKEN";
/// How long a client waits for a busy server (503) before giving up.
pub const BUSY_WAIT: Duration = Duration::from_secs(600);
/// Longest wait for one answer (a measurement included) before the server counts as gone.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest server address accepted.
const MAX_URL: usize = 2000;
/// Largest answer read from a server.
const MAX_ANSWER: u64 = 1 << 20;

/// What a server says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerInfo {
    /// `detnas latency server`.
    pub service: String,
    /// The detnas version it runs.
    pub version: String,
    /// Where it measures: its CPU, cores, ONNX Runtime, provider and threads (precision `fp32`:
    /// the precision is the sent models', which the client records).
    pub fingerprint: Fingerprint,
    /// Largest model body it accepts, in bytes.
    pub max_model_bytes: u64,
}

/// How to time one model ([`MEASURE_HEADER`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureRequest {
    /// What runs.
    pub model: ModelKind,
    /// Warm-up and timed runs (one repetition of the protocol).
    pub plan: TimingPlan,
}

/// One timing from a server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// The timed runs.
    pub latency: Latency,
    /// The execution provider that ran them.
    pub provider: String,
}

/// A latency server to measure on. Cloning shares its connections.
#[derive(Clone)]
pub struct Remote {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Remote {
    /// The address, and whether a token is set (never the token).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).field("token", &self.token.as_ref().map(|_| "set")).finish()
    }
}

impl PartialEq for Remote {
    /// Same address and token.
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url && self.token == other.token
    }
}

impl Remote {
    /// A server at `url` (`http://HOST:PORT`, a trailing `/` allowed), with the token it asks for,
    /// if any. Refuses an empty or over-long address, another scheme than `http://` (there is no
    /// TLS: tunnel instead), and an empty token.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        let bad =
            |reason: &str| Err(InferError::Remote { url: url.chars().take(200).collect(), reason: reason.into() });
        let trimmed = url.trim().trim_end_matches('/');
        if trimmed.len() > MAX_URL {
            return bad(&format!("an address of at most {MAX_URL} characters"));
        }
        let Some(rest) = trimmed.strip_prefix("http://") else {
            return bad("give an address as http://HOST:PORT (plain HTTP: for https, tunnel it, e.g. with ssh -L)");
        };
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return bad("give an address as http://HOST:PORT");
        }
        if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return bad("an empty token");
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(ANSWER_TIMEOUT))
            .build();
        Ok(Remote { url: trimmed.to_string(), token, agent: config.into() })
    }

    /// The server's address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks the server what it is and where it measures; fails when it is not a latency server.
    pub fn info(&self) -> Result<ServerInfo> {
        let request = self.authorised(self.agent.get(format!("{}/v1/info", self.url)));
        let text = self.answer(request.call())?;
        let info: ServerInfo = serde_json::from_str(&text)
            .map_err(|e| self.error(format!("not a detnas latency server (its /v1/info answer: {e})")))?;
        Ok(info)
    }

    /// Times `model` as `kind` says under `plan` on the server; while it is busy with another
    /// measurement (503), waits and asks again, up to [`BUSY_WAIT`].
    pub fn measure(&self, model: &[u8], kind: ModelKind, plan: &TimingPlan) -> Result<Measured> {
        let header = serde_json::to_string(&MeasureRequest { model: kind, plan: *plan }).expect("plain data");
        let start = Instant::now();
        loop {
            let request = self
                .authorised(self.agent.post(format!("{}/v1/measure", self.url)))
                .header(MEASURE_HEADER, &header)
                .header("Expect", "100-continue")
                .content_type("application/octet-stream");
            match self.answer(request.send(model)) {
                Err(InferError::Remote { reason, .. }) if reason.starts_with("503") && start.elapsed() < BUSY_WAIT => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
                Ok(text) => {
                    return serde_json::from_str(&text)
                        .map_err(|e| self.error(format!("an unreadable measurement: {e}")));
                }
            }
        }
    }

    fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => request.header("Authorization", format!("Bearer {t}")),
            None => request,
        }
    }

    fn error(&self, reason: String) -> InferError {
        InferError::Remote { url: self.url.clone(), reason }
    }

    /// The body of a 200 answer; any other outcome as an error naming the status and the
    /// server's own message.
    fn answer(&self, result: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<String> {
        let mut response = result.map_err(|e| self.error(format!("no answer ({e})")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| self.error(format!("a broken answer (status {status}: {e})")))?;
        if status == 200 {
            return Ok(text);
        }
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.chars().take(300).collect());
        let hint = match status {
            401 => format!(" (give its token with --remote-token or {TOKEN_ENV})"),
            _ => String::new(),
        };
        Err(self.error(format!("{status} {message}{hint}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_tokens_never_printed() {
        let r = Remote::new("http://127.0.0.1:9/", Some("secret".into())).unwrap();
        assert_eq!(r.url(), "http://127.0.0.1:9");
        assert!(!format!("{r:?}").contains("secret"));
        for bad in ["", "127.0.0.1:9", "https://host:1", "http://", "http://a b"] {
            let e = Remote::new(bad, None).unwrap_err().to_string();
            assert!(e.contains("http://HOST:PORT"), "{bad:?}: {e}");
        }
        assert!(Remote::new("http://h:1", Some(" ".into())).unwrap_err().to_string().contains("empty token"));
        assert!(Remote::new(&format!("http://{}", "a".repeat(MAX_URL)), None).is_err());
    }

    #[test]
    fn an_unreachable_server_is_one_error_naming_it() {
        // port 9 (discard) on localhost is closed on a test machine: connection refused at once
        let r = Remote::new("http://127.0.0.1:9", None).unwrap();
        let e = r.info().unwrap_err().to_string();
        assert!(e.starts_with("latency server http://127.0.0.1:9: no answer"), "{e}");
    }

    #[test]
    fn the_request_header_round_trips() {
        let req = MeasureRequest { model: ModelKind::Graph { scale: 255.0 }, plan: TimingPlan::iterations(1, 2) };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<MeasureRequest>(&text).unwrap(), req);
        let det = serde_json::to_string(&ModelKind::Detector).unwrap();
        assert_eq!(det, r#"{"kind":"detector"}"#);
    }
}
