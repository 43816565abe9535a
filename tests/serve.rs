//! examples/serve.rs as a black box: the example binary on a free port, spoken to over plain
//! HTTP/1.1; every answer is checked (status, JSON body, detections against the SDK in-process).
//!
//! The example is not built by `cargo test --test tests`: build it first with
//! `cargo build --no-default-features --features infer --example serve` (same profile).

use crate::util::png_bomb;
use detnas_infer::Detector;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

const MODEL: &str = "models/neon-trees.onnx";
const CONF: f32 = 0.25;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example binary next to this test binary: `target/<profile>/deps/tests-*` ->
/// `target/<profile>/examples/serve`.
fn serve_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join("examples").join(format!("serve{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --no-default-features --features infer --example serve` \
         (add --release when testing with --release)",
        bin.display()
    );
    bin
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    _stdout: BufReader<ChildStdout>,
    stderr: tempfile::NamedTempFile,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(serve_binary())
            .arg(root().join(MODEL))
            .args(["--addr", "127.0.0.1:0", "--threads", "1", "--conf", &CONF.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("serve example starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let mut server = Server { child, addr: String::new(), _stdout: stdout, stderr };
        let addr = line.trim_end().strip_prefix("listening on http://");
        let Some(addr) = addr.map(str::to_owned) else {
            let _ = server.child.kill();
            let _ = server.child.wait();
            panic!("expected `listening on http://ADDR`, got {line:?}; stderr: {}", server.stderr_text());
        };
        assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");
        server.addr = addr;
        server
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    fn post(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        let header = content_type.map(|t| ("Content-Type", t));
        http(&self.addr, "POST", path, header.as_slice(), body)
    }

    fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[], b"")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error answer: this status and `{"error": "...", "status": status}`.
    pub fn assert_error(&self, status: u16, what: &str) -> String {
        assert_eq!(self.status, status, "{what}: {}", String::from_utf8_lossy(&self.body));
        let json = self.json();
        assert_eq!(json["status"], status, "{what}: {json}");
        let message = json["error"].as_str().unwrap_or_else(|| panic!("{what}: no error message: {json}"));
        assert!(!message.is_empty(), "{what}: empty error message");
        message.to_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), the answer read to the end.
pub(crate) fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method == "POST" {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    // A server may answer before reading the whole body; the answer is read even if sending failed.
    let sent = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        panic!("{method} {path}: reading the answer failed: {e} (sending: {sent:?})");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer (sending: {sent:?}): {raw:?}"));
    let text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect(status_line);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.1.parse().unwrap();
        assert_eq!(body.len(), len, "{method} {path}: body length");
        body.truncate(len);
    }
    Reply { status, headers, body }
}

fn samples() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("models/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no sample JPEG in models/samples");
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// The in-process SDK with the server's settings.
fn reference() -> Detector {
    Detector::builder().threads(1).confidence(CONF).load(root().join(MODEL)).expect("model loads")
}

/// Asserts the server's JSON is the SDK's answer for the same bytes: same size, labels and
/// warnings, boxes within 1e-3, scores within 1e-4.
fn assert_same_detections(what: &str, reply: &Reply, reference: &Detector, bytes: &[u8]) {
    assert_eq!(reply.status, 200, "{what}: {}", String::from_utf8_lossy(&reply.body));
    let got = reply.json();
    let want = reference.detect_bytes(bytes, what).unwrap();
    assert_eq!(got["width"], want.width, "{what}");
    assert_eq!(got["height"], want.height, "{what}");
    let warnings = got.get("warnings").cloned().unwrap_or(serde_json::json!([]));
    assert_eq!(warnings, serde_json::to_value(&want.warnings).unwrap(), "{what}");
    let dets = got["detections"].as_array().unwrap_or_else(|| panic!("{what}: no detections array: {got}"));
    assert_eq!(dets.len(), want.detections.len(), "{what}: number of detections");
    for (g, w) in dets.iter().zip(&want.detections) {
        assert_eq!(g["class_id"], w.class_id, "{what}");
        assert_eq!(g["class_name"], w.class_name.as_str(), "{what}");
        assert!((g["score"].as_f64().unwrap() as f32 - w.score).abs() < 1e-4, "{what}: {g} vs {w:?}");
        let bbox: Vec<f32> = g["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(bbox.len(), 4, "{what}");
        for (a, b) in bbox.iter().zip(&w.bbox) {
            assert!((a - b).abs() < 1e-3, "{what}: {bbox:?} vs {:?}", w.bbox);
        }
    }
}

/// Deterministic bytes that match no image signature.
fn garbage(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    bytes[0] = 0x00;
    bytes
}

/// A JPEG whose start-of-frame declares 0 x 0 pixels (the sample with its SOF0 size zeroed).
fn zero_size_jpeg(jpeg: &[u8]) -> Vec<u8> {
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("baseline JPEG sample");
    let mut bytes = jpeg.to_vec();
    bytes[sof + 5..sof + 9].fill(0); // FF C0, length (2), precision (1), height (2), width (2)
    bytes
}

#[test]
fn serve_answers_detections_and_typed_errors() {
    let server = Server::start(&["--max-body", "100000"]);
    let reference = reference();

    assert_eq!(server.get("/health").json(), serde_json::json!({ "status": "ok" }));
    let info = server.get("/info").json();
    assert_eq!(info["class_names"], serde_json::json!(["tree"]), "{info}");
    assert_eq!(info["input"], serde_json::json!({ "width": 416, "height": 416 }), "{info}");
    assert!(info["provider"].as_str().unwrap().starts_with("CPUExecutionProvider"), "{info}");
    assert!(!info["arch"].as_str().unwrap().is_empty(), "{info}");

    let samples = samples();
    for (name, bytes) in &samples {
        for content_type in [Some("image/jpeg"), Some("application/octet-stream"), None] {
            let reply = server.post("/detect", content_type, bytes);
            assert_same_detections(&format!("{name} as {content_type:?}"), &reply, &reference, bytes);
        }
        assert!(!reply_detections(&server.post("/detect", Some("image/jpeg"), bytes)).is_empty(), "{name}");
    }
    let jpeg = &samples[0].1;

    // Not an image: 415.
    let msg = server.post("/detect", Some("text/plain"), b"hello, detector").assert_error(415, "text/plain");
    assert!(msg.contains("Content-Type") && msg.contains("text/plain"), "{msg}");
    let msg = server.post("/detect", Some("application/octet-stream"), &garbage(5000)).assert_error(415, "garbage");
    assert!(msg.contains("unknown format"), "{msg}");
    let msg = server.post("/detect", Some("application/octet-stream"), b"").assert_error(415, "empty body");
    assert!(msg.contains("empty"), "{msg}");
    server.post("/detect", Some("application/json"), b"{}").assert_error(415, "application/json");

    // A truncated JPEG still decodes (the SDK is lenient): 200 with a `truncated_jpeg` warning and
    // the SDK's detections on the same bytes.
    let truncated = &jpeg[..jpeg.len() * 2 / 5];
    let reply = server.post("/detect", Some("image/jpeg"), truncated);
    assert_same_detections("truncated JPEG", &reply, &reference, truncated);
    assert_eq!(reply.json()["warnings"], serde_json::json!([{ "kind": "truncated_jpeg" }]));

    // Decodable formats with impossible headers: 422.
    let msg = server.post("/detect", Some("image/jpeg"), &zero_size_jpeg(jpeg)).assert_error(422, "0x0 JPEG");
    assert!(msg.contains("zero-size"), "{msg}");
    let msg = server.post("/detect", Some("image/png"), &png_bomb()).assert_error(422, "PNG bomb");
    assert!(msg.contains("100000x100000"), "{msg}");

    // Over --max-body: 413, as JSON.
    let big: Vec<u8> = jpeg.iter().cycle().take(150_000).copied().collect();
    let msg = server.post("/detect", Some("image/jpeg"), &big).assert_error(413, "over --max-body");
    assert!(msg.contains("100000"), "{msg}");

    // Routing.
    server.get("/nope").assert_error(404, "unknown route");
    let reply = server.get("/detect");
    reply.assert_error(405, "GET /detect");
    assert_eq!(reply.header("allow"), Some("POST"));

    // Still serving after all of that.
    assert_same_detections("after errors", &server.post("/detect", None, jpeg), &reference, jpeg);
}

fn reply_detections(reply: &Reply) -> Vec<Value> {
    reply.json()["detections"].as_array().cloned().unwrap_or_default()
}

#[test]
fn serve_sheds_load_with_503_and_answers_every_request() {
    let server = Server::start(&["--sessions", "1", "--queue", "0"]);
    let reference = reference();
    let jpeg = std::sync::Arc::new(samples().remove(0).1);
    let start = std::sync::Arc::new(std::sync::Barrier::new(12));
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let (addr, jpeg, start) = (server.addr.clone(), jpeg.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                http(&addr, "POST", "/detect", &[("Content-Type", "image/jpeg")], &jpeg)
            })
        })
        .collect();
    let replies: Vec<Reply> = handles.into_iter().map(|h| h.join().expect("every request is answered")).collect();
    let mut ok = 0;
    for (i, reply) in replies.iter().enumerate() {
        match reply.status {
            200 => {
                assert_same_detections(&format!("request {i}"), reply, &reference, &jpeg);
                ok += 1;
            }
            503 => {
                reply.assert_error(503, "shed");
                assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
            }
            other => panic!("request {i}: status {other}: {}", String::from_utf8_lossy(&reply.body)),
        }
    }
    assert!(ok >= 1, "at least one request is served; stderr: {}", server.stderr_text());
    eprintln!("overload: {ok} of 12 served, {} shed", 12 - ok);
}
