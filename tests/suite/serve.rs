//! `stockade serve` end to end: the real binary on a loopback port (and a Unix socket), the real
//! engine, real clients (curl, Python's standard library, a raw `TcpStream` for the event
//! stream). Each test starts its own server over its own state directory, with its own tokens,
//! and removes what it created.
//!
//! Proofs are by order and by record, never by the clock: a streamed line is shown to arrive
//! while its command runs because the command cannot end before the test, having read that line
//! and seen the sandbox busy, releases it; every wait is a hang guard with a generous bound.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::Digest;

use super::common::{self, docker_available, output_within, unique, validate_result, Env};
use crate::require_docker;

/// The longest any one wait may take before the test calls it a hang (never a speed claim).
const HANG: Duration = Duration::from_secs(120);

const PYTHON_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/api_client.py");

// ---- the server under test -------------------------------------------------------------------

/// Creates a token for principal `name` and returns it (printed alone on stdout).
fn token(env: &Env, name: &str, scope: &str) -> String {
    let out = env
        .cmd()
        .args(["token", "create", "--name", name, "--scope", scope])
        .output()
        .expect("run stockade token create");
    assert!(
        out.status.success(),
        "token create: {}",
        common::stderr(&out)
    );
    let token = common::stdout(&out).trim().to_string();
    assert!(token.starts_with("stk_"), "not a token: {token:?}");
    token
}

/// A running `stockade serve`; stopped (SIGTERM, then KILL after a bound) and its containers
/// removed when dropped.
struct Server {
    child: Mutex<Option<Child>>,
    pid: i32,
    /// `127.0.0.1:PORT`.
    addr: String,
    base: String,
    socket: Option<PathBuf>,
    state_id: String,
    log: Arc<Mutex<String>>,
    scratch: tempfile::TempDir,
}

/// Which door a request goes through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Tcp,
    Unix,
}

/// One HTTP response as curl saw it.
#[derive(Debug)]
struct Resp {
    status: u16,
    /// The final header block (lowercase names).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {:?}",
                self.status,
                self.text().chars().take(500).collect::<String>()
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    /// The JSON body of a response that must have `status`.
    fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status: {}",
            self.text().chars().take(1000).collect::<String>()
        );
        self.json()
    }
}

/// Asserts an error response: `status`, JSON, exactly `{"error": {"code", "message"}}`.
fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "an error that is not JSON: {:?} {:?}",
        resp.headers,
        resp.text()
    );
    let v = resp.json();
    let outer: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(outer, ["error"], "{v}");
    let inner = v["error"].as_object().expect("error is an object");
    let keys: BTreeSet<&str> = inner.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["code", "message"]), "{v}");
    assert!(
        inner["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    if !code.is_empty() {
        assert_eq!(inner["code"], code, "{v}");
    }
}

impl Server {
    /// Starts `stockade serve --listen 127.0.0.1:0 EXTRA...` and waits until it listens.
    fn start(env: &Env, extra: &[&str]) -> Server {
        let socket = extra
            .iter()
            .position(|a| *a == "--socket")
            .map(|i| PathBuf::from(extra[i + 1]));
        let mut child = env
            .cmd()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stockade serve");
        let pid = child.id() as i32;
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            // Drains stderr for as long as the server runs, so a full pipe never stalls it.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(a) = line.strip_prefix("stockade: listening on ") {
                        let _ = tx.send(a.to_string());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut server = Server {
            child: Mutex::new(Some(child)),
            pid,
            addr: String::new(),
            base: String::new(),
            socket: socket.clone(),
            state_id: String::new(),
            log,
            scratch: tempfile::tempdir().expect("tempdir"),
        };
        let mut unix_seen = socket.is_none();
        while server.addr.is_empty() || !unix_seen {
            match rx.recv_timeout(HANG) {
                Ok(a) => {
                    if let Some(addr) = a.strip_prefix("http://") {
                        server.addr = addr.to_string();
                        server.base = a.clone();
                    } else if a.starts_with("unix:") {
                        unix_seen = true;
                    }
                }
                Err(e) => panic!(
                    "the server never said it listens ({e}): {}",
                    server.log.lock().unwrap()
                ),
            }
        }
        server.state_id = stockade::plan::state_id(&env.state_dir());
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A curl command for one request; its headers and body land in the scratch directory.
    fn curl_cmd(
        &self,
        via: Via,
        method: &str,
        path: &str,
        token: Option<&str>,
        args: &[&str],
    ) -> (Command, PathBuf, PathBuf) {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let head = self.scratch.path().join(format!("h{n}"));
        let body = self.scratch.path().join(format!("b{n}"));
        let mut cmd = Command::new("curl");
        // --max-time is curl's own hang guard.
        cmd.args([
            "-sS",
            "--max-time",
            "180",
            "-X",
            method,
            "-w",
            "%{http_code}",
        ])
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body);
        if let Some(t) = token {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        cmd.args(args);
        match via {
            Via::Tcp => cmd.arg(format!("{}{path}", self.base)),
            Via::Unix => cmd
                .arg("--unix-socket")
                .arg(self.socket.as_ref().expect("started without --socket"))
                .arg(format!("http://localhost{path}")),
        };
        cmd.stdin(Stdio::null());
        (cmd, head, body)
    }

    fn curl(&self, via: Via, method: &str, path: &str, token: Option<&str>, args: &[&str]) -> Resp {
        let (mut cmd, head, body) = self.curl_cmd(via, method, path, token, args);
        let out = cmd.output().expect("run curl");
        assert!(
            out.status.success(),
            "curl {method} {path}: {}",
            common::stderr(&out)
        );
        read_resp(&out.stdout, &head, &body)
    }

    fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.curl(Via::Tcp, "GET", path, token, &[])
    }

    fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.curl(Via::Tcp, "DELETE", path, token, &[])
    }

    fn send_json(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let text = body.to_string();
        self.curl(
            Via::Tcp,
            method,
            path,
            token,
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &text,
            ],
        )
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send_json("POST", path, Some(token), body)
    }

    /// Creates a sandbox and returns its id.
    fn sandbox(&self, token: &str) -> String {
        let v = self.post("/v1/sandboxes", token, &json!({})).expect(201);
        v["id"].as_str().expect("an id").to_string()
    }

    /// Runs `body` in sandbox `id` and returns the validated result.
    fn exec(&self, id: &str, token: &str, body: &Value) -> Value {
        let v = self
            .post(&format!("/v1/sandboxes/{id}/exec"), token, body)
            .expect(200);
        validate_result(&v);
        v
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// Waits for the server to exit (a hang guard: killed and failed past `bound`).
    fn wait_exit(&self, bound: Duration) -> ExitStatus {
        let until = Instant::now() + bound;
        let mut guard = self.child.lock().unwrap();
        let child = guard.as_mut().expect("the server was already reaped");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                guard.take();
                return status;
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                guard.take();
                drop(guard);
                panic!(
                    "the server still ran {bound:?} after SIGTERM: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The names of this state directory's containers (any state), with extra `label=` filters.
    fn containers(&self, labels: &[&str]) -> Vec<String> {
        let mut cmd = Command::new("docker");
        cmd.args(["ps", "-a", "--format", "{{.Names}}"])
            .args(["--filter", "label=org.stockade.managed=1"])
            .args([
                "--filter",
                &format!("label=org.stockade.state={}", self.state_id),
            ]);
        for l in labels {
            cmd.args(["--filter", &format!("label={l}")]);
        }
        let out = cmd.output().expect("docker ps");
        assert!(out.status.success(), "docker ps: {}", common::stderr(&out));
        common::stdout(&out).lines().map(str::to_string).collect()
    }

    /// Containers of this state directory the engine created in `[since, until]` (seconds since
    /// the epoch), from the engine's own event log.
    fn created_between(&self, since: f64, until: f64) -> Vec<String> {
        let out = Command::new("docker")
            .args(["events", "--format", "{{.Actor.Attributes.name}}"])
            .args([
                "--since",
                &format!("{since:.3}"),
                "--until",
                &format!("{until:.3}"),
            ])
            .args(["--filter", "type=container", "--filter", "event=create"])
            .args([
                "--filter",
                &format!("label=org.stockade.state={}", self.state_id),
            ])
            .output()
            .expect("docker events");
        assert!(
            out.status.success(),
            "docker events: {}",
            common::stderr(&out)
        );
        common::stdout(&out).lines().map(str::to_string).collect()
    }
}

fn read_resp(status: &[u8], head: &Path, body: &Path) -> Resp {
    let status = String::from_utf8_lossy(status).trim().parse().unwrap_or(0);
    let head_text = std::fs::read_to_string(head).unwrap_or_default();
    let body_bytes = std::fs::read(body).unwrap_or_default();
    let _ = std::fs::remove_file(head);
    let _ = std::fs::remove_file(body);
    // curl writes every header block (a 100 Continue first): the last one is the response's.
    let block = head_text
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or_default();
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body_bytes,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = self.child.lock().map(|mut c| c.take()).unwrap_or(None);
        if let Some(mut child) = child {
            self.terminate();
            let until = Instant::now() + Duration::from_secs(60);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if docker_available() && !self.state_id.is_empty() {
            let names = self.containers(&[]);
            if !names.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&names)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

// ---- an event-stream client on a raw TcpStream -----------------------------------------------

/// An `application/x-ndjson` response read one event at a time, as the bytes arrive.
struct EventStream {
    reader: BufReader<TcpStream>,
    status: u16,
    head: String,
    chunked: bool,
    pending: Vec<u8>,
    ended: bool,
}

impl EventStream {
    fn open(server: &Server, path: &str, token: &str, body: &Value) -> EventStream {
        let stream = TcpStream::connect(&server.addr).expect("connect");
        stream.set_read_timeout(Some(HANG)).unwrap();
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nAccept: application/x-ndjson\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.addr,
            body.len()
        );
        (&stream).write_all(request.as_bytes()).expect("send");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .expect("read the response head (a hang?)");
            assert!(n > 0, "closed before the headers: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        EventStream {
            reader,
            status,
            head,
            chunked,
            pending: Vec::new(),
            ended: false,
        }
    }

    /// Reads more of the body; false at its end.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        if self.chunked {
            let mut size = String::new();
            self.reader
                .read_line(&mut size)
                .expect("read a chunk size (a hang?)");
            let size = size.trim().split(';').next().unwrap_or_default();
            let n = usize::from_str_radix(size, 16)
                .unwrap_or_else(|e| panic!("a bad chunk size {size:?}: {e}"));
            if n == 0 {
                self.ended = true;
                return false;
            }
            let mut chunk = vec![0; n + 2];
            self.reader
                .read_exact(&mut chunk)
                .expect("read a chunk (a hang?)");
            chunk.truncate(n);
            self.pending.extend_from_slice(&chunk);
        } else {
            let mut buf = [0u8; 8192];
            let n = self.reader.read(&mut buf).expect("read (a hang?)");
            if n == 0 {
                self.ended = true;
                return false;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
        true
    }

    /// The next event, or `None` at the end of the stream.
    fn next_event(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!("not an event ({e}): {:?}", String::from_utf8_lossy(&line))
                }));
            }
            if !self.fill() {
                assert!(
                    self.pending.is_empty(),
                    "a partial event at the end: {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
                return None;
            }
        }
    }
}

