#!/usr/bin/env python3
"""Load test of examples/serve.rs (Python 3 standard library only).

Starts the server itself on a free port, asks it once, one request at a time, for the expected
answer to every sample image (and to a truncated JPEG), then for each concurrency level runs that
many closed-loop clients for --seconds, a fraction of whose requests are bad inputs:

    text       Content-Type: text/plain            -> 415
    garbage    random bytes, octet-stream          -> 415
    zero_size  JPEG whose header declares 0x0      -> 422
    oversize   body of --max-body + 1 bytes        -> 413
    truncated  first 40% of a sample JPEG          -> 200 with a truncated_jpeg warning

Every answer is checked: a good request must get 200 with exactly the expected detections, or 503
(shed, with Retry-After); a bad one its expected code, or 503 (text is refused before admission, so
never 503). Anything else is a wrong answer; a request without an answer (connection error,
timeout) is lost. Each request uses a fresh connection (Connection: close), so a connection the
server closed after an error cannot be mistaken for a lost request.

The server's VmRSS/VmHWM are sampled from /proc/PID/status every 0.2 s. Prints a Markdown table per
level and writes the results as JSON. Exits non-zero if any answer was wrong or lost, or the server
died.

    python3 tools/loadtest_serve.py target/release/examples/serve models/neon-trees.onnx \\
        models/samples --sessions 1 --threads 2 --levels 1,4,16 --seconds 10 --out results.json
"""

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
BAD_KINDS = ("text", "garbage", "zero_size", "oversize", "truncated")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("server", help="the serve example binary (target/release/examples/serve)")
    p.add_argument("model", help="exported ONNX model")
    p.add_argument("samples", help="folder of sample images (the good requests)")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each level (default 10)")
    p.add_argument("--levels", default="1,4,16", help="concurrent clients per level (default 1,4,16)")
    p.add_argument("--bad-fraction", type=float, default=0.1, help="share of bad requests (default 0.1)")
    p.add_argument("--sessions", type=int, default=1, help="server --sessions (default 1)")
    p.add_argument("--threads", type=int, default=None, help="server --threads (default: the server's)")
    p.add_argument("--queue", type=int, default=16, help="server --queue (default 16)")
    p.add_argument("--max-body", type=int, default=4 << 20, help="server --max-body (default 4 MiB)")
    p.add_argument("--conf", type=float, default=0.25, help="server --conf (default 0.25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p.add_argument("--out", default="results.json", help="JSON results (default results.json)")
    args = p.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if not args.levels or min(args.levels) < 1:
        p.error("--levels: positive integers, e.g. 1,4,16")
    if not 0.0 <= args.bad_fraction <= 1.0:
        p.error("--bad-fraction: between 0 and 1")
    return args


class Server:
    """The serve binary on 127.0.0.1 with a free port."""

    def __init__(self, args):
        cmd = [args.server, args.model, "--addr", "127.0.0.1:0", "--sessions", str(args.sessions),
               "--queue", str(args.queue), "--max-body", str(args.max_body), "--conf", str(args.conf)]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        self.cmd = cmd
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr)
        line = self.proc.stdout.readline().decode(errors="replace").strip()
        prefix = "listening on http://"
        if not line.startswith(prefix):
            self.proc.kill()
            self.proc.wait()
            sys.exit(f"server did not start: {line!r}\n{self.stderr_text()}")
        host, port = line[len(prefix):].rsplit(":", 1)
        self.host, self.port = host, int(port)

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM, then the exit code (None if it had to be killed)."""
        if not self.alive():
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def request(server, method, path, body=None, content_type=None, timeout=60.0):
    """One request on a fresh connection: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        if content_type:
            headers["Content-Type"] = content_type
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def comparable(answer):
    """A detection answer without its timings (which vary)."""
    return {k: answer.get(k, []) if k == "warnings" else answer[k] for k in ("detections", "width", "height", "warnings")}


def zero_size_jpeg(jpeg):
    sof = jpeg.find(b"\xff\xc0")
    if sof < 0:
        raise SystemExit("the first sample is not a baseline JPEG (no SOF0): cannot make a 0x0 JPEG")
    return jpeg[: sof + 5] + b"\x00\x00\x00\x00" + jpeg[sof + 9:]