/// The exec result an `exit` event carries (the event without its `type`).
fn exit_result(event: &Value) -> Value {
    assert_eq!(event["type"], "exit", "{event}");
    let mut result = event.clone();
    result.as_object_mut().unwrap().remove("type");
    validate_result(&result);
    result
}

// ---- small helpers ---------------------------------------------------------------------------

/// Polls `ready` until it holds; fails after the hang bound.
fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + HANG;
    while !ready() {
        assert!(
            Instant::now() < until,
            "{what}: still not so after {HANG:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `stockade audit verify` passes over both logs (`why`: what would have broken them).
fn assert_chains_verify(env: &Env, why: &str) {
    let out = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{why}: {}", common::stdout(&out));
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n);
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(n as u64)
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The value of the Prometheus sample `name` (with its labels, as rendered).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The exec log's start and finish records by execution id.
fn audit_by_id(env: &Env) -> HashMap<String, (Option<Value>, Option<Value>)> {
    let mut by_id: HashMap<String, (Option<Value>, Option<Value>)> = HashMap::new();
    for r in env.audit_records() {
        let Some(id) = r["id"].as_str().map(str::to_string) else {
            continue;
        };
        let entry = by_id.entry(id).or_default();
        match r["kind"].as_str() {
            Some("start") => entry.0 = Some(r),
            Some("finish") => entry.1 = Some(r),
            _ => {}
        }
    }
    by_id
}

/// The auth log through `stockade audit tail --auth --json`, once `ready` holds for it (the
/// server writes auth events off the request path, so a record trails its answer).
fn auth_events_once(env: &Env, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    eventually(what, || {
        events = auth_events(env);
        ready(&events)
    });
    events
}

/// The auth log as it is now.
fn auth_events(env: &Env) -> Vec<Value> {
    let out = env
        .cmd()
        .args(["audit", "tail", "--auth", "--json", "-n", "100000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit tail --auth: {}",
        common::stderr(&out)
    );
    common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

// ---- the tests -------------------------------------------------------------------------------

#[test]
fn serve_routes_answer_with_their_documented_status_codes() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let admin = token(&env, "root", "admin");
    let server = Server::start(&env, &["--max-body-bytes", "4096"]);

    // No token needed for liveness, readiness and the document.
    let r = server.get("/healthz", None);
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(
        server.get("/readyz", None).expect(200),
        json!({"ready": true})
    );
    let doc = server.get("/v1/openapi.json", None).expect(200);
    let on_disk: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert_eq!(doc, on_disk, "the served document is not docs/openapi.json");

    // Everything else needs one: missing or invalid is 401, said as an error.
    let r = server.get("/v1/version", None);
    assert_error(&r, 401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_error(
        &server.get("/v1/version", Some("stk_not-a-token")),
        401,
        "unauthorized",
    );
    let v = server.get("/v1/version", Some(&alice)).expect(200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["api"], "v1");
    assert_eq!(v["backend"], "docker");
    assert!(v["agent_protocol"].is_u64(), "{v}");

    // Unknown routes, with a token or without.
    assert_error(&server.get("/v1/nope", Some(&alice)), 404, "not_found");
    assert_error(&server.get("/nope", None), 404, "not_found");
    // A route that exists, with a method it does not take.
    let r = server.delete("/v1/version", Some(&alice));
    assert_error(&r, 405, "");
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        r.headers
    );

    // Create: 201 with what a sandbox is.
    let created = server
        .post(
            "/v1/sandboxes",
            &alice,
            &json!({"ttl": "1h", "labels": {"team": "a"}}),
        )
        .expect(201);
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sbx-"), "{created}");
    assert_eq!(created["owner"], "alice");
    assert_eq!(created["profile"], "default");
    assert_eq!(created["labels"], json!({"team": "a"}));
    assert_eq!(created["state"], "running");
    for key in ["created_at", "expires_at"] {
        let t = created[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {created}"));
        assert!(
            t.ends_with('Z') && t.contains('T'),
            "{key} is not RFC 3339: {t}"
        );
    }
    assert!(created["expires_at"].as_str() > created["created_at"].as_str());
    // Bodies it does not take.
    assert_error(
        &server.post("/v1/sandboxes", &alice, &json!({"bogus": 1})),
        400,
        "bad_request",
    );
    let r = server.curl(
        Via::Tcp,
        "POST",
        "/v1/sandboxes",
        Some(&alice),
        &["-H", "Content-Type: application/json", "--data-binary", "{"],
    );
    assert_error(&r, 400, "bad_request");
    let huge = json!({"labels": {"k": "v".repeat(8192)}});
    assert_error(
        &server.post("/v1/sandboxes", &alice, &huge),
        413,
        "too_large",
    );
    assert_error(
        &server.post("/v1/sandboxes", &alice, &json!({"ttl": 0})),
        400,
        "bad_request",
    );

    // List and get.
    let list = server.get("/v1/sandboxes", Some(&alice)).expect(200);
    let ids: Vec<&str> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    assert_error(
        &server.get("/v1/sandboxes?all=true", Some(&alice)),
        403,
        "forbidden",
    );
    assert_error(
        &server.get("/v1/sandboxes?all=maybe", Some(&alice)),
        400,
        "",
    );
    let all = server
        .get("/v1/sandboxes?all=true", Some(&admin))
        .expect(200);
    assert_eq!(all["sandboxes"].as_array().unwrap().len(), 1);
    let one = server
        .get(&format!("/v1/sandboxes/{id}"), Some(&alice))
        .expect(200);
    for key in [
        "id",
        "owner",
        "profile",
        "created_at",
        "expires_at",
        "labels",
    ] {
        assert_eq!(one[key], created[key], "{key}");
    }
    assert_eq!(one["busy"], false);
    assert_error(
        &server.get("/v1/sandboxes/sbx-000000000000", Some(&alice)),
        404,
        "not_found",
    );

    // Exec in it, and one-shot.
    let r = server.exec(&id, &alice, &json!({"command": "echo routed"}));
    assert_eq!(
        (r["outcome"].as_str(), r["stdout"].as_str()),
        (Some("completed"), Some("routed\n"))
    );
    assert_eq!(r["session"], id.as_str());
    assert_error(
        &server.post(
            &format!("/v1/sandboxes/{id}/exec"),
            &alice,
            &json!({"command": "true", "argv": ["true"]}),
        ),
        400,
        "bad_request",
    );
    assert_error(
        &server.post(
            &format!("/v1/sandboxes/{id}/exec"),
            &alice,
            &json!({"argv": []}),
        ),
        400,
        "bad_request",
    );
    let r = server
        .post("/v1/exec", &alice, &json!({"command": "echo once"}))
        .expect(200);
    validate_result(&r);
    assert_eq!(
        (r["stdout"].as_str(), &r["session"]),
        (Some("once\n"), &Value::Null)
    );
    assert_error(
        &server.post(
            "/v1/exec",
            &alice,
            &json!({"command": "true", "background": true}),
        ),
        400,
        "bad_request",
    );

    // Files in, out, listed.
    let files = format!("/v1/sandboxes/{id}/files");
    let r = server.curl(
        Via::Tcp,
        "PUT",
        &format!("{files}?path=/workspace/f.txt"),
        Some(&alice),
        &["--data-binary", "file body"],
    );
    let copied = r.expect(201);
    assert_eq!(copied["bytes"], 9);
    assert_eq!(copied["direction"], "in");
    assert_eq!(copied["sha256"], sha256_hex(b"file body"));
    let r = server.get(&format!("{files}?path=/workspace/f.txt"), Some(&alice));
    assert_eq!((r.status, r.text().as_str()), (200, "file body"));
    let listing = server
        .get(&format!("{files}/list?path=/workspace"), Some(&alice))
        .expect(200);
    assert_eq!(
        listing["entries"],
        json!([{"name": "f.txt", "size": 9, "type": "file"}])
    );
    assert_error(
        &server.get(&format!("{files}?path=f.txt"), Some(&alice)),
        400,
        "bad_request",
    );
    assert_error(&server.get(&files, Some(&alice)), 400, "");

    // Background executions that do not exist.
    let execs = format!("/v1/sandboxes/{id}/execs/ex-0000000000000000");
    assert_error(&server.get(&execs, Some(&alice)), 404, "not_found");
    for tail in ["stdin", "kill"] {
        let r = server.curl(
            Via::Tcp,
            "POST",
            &format!("{execs}/{tail}"),
            Some(&alice),
            &[],
        );
        assert_error(&r, 404, "not_found");
    }

    // The audit: an exec token sees its own records; the auth log and verify are admin's.
    let tail = server.get("/v1/audit?limit=2", Some(&alice)).expect(200);
    let records = tail["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{tail}");
    assert_error(
        &server.get("/v1/audit?log=auth", Some(&alice)),
        403,
        "forbidden",
    );
    assert_error(
        &server.get("/v1/audit?log=nope", Some(&admin)),
        400,
        "bad_request",
    );
    assert_error(&server.get("/v1/audit?limit=many", Some(&admin)), 400, "");
    let auth_tail = server
        .get("/v1/audit?log=auth&limit=5", Some(&admin))
        .expect(200);
    assert_eq!(auth_tail["records"].as_array().unwrap().len(), 5);
    assert_error(
        &server.get("/v1/audit/verify", Some(&alice)),
        403,
        "forbidden",
    );
    let verified = server.get("/v1/audit/verify", Some(&admin)).expect(200);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["logs"]["exec"]["ok"], true);
    assert_eq!(verified["logs"]["auth"]["ok"], true);
    assert_error(&server.get("/v1/grants", Some(&alice)), 403, "forbidden");
    assert_eq!(
        server.get("/v1/grants", Some(&admin)).expect(200)["grants"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Metrics: admin only, Prometheus text with the exec and auth counters.
    assert_error(&server.get("/metrics", Some(&alice)), 403, "forbidden");
    let m = server.get("/metrics", Some(&admin));
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(
        m.header("content-type").is_some_and(|t| t.contains("text")),
        "{:?}",
        m.headers
    );
    let text = m.text();
    assert!(text.contains("# TYPE stockade_execs counter"), "{text}");
    assert_eq!(
        metric(
            &text,
            r#"stockade_execs_total{outcome="completed",decision="allow"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "stockade_auth_failures_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "stockade_rate_limited_requests_total"),
        Some(0.0)
    );
    assert_eq!(metric(&text, "stockade_sandboxes_active"), Some(1.0));
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // Delete: 204, then it is gone for every route.
    let r = server.delete(&format!("/v1/sandboxes/{id}"), Some(&alice));
    assert_eq!((r.status, r.body.len()), (204, 0), "{}", r.text());
    assert_error(
        &server.get(&format!("/v1/sandboxes/{id}"), Some(&alice)),
        404,
        "not_found",
    );
    assert_error(
        &server.delete(&format!("/v1/sandboxes/{id}"), Some(&alice)),
        404,
        "not_found",
    );
    assert_error(
        &server.post(
            &format!("/v1/sandboxes/{id}/exec"),
            &alice,
            &json!({"command": "true"}),
        ),
        404,
        "not_found",
    );
    assert!(
        server.containers(&["org.stockade.kind=session"]).is_empty(),
        "a deleted sandbox's container is still there"
    );
}

#[test]
fn serve_runs_argv_and_shell_forms_with_results_of_the_schema() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let server = Server::start(&env, &[]);
    let id = server.sandbox(&alice);

    let r = server.exec(
        &id,
        &alice,
        &json!({"argv": ["python3", "-c", "print('hi there')"]}),
    );
    assert_eq!(r["outcome"], "completed", "{r}");
    assert_eq!(
        (r["exit_code"].as_i64(), r["stdout"].as_str()),
        (Some(0), Some("hi there\n"))
    );
    assert_eq!(r["runner"], "agent");
    assert_eq!(r["stdout_sha256"], sha256_hex(b"hi there\n"));
    // No shell for an argv: its metacharacters are plain bytes, and the record says so quoted.
    let r = server.exec(
        &id,
        &alice,
        &json!({"argv": ["echo", "$HOME;", "`id`", "|", "*"]}),
    );
    assert_eq!(r["stdout"], "$HOME; `id` | *\n");
    assert_eq!(r["command"], r#"echo '$HOME;' '`id`' '|' '*'"#);
    let start = audit_by_id(&env)[r["audit_id"].as_str().unwrap()]
        .0
        .clone()
        .unwrap();
    assert_eq!(start["command"], r["command"]);
    // Shell text.
    let r = server.exec(&id, &alice, &json!({"command": "echo a; echo b"}));
    assert_eq!(r["stdout"], "a\nb\n");
    assert_eq!(r["command"], "echo a; echo b");
    let r = server.exec(
        &id,
        &alice,
        &json!({"command": "echo out; echo err >&2; exit 3"}),
    );
    assert_eq!(
        (r["outcome"].as_str(), r["exit_code"].as_i64()),
        (Some("completed"), Some(3))
    );
    assert_eq!(
        (r["stdout"].as_str(), r["stderr"].as_str()),
        (Some("out\n"), Some("err\n"))
    );
    // Environment, working directory, stdin as text and as bytes.
    let r = server.exec(
        &id,
        &alice,
        &json!({"command": "echo $TZ; pwd", "env": {"TZ": "UTC0"}, "workdir": "/tmp"}),
    );
    assert_eq!(r["stdout"], "UTC0\n/tmp\n", "{r}");
    // A variable the profile does not allow is refused, as a result of its own.
    let r = server.exec(
        &id,
        &alice,
        &json!({"command": "true", "env": {"GREETING": "hey"}}),
    );
    assert_eq!(r["outcome"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("env_allow"), "{r}");
    let r = server.exec(&id, &alice, &json!({"argv": ["cat"], "stdin": "fed\n"}));
    assert_eq!(r["stdout"], "fed\n");
    let bytes = b"\0\x01\xffnul and all\0";
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let r = server.exec(
        &id,
        &alice,
        &json!({"argv": ["sha256sum"], "stdin_base64": b64}),
    );
    assert_eq!(r["stdout"], format!("{}  -\n", sha256_hex(bytes)));
    // A timeout is its own outcome, the same schema.
    let r = server.exec(
        &id,
        &alice,
        &json!({"command": "sleep 60", "timeout": "1s"}),
    );
    assert_eq!(
        (r["outcome"].as_str(), r["timed_out"].as_bool()),
        (Some("timed_out"), Some(true))
    );
    // The one-shot form takes both as well.
    for (body, want) in [
        (
            json!({"argv": ["python3", "-c", "print('hi there')"]}),
            "hi there\n",
        ),
        (json!({"command": "echo a; echo b"}), "a\nb\n"),
    ] {
        let r = server.post("/v1/exec", &alice, &body).expect(200);
        validate_result(&r);
        assert_eq!(
            (r["outcome"].as_str(), r["stdout"].as_str()),
            (Some("completed"), Some(want))
        );
        assert_eq!(r["session"], Value::Null);
    }
    assert!(
        server.containers(&["org.stockade.kind=oneshot"]).is_empty(),
        "a one-shot sandbox outlived its command"
    );
}

#[test]
fn serve_denial_runs_nothing_and_creates_no_container() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let server = Server::start(&env, &[]);

    let before = server.containers(&[]);
    let since = epoch_secs() - 1.0;
    let shell = server
        .post(
            "/v1/exec",
            &alice,
            &json!({"command": "nsenter -t 1 -m sh"}),
        )
        .expect(200);
    let argv = server
        .post(
            "/v1/exec",
            &alice,
            &json!({"argv": ["nsenter", "-t", "1", "-m", "sh"]}),
        )
        .expect(200);
    let until = epoch_secs() + 1.0;
    for r in [&shell, &argv] {
        validate_result(r);
        assert_eq!(r["outcome"], "denied", "{r}");
        assert_eq!(r["decision"], "deny");
        assert_eq!(
            (&r["exit_code"], &r["sandbox"], &r["runner"]),
            (&Value::Null, &Value::Null, &Value::Null)
        );
        let rules: Vec<&str> = r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["id"].as_str())
            .collect();
        assert!(rules.contains(&"ns.nsenter"), "{rules:?}");
        let (start, finish) = audit_by_id(&env)[r["audit_id"].as_str().unwrap()].clone();
        assert_eq!(start.unwrap()["decision"], "deny");
        assert_eq!(finish.unwrap()["outcome"], "denied");
    }
    assert_eq!(
        server.containers(&[]),
        before,
        "a denial changed the containers"
    );
    let created = server.created_between(since, until);
    assert!(
        created.is_empty(),
        "a denial created containers: {created:?}"
    );

    // The same watch sees an allowed one-shot's container come (and go).
    let since = epoch_secs() - 1.0;
    let r = server
        .post("/v1/exec", &alice, &json!({"command": "true"}))
        .expect(200);
    assert_eq!(r["outcome"], "completed", "{r}");
    let created = server.created_between(since, epoch_secs() + 1.0);
    assert_eq!(
        created.len(),
        1,
        "the event watch does not see creations: {created:?}"
    );
}

#[test]
fn serve_stream_delivers_output_while_the_command_runs() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let server = Server::start(&env, &[]);
    let id = server.sandbox(&alice);
    let path = format!("/v1/sandboxes/{id}/exec");

    // The command cannot end before the test lets it: it waits for a file only the test
    // creates, after it has read the first line and seen the sandbox busy.
    let mut stream = EventStream::open(
        &server,
        &path,
        &alice,
        &json!({
            "command": "echo first; while [ ! -e /tmp/release ]; do sleep 0.1; done; echo second",
            "timeout": 300,
        }),
    );
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert!(
        stream
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/x-ndjson"),
        "{}",
        stream.head
    );
    let first = stream.next_event().expect("a first event");
    assert_eq!(first, json!({"type": "stdout", "data": "first\n"}));
    // The command has not ended: its sandbox is busy, and its exit is still to come.
    let during = server
        .get(&format!("/v1/sandboxes/{id}"), Some(&alice))
        .expect(200);
    assert_eq!(during["busy"], true, "{during}");
    // Only now may it go on: the test's hand, through the engine, as the sandbox's user.
    let container = format!("stockade-s-{}-{id}", server.state_id);
    let released = Command::new("docker")
        .args([
            "exec",
            "--user",
            "65532:65532",
            &container,
            "touch",
            "/tmp/release",
        ])
        .output()
        .unwrap();
    assert!(released.status.success(), "{}", common::stderr(&released));
    let mut rest = Vec::new();
    while let Some(e) = stream.next_event() {
        rest.push(e);
    }
    let (last, between) = rest.split_last().expect("events after the first");
    assert_eq!(between, [json!({"type": "stdout", "data": "second\n"})]);
    let result = exit_result(last);
    assert_eq!(result["outcome"], "completed");
    assert_eq!(result["stdout"], "first\nsecond\n");
    assert_eq!(result["session"], id.as_str());
    let after = server
        .get(&format!("/v1/sandboxes/{id}"), Some(&alice))
        .expect(200);
    assert_eq!(after["busy"], false, "{after}");

    // stderr is its own event type.
    let mut stream =
        EventStream::open(&server, &path, &alice, &json!({"command": "echo oops >&2"}));
    assert_eq!(
        stream.next_event(),
        Some(json!({"type": "stderr", "data": "oops\n"}))
    );
    let result = exit_result(&stream.next_event().expect("the exit"));
    assert_eq!(result["stderr"], "oops\n");
    assert_eq!(stream.next_event(), None);

    // A client that goes away ends its command (one-shot here): interrupted, on record, and
    // the one-shot sandbox removed.
    let mut stream = EventStream::open(
        &server,
        "/v1/exec",
        &alice,
        &json!({"command": "echo up; sleep 300", "timeout": 600}),
    );
    assert_eq!(
        stream.next_event(),
        Some(json!({"type": "stdout", "data": "up\n"}))
    );
    drop(stream);
    eventually("the abandoned command's finish record", || {
        audit_by_id(&env).values().any(|(s, f)| {
            s.as_ref()
                .is_some_and(|s| s["command"] == "echo up; sleep 300")
                && f.as_ref().is_some_and(|f| f["outcome"] == "interrupted")
        })
    });
    eventually("the abandoned one-shot sandbox's removal", || {
        server.containers(&["org.stockade.kind=oneshot"]).is_empty()
    });
}

#[test]
fn serve_background_exec_takes_stdin_polls_and_kills() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let server = Server::start(&env, &[]);
    let id = server.sandbox(&alice);
    let base = format!("/v1/sandboxes/{id}");

    let poll_done = |ex: &str| -> Value {
        let mut last = Value::Null;
        for _ in 0..12 {
            last = server
                .get(&format!("{base}/execs/{ex}?wait=10s"), Some(&alice))
                .expect(200);
            if last["state"] == "done" {
                validate_result(&last["result"]);
                return last;
            }
        }
        panic!("the background execution never ended: {last}");
    };

    // stdin_open without background is refused.
    assert_error(
        &server.post(
            &format!("{base}/exec"),
            &alice,
            &json!({"command": "cat", "stdin_open": true}),
        ),
        400,
        "bad_request",
    );
    let job = server
        .post(
            &format!("{base}/exec"),
            &alice,
            &json!({"command": "wc -c; echo done", "background": true, "stdin_open": true}),
        )
        .expect(202);
    assert_eq!(job["state"], "running");
    assert_eq!(job["sandbox"], id.as_str());
    let ex = job["exec_id"].as_str().unwrap().to_string();
    let stdin = format!("{base}/execs/{ex}/stdin");
    // A post over the body cap (1 MiB by default) is refused whole: none of it reaches the
    // command (the count below would be off).
    let scratch = tempfile::tempdir().unwrap();
    let big = scratch.path().join("big");
    std::fs::write(&big, vec![b'x'; (1 << 20) + 1]).unwrap();
    let r = server.curl(
        Via::Tcp,
        "POST",
        &stdin,
        Some(&alice),
        &["--data-binary", &format!("@{}", big.display())],
    );
    assert_error(&r, 413, "too_large");
    let r = server.curl(
        Via::Tcp,
        "POST",
        &stdin,
        Some(&alice),
        &["--data-binary", "hello "],
    );
    assert_eq!(r.expect(200), json!({"written": 6, "eof": false}));
    let r = server.curl(
        Via::Tcp,
        "POST",
        &format!("{stdin}?eof=true"),
        Some(&alice),
        &["--data-binary", "world"],
    );
    assert_eq!(r.expect(200), json!({"written": 5, "eof": true}));
    let r = server.curl(
        Via::Tcp,
        "POST",
        &stdin,
        Some(&alice),
        &["--data-binary", "late"],
    );
    assert_error(&r, 409, "stdin_closed");
    let done = poll_done(&ex);
    assert_eq!(done["exec_id"], ex.as_str());
    assert_eq!(done["result"]["outcome"], "completed");
    assert_eq!(done["result"]["stdout"], "11\ndone\n");
    assert_eq!(done["stdout"], "11\ndone\n");
    // A background execution without stdin_open has no stdin to feed.
    let job = server
        .post(
            &format!("{base}/exec"),
            &alice,
            &json!({"command": "echo quick", "background": true}),
        )
        .expect(202);
    let quick = job["exec_id"].as_str().unwrap().to_string();
    let r = server.curl(
        Via::Tcp,
        "POST",
        &format!("{base}/execs/{quick}/stdin"),
        Some(&alice),
        &["--data-binary", "x"],
    );
    assert_error(&r, 409, "stdin_closed");
    assert_eq!(poll_done(&quick)["result"]["stdout"], "quick\n");

    // A long one, killed: its whole process tree goes.
    let job = server
        .post(
            &format!("{base}/exec"),
            &alice,
            &json!({"command": "echo started; sleep 300 & sleep 301; echo never", "background": true, "timeout": 600}),
        )
        .expect(202);
    let ex = job["exec_id"].as_str().unwrap().to_string();
    eventually("the background command's first output", || {
        let p = server
            .get(&format!("{base}/execs/{ex}"), Some(&alice))
            .expect(200);
        assert_eq!(p["state"], "running", "it ended by itself: {p}");
        p["stdout"] == "started\n"
    });
    let running = server.get(&base, Some(&alice)).expect(200);
    assert_eq!(running["busy"], true, "{running}");
    let r = server.curl(
        Via::Tcp,
        "POST",
        &format!("{base}/execs/{ex}/kill"),
        Some(&alice),
        &[],
    );
    let killing = r.expect(202);
    assert_eq!(killing["exec_id"], ex.as_str());
    assert!(
        ["killing", "done"].contains(&killing["state"].as_str().unwrap()),
        "{killing}"
    );
    let done = poll_done(&ex);
    let result = &done["result"];
    assert_eq!(result["outcome"], "interrupted", "{result}");
    assert!(result["interrupted"].is_string(), "{result}");
    assert_eq!(result["stdout"], "started\n");
    let (_, finish) = audit_by_id(&env)[result["audit_id"].as_str().unwrap()].clone();
    assert_eq!(finish.expect("a finish record")["outcome"], "interrupted");
    // Nothing of it is left in the sandbox (the next command runs once it is gone).
    let ps = server.exec(&id, &alice, &json!({"argv": ["ps", "-eo", "pid,args"]}));
    let text = ps["stdout"].as_str().unwrap();
    assert!(
        text.contains("ps -eo pid,args"),
        "ps does not see itself: {text}"
    );
    assert!(
        !text.contains("sleep"),
        "the killed command left processes: {text}"
    );
}

#[test]
fn serve_files_are_byte_exact_and_capped() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    const CAP: usize = 8 << 20;
    let server = Server::start(&env, &["--max-file-bytes", &CAP.to_string()]);
    let id = server.sandbox(&alice);
    let files = format!("/v1/sandboxes/{id}/files");
    let scratch = tempfile::tempdir().unwrap();

    // In: a few MiB of random bytes with NULs at both ends.
    let mut payload = b"\0\0\0head\0".to_vec();
    payload.extend(random_bytes(3 << 20));
    payload.extend(b"\0tail\0\0");
    let digest = sha256_hex(&payload);
    let local = scratch.path().join("payload.bin");
    std::fs::write(&local, &payload).unwrap();
    let at = format!("@{}", local.display());
    let put = |path: &str, extra: &[&str]| {
        let mut args = vec![
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &at,
        ];
        args.extend_from_slice(extra);
        server.curl(
            Via::Tcp,
            "PUT",
            &format!("{files}?path={path}"),
            Some(&alice),
            &args,
        )
    };
    let copied = put("/workspace/data.bin", &[]).expect(201);
    assert_eq!(copied["bytes"], payload.len());
    assert_eq!(copied["sha256"], digest.as_str());
    assert_eq!(copied["path"], "/workspace/data.bin");
    let (_, finish) = audit_by_id(&env)[copied["audit_id"].as_str().unwrap()].clone();
    assert_eq!(finish.unwrap()["file_sha256"], digest.as_str());
    let r = server.exec(
        &id,
        &alice,
        &json!({"argv": ["sha256sum", "/workspace/data.bin"]}),
    );
    assert_eq!(r["stdout"], format!("{digest}  /workspace/data.bin\n"));
    // Out: the same bytes back.
    let back = server.get(&format!("{files}?path=/workspace/data.bin"), Some(&alice));
    assert_eq!(back.status, 200);
    assert_eq!(
        back.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        (back.body.len(), sha256_hex(&back.body)),
        (payload.len(), digest.clone())
    );
    // Out: bytes the sandbox made, as its own sha256sum saw them.
    let r = server.exec(
        &id,
        &alice,
        &json!({"command": "head -c 2097152 /dev/urandom > /workspace/made.bin; printf '\\0\\0' >> /workspace/made.bin; sha256sum /workspace/made.bin"}),
    );
    let made_digest = r["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let made = server.get(&format!("{files}?path=/workspace/made.bin"), Some(&alice));
    assert_eq!(made.status, 200);
    assert_eq!(
        (made.body.len(), sha256_hex(&made.body)),
        ((2 << 20) + 2, made_digest)
    );
    // Chunked (no length) within the cap is fine too.
    let copied = put(
        "/workspace/chunked.bin",
        &["-H", "Transfer-Encoding: chunked"],
    )
    .expect(201);
    assert_eq!(copied["sha256"], digest.as_str());

    // A missing file is 404; a read-only place 422.
    assert_error(
        &server.get(&format!("{files}?path=/workspace/absent"), Some(&alice)),
        404,
        "",
    );
    let r = server.curl(
        Via::Tcp,
        "PUT",
        &format!("{files}?path=/etc/x"),
        Some(&alice),
        &["--data-binary", "x"],
    );
    assert_error(&r, 422, "");

    // Over the cap: refused 413, with a length or without, and nothing partial is left (an
    // existing file keeps its bytes).
    let mut big = payload.clone();
    big.extend(random_bytes(CAP + 1 - payload.len()));
    std::fs::write(&local, &big).unwrap();
    assert_error(&put("/workspace/big.bin", &[]), 413, "too_large");
    assert_error(
        &put("/workspace/big.bin", &["-H", "Transfer-Encoding: chunked"]),
        413,
        "too_large",
    );
    assert_error(
        &put("/workspace/data.bin", &["-H", "Transfer-Encoding: chunked"]),
        413,
        "too_large",
    );
    assert_error(
        &server.get(&format!("{files}?path=/workspace/big.bin"), Some(&alice)),
        404,
        "",
    );
    let listing = server
        .get(&format!("{files}/list?path=/workspace"), Some(&alice))
        .expect(200);
    let mut names: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["chunked.bin", "data.bin", "made.bin"], "{listing}");
    let r = server.exec(
        &id,
        &alice,
        &json!({"argv": ["sha256sum", "/workspace/data.bin"]}),
    );
    assert_eq!(
        r["stdout"],
        format!("{digest}  /workspace/data.bin\n"),
        "a refused upload changed the file"
    );
}

#[test]
fn serve_parallel_execs_are_credited_to_their_commands() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let server = Server::start(&env, &[]);
    const SANDBOXES: usize = 16;
    const EXECS: usize = 5;

    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SANDBOXES)
            .map(|_| s.spawn(|| server.sandbox(&alice)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), SANDBOXES);

    // Every command at once: five per sandbox (which run one at a time there), sixteen
    // sandboxes side by side.
    let runs: Vec<(String, String, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .flat_map(|id| (0..EXECS).map(move |_| id))
            .map(|id| {
                let nonce = unique("nonce");
                let server = &server;
                let alice = &alice;
                s.spawn(move || {
                    let command = format!("echo {nonce}-{id}");
                    let r = server
                        .post(
                            &format!("/v1/sandboxes/{id}/exec"),
                            alice,
                            &json!({"command": command}),
                        )
                        .expect(200);
                    (id.clone(), command, r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(runs.len(), SANDBOXES * EXECS);

    let audit = audit_by_id(&env);
    let mut audit_ids = BTreeSet::new();
    for (id, command, r) in &runs {
        validate_result(r);
        let echoed = format!("{}\n", command.strip_prefix("echo ").unwrap());
        assert_eq!(r["outcome"], "completed", "{r}");
        assert_eq!(
            r["stdout"],
            echoed.as_str(),
            "another command's output: {r}"
        );
        assert_eq!(
            (r["session"].as_str(), r["command"].as_str()),
            (Some(id.as_str()), Some(command.as_str()))
        );
        let audit_id = r["audit_id"].as_str().unwrap();
        assert!(
            audit_ids.insert(audit_id.to_string()),
            "one audit id for two executions"
        );
        let (start, finish) = audit[audit_id].clone();
        let (start, finish) = (start.expect("a start"), finish.expect("a finish"));
        assert_eq!(
            start["command"],
            command.as_str(),
            "the record names another command"
        );
        assert_eq!(
            (start["user"].as_str(), start["session"].as_str()),
            (Some("alice"), Some(id.as_str()))
        );
        assert_eq!(finish["outcome"], "completed");
        assert_eq!(
            finish["stdout_sha256"],
            sha256_hex(echoed.as_bytes()),
            "the record vouches for other output"
        );
    }
    assert_chains_verify(&env, "the chain broke under concurrency");
}

#[test]
fn serve_principals_are_isolated() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let bob = token(&env, "bob", "exec");
    let admin = token(&env, "root", "admin");
    let server = Server::start(&env, &[]);
    let mine = server.sandbox(&alice);
    let theirs = server.sandbox(&bob);
    let job = server
        .post(
            &format!("/v1/sandboxes/{mine}/exec"),
            &alice,
            &json!({"command": "echo alice", "background": true}),
        )
        .expect(202);
    let ex = job["exec_id"].as_str().unwrap();

    let ids = |token: &str, query: &str| -> Vec<String> {
        server
            .get(&format!("/v1/sandboxes{query}"), Some(token))
            .expect(200)["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&bob, ""), [theirs.as_str()]);
    assert_eq!(ids(&alice, ""), [mine.as_str()]);
    let mut everyone = ids(&admin, "?all=true");
    everyone.sort();
    let mut both = vec![mine.clone(), theirs.clone()];
    both.sort();
    assert_eq!(everyone, both);

    // Alice's sandbox does not exist for bob, whatever he tries.
    let base = format!("/v1/sandboxes/{mine}");
    assert_error(&server.get(&base, Some(&bob)), 404, "not_found");
    assert_error(
        &server.post(
            &format!("{base}/exec"),
            &bob,
            &json!({"command": "echo bob"}),
        ),
        404,
        "not_found",
    );
    assert_error(
        &server.post(
            &format!("{base}/exec"),
            &bob,
            &json!({"command": "true", "background": true}),
        ),
        404,
        "not_found",
    );
    assert_error(
        &server.get(&format!("{base}/files?path=/workspace/x"), Some(&bob)),
        404,
        "not_found",
    );
    let r = server.curl(
        Via::Tcp,
        "PUT",
        &format!("{base}/files?path=/workspace/x"),
        Some(&bob),
        &["--data-binary", "x"],
    );
    assert_error(&r, 404, "not_found");
    assert_error(
        &server.get(&format!("{base}/files/list?path=/workspace"), Some(&bob)),
        404,
        "not_found",
    );
    assert_error(
        &server.get(&format!("{base}/execs/{ex}"), Some(&bob)),
        404,
        "not_found",
    );
    let r = server.curl(
        Via::Tcp,
        "POST",
        &format!("{base}/execs/{ex}/kill"),
        Some(&bob),
        &[],
    );
    assert_error(&r, 404, "not_found");
    // Nor under his own sandbox's name.
    assert_error(
        &server.get(&format!("/v1/sandboxes/{theirs}/execs/{ex}"), Some(&bob)),
        404,
        "not_found",
    );
    assert_error(&server.delete(&base, Some(&bob)), 404, "not_found");
    assert_error(
        &server.get("/v1/sandboxes?all=true", Some(&bob)),
        403,
        "forbidden",
    );
    // Bob's own audit view has none of alice's records.
    let records = server.get("/v1/audit?limit=1000", Some(&bob)).expect(200);
    for r in records["records"].as_array().unwrap() {
        assert_ne!(r["session"], mine.as_str(), "bob sees alice's record {r}");
        if r["kind"] == "start" {
            assert_eq!(r["user"], "bob");
        }
    }

    // Alice's sandbox is untouched and hers.
    let p = server
        .get(&format!("{base}/execs/{ex}?wait=30s"), Some(&alice))
        .expect(200);
    assert_eq!(p["result"]["stdout"], "alice\n", "{p}");
    let r = server.exec(&mine, &alice, &json!({"command": "echo still mine"}));
    assert_eq!(r["stdout"], "still mine\n");
    assert_eq!(
        server.get(&base, Some(&alice)).expect(200)["owner"],
        "alice"
    );
    let start = audit_by_id(&env)[r["audit_id"].as_str().unwrap()]
        .0
        .clone()
        .unwrap();
    assert_eq!(start["user"], "alice");
}

#[test]
fn serve_failed_auth_limiter_locks_out_a_client_not_others() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let admin = token(&env, "root", "admin");
    let socket = env.dir.path().join("api.sock");
    let server = Server::start(&env, &["--socket", socket.to_str().unwrap()]);
    let version = |via: Via, token: &str| server.curl(via, "GET", "/v1/version", Some(token), &[]);
    let bad = |via: Via, n: usize| {
        for i in 0..n {
            assert_error(&version(via, &format!("stk_bad-{i}")), 401, "unauthorized");
        }
    };

    // A success before the fifth failure starts the count again.
    bad(Via::Tcp, 4);
    assert_eq!(version(Via::Tcp, &alice).status, 200);
    bad(Via::Tcp, 4);
    assert_eq!(
        version(Via::Tcp, &alice).status,
        200,
        "locked out after a success reset the count"
    );

    // Five in a row: the fifth is still answered as a failure, the sixth is 429.
    bad(Via::Tcp, 5);
    let r = version(Via::Tcp, "stk_bad-6");
    assert_error(&r, 429, "locked_out");
    let retry: u64 = r
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=300).contains(&retry), "Retry-After {retry}");
    // A valid token from the locked-out client is refused too, on any route that needs one.
    assert_error(&version(Via::Tcp, &alice), 429, "locked_out");
    assert_error(
        &server.post("/v1/sandboxes", &alice, &json!({})),
        429,
        "locked_out",
    );
    // What needs no token still answers.
    assert_eq!(server.get("/healthz", None).status, 200);

    // Another client (the Unix socket's peer uid) is not locked out, and has a count of its own.
    let v = version(Via::Unix, &alice).expect(200);
    assert_eq!(v["api"], "v1");
    bad(Via::Unix, 4);
    assert_eq!(version(Via::Unix, &alice).status, 200);
    let m = server.curl(Via::Unix, "GET", "/metrics", Some(&admin), &[]);
    assert_eq!(m.status, 200);
    assert_eq!(
        metric(&m.text(), "stockade_auth_failures_total"),
        Some(17.0),
        "{}",
        m.text()
    );
    assert_eq!(
        metric(&m.text(), "stockade_rate_limited_requests_total"),
        Some(3.0),
        "{}",
        m.text()
    );
    // TCP is still locked.
    assert_error(&version(Via::Tcp, &alice), 429, "locked_out");

    // The auth log has the lockout of the TCP client, and none of the socket's.
    let uid = format!("uid:{}", nix::unistd::getuid().as_raw());
    let events = auth_events_once(
        &env,
        "the socket client's last success on record",
        |events| {
            events
                .iter()
                .filter(|e| e["event"] == "success" && e["client"] == uid.as_str())
                .count()
                == 3
        },
    );
    let lockouts: Vec<&Value> = events.iter().filter(|e| e["event"] == "lockout").collect();
    assert_eq!(lockouts.len(), 1, "{lockouts:?}");
    assert_eq!(lockouts[0]["client"], "ip:127.0.0.1");
    assert_eq!(lockouts[0]["request"], "GET /v1/version");
}

#[test]
fn serve_revocation_and_rotation_apply_without_restart() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let bob = token(&env, "bob", "exec");
    let server = Server::start(&env, &[]);
    let version = |token: &str| server.get("/v1/version", Some(token));
    assert_eq!(version(&alice).status, 200);
    assert_eq!(version(&bob).status, 200);
    // Alice has a command running when her token is revoked.
    let id = server.sandbox(&alice);
    let job = server
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &alice,
            &json!({"command": "echo started; sleep 300", "background": true, "timeout": 600}),
        )
        .expect(202);
    let ex = job["exec_id"].as_str().unwrap();
    eventually("alice's command to start", || {
        server
            .get(&format!("/v1/sandboxes/{id}/execs/{ex}"), Some(&alice))
            .expect(200)["stdout"]
            == "started\n"
    });

    let out = env
        .cmd()
        .args(["token", "revoke", "alice"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let r = version(&alice);
    assert_error(&r, 401, "unauthorized");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{}",
        r.text()
    );
    // Her running command is ended (and recorded so) without a restart.
    eventually("the revoked principal's command to end on record", || {
        audit_by_id(&env).values().any(|(s, f)| {
            s.as_ref()
                .is_some_and(|s| s["user"] == "alice" && s["command"] == "echo started; sleep 300")
                && f.as_ref().is_some_and(|f| f["outcome"] == "interrupted")
        })
    });

    let out = env.cmd().args(["token", "rotate", "bob"]).output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let rotated = common::stdout(&out).trim().to_string();
    assert!(rotated.starts_with("stk_") && rotated != bob);
    assert_eq!(
        version(&rotated).status,
        200,
        "the rotated token does not work"
    );
    assert_error(&version(&bob), 401, "unauthorized");
    // A revoked token cannot be rotated back to life.
    let out = env
        .cmd()
        .args(["token", "rotate", "alice"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_error(&version(&alice), 401, "unauthorized");
    // A token created while it runs works at once.
    let carol = token(&env, "carol", "exec");
    assert_eq!(version(&carol).status, 200);
    // One that expires stops working on its own.
    let out = env
        .cmd()
        .args(["token", "create", "--name", "dave", "--ttl", "1s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let dave = common::stdout(&out).trim().to_string();
    eventually("the expiry of a 1 s token", || {
        let r = version(&dave);
        if r.status == 200 {
            return false;
        }
        assert_error(&r, 401, "unauthorized");
        // Keep the limiter's count down between tries.
        assert_eq!(version(&carol).status, 200);
        true
    });

    let has = |events: &[Value], event: &str, principal: &str| {
        events
            .iter()
            .any(|e| e["event"] == event && e["principal"] == principal)
    };
    let events = auth_events_once(&env, "the expiry on record", |e| {
        has(e, "token_expired", "dave")
    });
    assert!(has(&events, "token_revoked", "alice"));
    assert!(has(&events, "token_rotated", "bob"));
    assert!(has(&events, "token_created", "carol"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "failure" && e["reason"] == "revoked" && e["principal"] == "alice"));
    // The CLI and the server wrote to one chain, and it holds.
    assert_chains_verify(&env, "after revocations and rotations");
}

#[test]
fn serve_grants_are_listed_and_revoked_by_cli_and_api() {
    require_docker!();
    let env = Env::new();
    let admin = token(&env, "root", "admin");
    let bob = token(&env, "bob", "exec");
    let carol = token(&env, "carol", "exec");
    let server = Server::start(&env, &[]);
    let bobs = server.sandbox(&bob);
    let carols = server.sandbox(&carol);
    let grants_ls = || -> Vec<Value> {
        let out = env.cmd().args(["grants", "ls", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let grant_of = |grants: &[Value], p: &str| -> Value {
        grants
            .iter()
            .find(|g| g["principal"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("no grant of {p}: {grants:?}"))
    };
    let g = grant_of(&grants_ls(), "bob");
    assert_eq!(
        (g["scope"].as_str(), g["active"].as_bool()),
        (Some("exec"), Some(true))
    );
    assert_eq!(g["sandboxes"], json!([bobs]));
    let api = server.get("/v1/grants", Some(&admin)).expect(200);
    assert_eq!(
        grant_of(api["grants"].as_array().unwrap(), "carol")["sandboxes"],
        json!([carols])
    );
    assert_eq!(
        grant_of(api["grants"].as_array().unwrap(), "root")["scope"],
        "admin"
    );
    assert_error(&server.get("/v1/grants", Some(&bob)), 403, "forbidden");
    assert_error(
        &server.delete("/v1/grants/carol", Some(&bob)),
        403,
        "forbidden",
    );

    // The API's revoke: the token stops, its running command ends on record, its sandbox goes.
    let job = server
        .post(
            &format!("/v1/sandboxes/{bobs}/exec"),
            &bob,
            &json!({"command": "echo started; sleep 300", "background": true, "timeout": 600}),
        )
        .expect(202);
    let ex = job["exec_id"].as_str().unwrap();
    eventually("bob's command to start", || {
        server
            .get(&format!("/v1/sandboxes/{bobs}/execs/{ex}"), Some(&bob))
            .expect(200)["stdout"]
            == "started\n"
    });
    let revoked = server.delete("/v1/grants/bob", Some(&admin)).expect(200);
    assert_eq!(revoked["revoked"], true);
    assert_eq!(revoked["sandboxes_removed"], json!([bobs]));
    assert_error(&server.get("/v1/version", Some(&bob)), 401, "unauthorized");
    eventually(
        "the revoked principal's command to be recorded as ended",
        || {
            audit_by_id(&env).values().any(|(s, f)| {
                s.as_ref().is_some_and(|s| {
                    s["user"] == "bob" && s["command"] == "echo started; sleep 300"
                }) && f.as_ref().is_some_and(|f| f["outcome"] == "interrupted")
            })
        },
    );
    assert!(server
        .containers(&[&format!("org.stockade.session={bobs}")])
        .is_empty());
    assert_error(
        &server.get(&format!("/v1/sandboxes/{bobs}"), Some(&admin)),
        404,
        "not_found",
    );
    assert_error(
        &server.delete("/v1/grants/nobody", Some(&admin)),
        404,
        "not_found",
    );
    let g = grant_of(&grants_ls(), "bob");
    assert_eq!(
        (g["active"].as_bool(), &g["sandboxes"]),
        (Some(false), &json!([]))
    );

    // The CLI's revoke, while the server runs.
    let out = env
        .cmd()
        .args(["grants", "revoke", "carol"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_error(
        &server.get("/v1/version", Some(&carol)),
        401,
        "unauthorized",
    );
    assert!(server
        .containers(&[&format!("org.stockade.session={carols}")])
        .is_empty());
    let all = server
        .get("/v1/sandboxes?all=true", Some(&admin))
        .expect(200);
    assert_eq!(all["sandboxes"], json!([]));
    let g = grant_of(&grants_ls(), "carol");
    assert_eq!(
        (g["active"].as_bool(), &g["sandboxes"]),
        (Some(false), &json!([]))
    );
    let out = env
        .cmd()
        .args(["grants", "revoke", "nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "revoking nobody succeeded");

    auth_events_once(&env, "both revocations on record", |events| {
        ["bob", "carol"].iter().all(|p| {
            events
                .iter()
                .any(|e| e["event"] == "grant_revoked" && e["principal"] == *p)
        })
    });
}

#[test]
fn serve_audit_logs_verify_and_name_principals() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let bob = token(&env, "bob", "exec");
    let server = Server::start(&env, &[]);
    let id = server.sandbox(&alice);
    let a = server.exec(&id, &alice, &json!({"command": "echo from alice"}));
    let b = server
        .post("/v1/exec", &bob, &json!({"command": "echo from bob"}))
        .expect(200);
    let d = server
        .post("/v1/exec", &bob, &json!({"command": "nsenter -t 1 -m sh"}))
        .expect(200);
    assert_eq!(d["outcome"], "denied");
    let r = server.curl(
        Via::Tcp,
        "PUT",
        &format!("/v1/sandboxes/{id}/files?path=/workspace/f"),
        Some(&alice),
        &["--data-binary", "x"],
    );
    let copied = r.expect(201);
    for i in 0..5 {
        assert_error(
            &server.get("/v1/version", Some(&format!("stk_wrong-{i}"))),
            401,
            "",
        );
    }
    assert_error(&server.get("/v1/version", Some(&alice)), 429, "locked_out");

    // Each execution's records name the principal that asked.
    let audit = audit_by_id(&env);
    for (r, who) in [(&a, "alice"), (&b, "bob"), (&d, "bob"), (&copied, "alice")] {
        let (start, finish) = audit[r["audit_id"].as_str().unwrap()].clone();
        assert_eq!(start.expect("a start")["user"], who, "{r}");
        assert!(finish.is_some(), "no finish for {r}");
    }

    // The auth log has the successes, the failures and the lockout.
    let count =
        |events: &[Value], event: &str| events.iter().filter(|e| e["event"] == event).count();
    let events = auth_events_once(&env, "the lockout on record", |e| count(e, "lockout") == 1);
    assert!(count(&events, "success") >= 5, "{events:?}");
    assert_eq!(count(&events, "failure"), 5, "{events:?}");
    assert_eq!(count(&events, "token_created"), 2);
    let success = events
        .iter()
        .find(|e| e["event"] == "success" && e["principal"] == "bob")
        .unwrap();
    assert_eq!(success["request"], "POST /v1/exec");
    assert_eq!(success["client"], "ip:127.0.0.1");
    let failure = events.iter().find(|e| e["event"] == "failure").unwrap();
    assert_eq!(
        (failure["reason"].as_str(), failure["request"].as_str()),
        (Some("unknown"), Some("GET /v1/version"))
    );
    // No token ever reaches the log.
    let auth_text = std::fs::read_to_string(env.state_dir().join("auth.jsonl")).unwrap();
    let exec_text = std::fs::read_to_string(env.audit_path()).unwrap();
    for secret in [&alice, &bob] {
        assert!(
            !auth_text.contains(secret.as_str()) && !exec_text.contains(secret.as_str()),
            "a token in a log"
        );
    }

    // Both chains verify, with the server still writing to them.
    let out = env
        .cmd()
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stdout(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["auth"].is_object(),
        "the auth log was not verified: {report}"
    );
    assert!(
        report["auth"]["records"].as_u64().unwrap() >= 10,
        "{report}"
    );
    drop(server);
    assert_chains_verify(&env, "after the server stopped");
}

#[test]
fn serve_sigterm_drains_running_executions() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let server = Server::start(&env, &[]);
    let id = server.sandbox(&alice);

    // A one-shot streaming and a session's synchronous request, both long.
    let mut stream = EventStream::open(
        &server,
        "/v1/exec",
        &alice,
        &json!({"command": "echo up; sleep 300", "timeout": 600}),
    );
    assert_eq!(
        stream.next_event(),
        Some(json!({"type": "stdout", "data": "up\n"}))
    );
    let body = json!({"command": "sleep 300", "timeout": 600}).to_string();
    let (mut cmd, head, body_file) = server.curl_cmd(
        Via::Tcp,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(&alice),
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
    );
    let mut sync = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the session's command to run", || {
        server
            .get(&format!("/v1/sandboxes/{id}"), Some(&alice))
            .expect(200)["busy"]
            == true
    });
    assert_eq!(server.containers(&["org.stockade.kind=oneshot"]).len(), 1);

    server.terminate();
    // Both requests are answered with their result: interrupted by the shutdown.
    let streamed = exit_result(&stream.next_event().expect("the exit event"));
    assert_eq!(stream.next_event(), None);
    let out = common::wait_output(&mut sync);
    assert!(out.status.success(), "curl: {}", common::stderr(&out));
    let answered = read_resp(&out.stdout, &head, &body_file).expect(200);
    validate_result(&answered);
    let status = server.wait_exit(HANG);
    assert_eq!(status.code(), Some(0), "{}", server.log());
    eventually("the server's last words", || {
        server.log().contains("stopped:")
    });

    let audit = audit_by_id(&env);
    for r in [&streamed, &answered] {
        assert_eq!(r["outcome"], "interrupted", "{r}");
        assert!(r["interrupted"].is_string(), "{r}");
        let (start, finish) = audit[r["audit_id"].as_str().unwrap()].clone();
        assert_eq!(start.expect("a start")["command"], r["command"]);
        assert_eq!(finish.expect("a finish")["outcome"], "interrupted");
    }
    // Nothing runs for them any more: the one-shot container is gone, and the session's keeps
    // nothing of its command.
    assert!(server.containers(&["org.stockade.kind=oneshot"]).is_empty());
    let session = answered["sandbox"].as_str().unwrap();
    let top = Command::new("docker")
        .args(["top", session, "-eo", "args"])
        .output()
        .unwrap();
    let top_text = common::stdout(&top);
    assert!(
        !top_text.contains("sleep"),
        "the command outlived the server: {top_text}"
    );
    // Every execution has its finish.
    assert_chains_verify(&env, "after the drain");
}

#[test]
fn serve_refuses_non_loopback_before_binding_and_keeps_its_socket_private() {
    let env = Env::new();
    let _alice = token(&env, "alice", "exec");
    // Hold the port (on loopback, which a wildcard bind of it conflicts with): a server that
    // bound before checking would say "in use" instead.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let socket = env.dir.path().join("refused.sock");
    for addr in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
        let out = output_within(
            env.cmd()
                .args(["serve", "--listen", &addr, "--socket"])
                .arg(&socket),
            HANG,
        );
        let text = common::stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{addr}: {text}");
        assert!(text.contains("--allow-non-loopback"), "{addr}: {text}");
        assert!(
            !text.contains("cannot listen"),
            "{addr}: it tried to bind: {text}"
        );
        assert!(!socket.exists(), "{addr}: the socket was bound");
    }
    // With the flag it does try to bind (and fails on the held port): the check came first.
    let out = output_within(
        env.cmd().args([
            "serve",
            "--allow-non-loopback",
            "--listen",
            &format!("0.0.0.0:{port}"),
        ]),
        HANG,
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        common::stderr(&out).contains("cannot listen"),
        "{}",
        common::stderr(&out)
    );
    drop(held);

    // The Unix socket is 0600 from the start.
    let socket = env.dir.path().join("api.sock");
    let server = Server::start(&env, &["--socket", socket.to_str().unwrap()]);
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let r = server.curl(Via::Unix, "GET", "/healthz", None, &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    server.terminate();
    assert_eq!(server.wait_exit(HANG).code(), Some(0), "{}", server.log());
    assert!(!socket.exists(), "the socket outlived the server");
}

#[test]
fn serve_python_stdlib_client_drives_the_api() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let socket = env.dir.path().join("api.sock");
    let server = Server::start(&env, &["--socket", socket.to_str().unwrap()]);
    for door in [
        ["--url", server.base.as_str()],
        ["--unix-socket", socket.to_str().unwrap()],
    ] {
        let out = output_within(
            Command::new("python3")
                .arg(PYTHON_CLIENT)
                .args(door)
                .env("STOCKADE_API_TOKEN", &alice)
                .env_remove("STOCKADE_API_URL")
                .env_remove("STOCKADE_API_SOCKET"),
            Duration::from_secs(300),
        );
        assert!(
            out.status.success(),
            "the Python client failed over {door:?}: {}{}",
            common::stdout(&out),
            common::stderr(&out)
        );
        assert!(
            common::stdout(&out).starts_with("ok: "),
            "{}",
            common::stdout(&out)
        );
    }
    // It deleted what it made.
    assert!(server.containers(&["org.stockade.kind=session"]).is_empty());
    // And it fails when the server's answers do not match (a token that is not one).
    let out = output_within(
        Command::new("python3").arg(PYTHON_CLIENT).args([
            "--url",
            &server.base,
            "--token",
            "stk_wrong",
        ]),
        HANG,
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("FAIL"));
}

/// What a hostile token holder tries through the API itself: naming a server file as its
/// profile, code hidden in env values and stdin, limits past the server's, names a shell would
/// split, and spellings of the auth header.
#[test]
fn serve_refuses_what_an_attacker_sends_through_the_api() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let server = Server::start(&env, &[]);

    // A profile is a name the server offers, never a path (a parse error would echo the file,
    // and a sandbox can write a profile under /proc/PID/root).
    for profile in ["/etc/shadow", "../default", "x.toml", "/proc/self/environ"] {
        let resp = server.post(
            "/v1/exec",
            &alice,
            &json!({"argv": ["true"], "profile": profile}),
        );
        assert_error(&resp, 400, "bad_request");
        assert!(!resp.text().contains("root:"), "{}", resp.text());
        let resp = server.post("/v1/sandboxes", &alice, &json!({"profile": profile}));
        assert_error(&resp, 400, "bad_request");
    }

    // Code reaching the command through stdin or an env value is judged like its text.
    let v = server
        .post(
            "/v1/exec",
            &alice,
            &json!({"argv": ["bash"], "stdin": "nsenter -t 1 -m sh\n"}),
        )
        .expect(200);
    assert_eq!(v["outcome"], "denied", "{v}");
    let v = server
        .post(
            "/v1/exec",
            &alice,
            &json!({"command": "eval \"$LANG\"", "env": {"LANG": "nsenter -t 1 -m sh"}}),
        )
        .expect(200);
    assert_eq!(v["outcome"], "denied", "{v}");

    // Limits past the server's, and env names a shell would not take, are refused up front.
    for body in [
        json!({"argv": ["true"], "timeout": 0}),
        json!({"argv": ["true"], "timeout": "2h"}),
        json!({"argv": ["true"], "env": {"A B": "x"}}),
        json!({"argv": ["true"], "env": {"A=B": "x"}}),
    ] {
        assert_error(&server.post("/v1/exec", &alice, &body), 400, "bad_request");
    }
    for body in [json!({"ttl": u64::MAX}), json!({"idle_timeout": "9999d"})] {
        assert_error(
            &server.post("/v1/sandboxes", &alice, &body),
            400,
            "bad_request",
        );
    }

    // `?wait=` takes bare seconds, as documented; the auth scheme is case-insensitive; a JSON
    // body is read whatever its content type says (curl -d sends a form type).
    let id = server.sandbox(&alice);
    let job = server
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &alice,
            &json!({"command": "echo bg", "background": true}),
        )
        .expect(202);
    let exec_id = job["exec_id"].as_str().unwrap();
    let resp = server.curl(
        Via::Tcp,
        "GET",
        &format!("/v1/sandboxes/{id}/execs/{exec_id}?wait=30"),
        None,
        &["-H", &format!("authorization: bearer {alice}")],
    );
    let polled = resp.expect(200);
    assert_eq!(polled["state"], "done", "{polled}");
    assert_eq!(polled["result"]["stdout"], "bg\n");
    let resp = server.curl(
        Via::Tcp,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(&alice),
        &["-d", r#"{"argv": ["echo", "form"]}"#],
    );
    assert_eq!(resp.expect(200)["stdout"], "form\n");

    // The exec records of the API say so: a token named like a host account is not taken for it.
    let starts: Vec<Value> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "start")
        .collect();
    assert!(!starts.is_empty());
    assert!(starts
        .iter()
        .all(|s| s["via"] == "api" && s["user"] == "alice"));
    assert!(starts
        .iter()
        .any(|s| s["env"][0] == "LANG=nsenter -t 1 -m sh"));
    assert!(starts.iter().any(|s| s["stdin_sha256"].is_string()));
}

/// What would fail every command is found before the port is bound: no token, or a default
/// profile that does not load.
#[test]
fn serve_checks_tokens_and_the_default_profile_before_listening() {
    let env = Env::new();
    let out = common::output_within(env.cmd().args(["serve", "--listen", "127.0.0.1:0"]), HANG);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        common::stderr(&out).contains("token create"),
        "{}",
        common::stderr(&out)
    );
    assert!(!common::stderr(&out).contains("listening"));

    token(&env, "alice", "exec");
    env.write_config("default_profile = \"no-such-profile\"\n");
    let out = common::output_within(env.cmd().args(["serve", "--listen", "127.0.0.1:0"]), HANG);
    assert_eq!(out.status.code(), Some(125));
    let err = common::stderr(&out);
    assert!(
        err.contains("default profile") && err.contains("no-such-profile"),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

/// A token's principal gets only the secrets granted to it, and their values come back
/// redacted.
#[test]
fn serve_gives_a_secret_only_to_the_principal_it_is_granted_to() {
    require_docker!();
    let env = Env::new();
    let alice = token(&env, "alice", "exec");
    let set = |allow: &[&str]| {
        let mut cmd = env.cmd();
        cmd.args(["secret", "set", "DEPLOY_KEY"]);
        for p in allow {
            cmd.args(["--allow", p]);
        }
        let out = common::output_with_stdin(&mut cmd, b"dk-9f8e7d6c5b4a");
        assert!(out.status.success(), "{}", common::stderr(&out));
    };
    set(&[]);
    let server = Server::start(&env, &[]);
    let body = json!({"command": "echo \"$DEPLOY_KEY\"", "secrets": ["DEPLOY_KEY"]});
    let v = server.post("/v1/exec", &alice, &body).expect(200);
    assert_eq!(v["outcome"], "error", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--allow alice"),
        "{v}"
    );
    assert_eq!(v["sandbox"], Value::Null, "nothing ran");
    set(&["alice"]);
    let v = server.post("/v1/exec", &alice, &body).expect(200);
    assert_eq!(v["outcome"], "completed", "{v}");
    assert_eq!(v["stdout"], "[REDACTED:DEPLOY_KEY]\n");
    assert_eq!(v["redactions"], 1);
    let log = std::fs::read_to_string(env.audit_path()).unwrap();
    assert!(!log.contains("dk-9f8e7d6c5b4a"));
}

#[test]
fn serve_says_where_it_listens_and_counts_executions_it_could_not_record() {
    require_docker!();
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.write_config("on_audit_failure = \"run\"\n");
    let admin = token(&env, "admin", "admin");
    let server = Server::start(&env, &[]);
    let listening = env.state_dir().join(format!("serve.{}.json", server.pid));
    let recorded: Value = serde_json::from_slice(&std::fs::read(&listening).unwrap()).unwrap();
    assert_eq!(recorded["non_loopback"], false, "{recorded}");
    assert_eq!(recorded["addresses"][0], format!("http://{}", server.addr));

    let first = server
        .post("/v1/exec", &admin, &json!({"command": "true"}))
        .expect(200);
    assert!(first["audit_id"].is_string(), "{first}");
    let loosen = |mode| {
        std::fs::set_permissions(env.audit_path(), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    loosen(0o644);
    let held = server
        .post("/v1/exec", &admin, &json!({"command": "echo unrecorded"}))
        .expect(200);
    validate_result(&held);
    assert_eq!(held["stdout"], "unrecorded\n", "{held}");
    assert!(held["audit_error"].is_string(), "{held}");
    let text = server.get("/metrics", Some(&admin)).text();
    assert_eq!(
        metric(&text, "stockade_audit_failures_total"),
        Some(1.0),
        "{text}"
    );

    // Repaired, the server writes what it held without waiting for another execution.
    loosen(0o600);
    let until = Instant::now() + HANG;
    while !env.audit_records().iter().any(|r| r["kind"] == "gap") {
        assert!(
            Instant::now() < until,
            "the held records were never written"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(env
        .audit_records()
        .iter()
        .any(|r| r["kind"] == "start" && r["command"] == "echo unrecorded"));

    server.terminate();
    assert!(server.wait_exit(HANG).success());
    assert!(
        !listening.exists(),
        "a stopped server leaves no listening file"
    );
}