class Inputs:
    """Good samples with their expected answers, and the bad inputs with theirs."""

    def __init__(self, args, server):
        names = sorted(n for n in os.listdir(args.samples) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            sys.exit(f"no images in {args.samples}")
        self.good = []  # (name, bytes, expected comparable answer)
        for name in names:
            with open(os.path.join(args.samples, name), "rb") as f:
                data = f.read()
            status, _, body = request(server, "POST", "/detect", data, "application/octet-stream", args.timeout)
            if status != 200:
                sys.exit(f"{name}: expected 200 when alone, got {status}: {body[:300]!r}")
            self.good.append((name, data, comparable(json.loads(body))))
        jpegs = [data for name, data, _ in self.good if data[:2] == b"\xff\xd8"]
        if not jpegs:
            sys.exit(f"no JPEG in {args.samples}: needed for the truncated and 0x0 inputs")
        jpeg = jpegs[0]
        rng = random.Random(args.seed)
        garbage = bytes([0]) + bytes(rng.getrandbits(8) for _ in range(4999))
        truncated = jpeg[: len(jpeg) * 2 // 5]
        status, _, body = request(server, "POST", "/detect", truncated, "image/jpeg", args.timeout)
        if status != 200:
            sys.exit(f"truncated JPEG: expected 200 with a warning when alone, got {status}: {body[:300]!r}")
        truncated_answer = comparable(json.loads(body))
        if truncated_answer["warnings"] != [{"kind": "truncated_jpeg"}]:
            sys.exit(f"truncated JPEG: expected a truncated_jpeg warning, got {truncated_answer['warnings']}")
        # kind -> (body, content type, expected status, expected comparable answer for a 200)
        self.bad = {
            "text": (b"this is not an image\n" * 20, "text/plain", 415, None),
            "garbage": (garbage, "application/octet-stream", 415, None),
            "zero_size": (zero_size_jpeg(jpeg), "image/jpeg", 422, None),
            "oversize": (b"\xff" * (args.max_body + 1), "application/octet-stream", 413, None),
            "truncated": (truncated, "image/jpeg", 200, truncated_answer),
        }
        # text is refused on its Content-Type, before admission: never shed.
        self.never_shed = {"text"}


def check_answer(status, headers, body, expected_status, expected_answer, can_shed):
    """None if the answer is right, else why not. Returns ("shed", None) for a 503."""
    if status == 503 and can_shed:
        if headers.get("retry-after") != "1":
            return "503 without Retry-After: 1"
        return "shed"
    if status != expected_status:
        return f"status {status}, expected {expected_status}: {body[:200]!r}"
    try:
        data = json.loads(body)
    except ValueError:
        return f"status {status} with a body that is not JSON: {body[:200]!r}"
    if expected_answer is not None:
        if comparable(data) != expected_answer:
            return "detections differ from the expected answer"
    elif data.get("status") != status or not isinstance(data.get("error"), str):
        return f"error body is not {{error, status}}: {data}"
    return None


class MemorySampler(threading.Thread):
    """VmRSS / VmHWM of a process every 0.2 s (kB)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/status"
        self.lock = threading.Lock()
        self.peak_rss = 0
        self.hwm = 0
        self.stopped = threading.Event()

    def read(self):
        try:
            with open(self.path) as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            return None
        kb = lambda k: int(fields[k].split()[0]) if k in fields else 0  # noqa: E731
        return kb("VmRSS"), kb("VmHWM")

    def run(self):
        while not self.stopped.is_set():
            sample = self.read()
            if sample:
                with self.lock:
                    self.peak_rss = max(self.peak_rss, sample[0])
                    self.hwm = max(self.hwm, sample[1])
            self.stopped.wait(0.2)

    def take_peak(self):
        """The highest VmRSS since the last call (and resets it), and VmHWM so far."""
        with self.lock:
            peak, self.peak_rss = self.peak_rss, 0
            return peak, self.hwm


def run_level(args, server, inputs, clients, level_seed):
    """`clients` closed-loop clients for args.seconds; returns the level's statistics."""
    lock = threading.Lock()
    stats = {"requests": 0, "good": 0, "good_ok": 0, "shed": 0, "bad": 0, "bad_ok": 0, "wrong": 0, "lost": 0}
    latencies = []  # seconds, answered good requests (200)
    problems = []
    deadline = time.monotonic() + args.seconds

    def client(index):
        rng = random.Random(level_seed * 1000 + index)
        while time.monotonic() < deadline:
            if rng.random() < args.bad_fraction:
                kind = rng.choice(BAD_KINDS)
                body, ctype, want_status, want_answer = inputs.bad[kind]
                can_shed = kind not in inputs.never_shed
                label = kind
            else:
                name, body, want_answer = rng.choice(inputs.good)
                ctype, want_status, can_shed, kind, label = "image/jpeg", 200, True, None, name
            t0 = time.perf_counter()
            try:
                status, headers, data = request(server, "POST", "/detect", body, ctype, args.timeout)
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    stats["requests"] += 1
                    stats["lost"] += 1
                    problems.append(f"lost ({label}): {type(e).__name__}: {e}")
                continue
            elapsed = time.perf_counter() - t0
            verdict = check_answer(status, headers, data, want_status, want_answer, can_shed)
            with lock:
                stats["requests"] += 1
                stats["bad" if kind else "good"] += 1
                if verdict == "shed":
                    stats["shed"] += 1
                elif verdict is not None:
                    stats["wrong"] += 1
                    problems.append(f"wrong ({label}): {verdict}")
                elif kind:
                    stats["bad_ok"] += 1
                else:
                    stats["good_ok"] += 1
                    latencies.append(elapsed)

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    stats["clients"] = clients
    stats["seconds"] = round(wall, 2)
    stats["good_per_s"] = round(stats["good_ok"] / wall, 2)
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        stats["p50_ms"] = round(statistics.median(latencies) * 1e3, 1)
        stats["p99_ms"] = round(q[98] * 1e3, 1)
    else:
        stats["p50_ms"] = stats["p99_ms"] = round(latencies[0] * 1e3, 1) if latencies else None
    stats["problems"] = problems[:20]
    return stats


def markdown(config, levels):
    lines = [
        f"Server: {config}",
        "",
        "| clients | requests | good 200 | good req/s | p50 ms | p99 ms | 503 shed | bad answered | wrong | lost | peak RSS MiB |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in levels:
        lines.append(
            f"| {s['clients']} | {s['requests']} | {s['good_ok']} | {s['good_per_s']:.1f} | {s['p50_ms']} | "
            f"{s['p99_ms']} | {s['shed']} | {s['bad_ok']}/{s['bad']} | {s['wrong']} | {s['lost']} | "
            f"{s['peak_rss_kb'] / 1024:.1f} |"
        )
    return "\n".join(lines)


def main():
    args = parse_args()
    server = Server(args)
    sampler = MemorySampler(server.proc.pid)
    sampler.start()
    failed = False
    results = {"command": server.cmd, "levels": []}
    try:
        inputs = Inputs(args, server)
        idle_rss, _ = sampler.read() or (0, 0)
        results["idle_rss_kb"] = idle_rss
        sampler.take_peak()
        for n, clients in enumerate(args.levels):
            stats = run_level(args, server, inputs, clients, args.seed + n + 1)
            time.sleep(0.25)  # one more memory sample after the last answers
            stats["peak_rss_kb"], stats["hwm_kb"] = sampler.take_peak()
            results["levels"].append(stats)
            for p in stats["problems"]:
                print(f"  level {clients}: {p}", file=sys.stderr)
            if stats["wrong"] or stats["lost"]:
                failed = True
            if not server.alive():
                print(f"server died during level {clients}:\n{server.stderr_text()}", file=sys.stderr)
                failed = True
                break
        if server.alive():
            status, _, body = request(server, "GET", "/health", timeout=args.timeout)
            if status != 200 or json.loads(body) != {"status": "ok"}:
                print(f"/health after the load: {status} {body!r}", file=sys.stderr)
                failed = True
    finally:
        sampler.stopped.set()
        code = server.stop()
        results["exit_code_after_sigterm"] = code
        if code != 0:
            print(f"server exit code after SIGTERM: {code}\n{server.stderr_text()}", file=sys.stderr)
            failed = True
    results["vm_hwm_kb"] = sampler.hwm
    config = f"--sessions {args.sessions} --threads {args.threads or 'default'} --queue {args.queue} " \
             f"--max-body {args.max_body}; bad fraction {args.bad_fraction}; {args.seconds:g} s per level"
    results["config"] = config
    results["failed"] = failed
    table = markdown(config, results["levels"])
    print(table)
    print(f"\nidle RSS {results['idle_rss_kb'] / 1024:.1f} MiB, VmHWM {sampler.hwm / 1024:.1f} MiB; "
          f"exit code after SIGTERM {code}")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
