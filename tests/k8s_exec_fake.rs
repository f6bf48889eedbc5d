//! The exec path of the Kubernetes backend against a scripted `pods/exec` stream on loopback
//! (the v4.channel.k8s.io WebSocket protocol: one byte of channel, then data; channel 3 carries
//! the Status). What a broken or hostile stream can make the backend say: a stream that ends
//! without a Status is an error and never exit 0, a command that never answers is ended by the
//! timeout through the kill sweep, an exit code comes only from the Status. The client, the
//! frames' decoding and the backend's decisions are the real ones.
#![cfg(feature = "kubernetes")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stockade::backend::kubernetes::KubernetesBackend;
use stockade::backend::{Backend, BackendError, ProcessSpec, Sandbox, SandboxKind, Streams, User};
use stockade::cancel::Cancel;
use stockade::config::KubernetesConfig;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// What the scripted main command does on its stream.
#[derive(Clone, Copy, Debug)]
enum Main {
    /// Writes output, then closes the stream without a Status.
    CloseWithoutStatus,
    /// Writes output, then a NonZeroExitCode Status with this code.
    Exit(i64),
    /// Never writes and never ends.
    Hang,
}

#[derive(Default)]
struct Seen {
    /// The `command` query values of each exec, joined by spaces.
    commands: Vec<String>,
    /// What came on the main command's stdin channel.
    stdin: Vec<u8>,
}

type Shared = Arc<Mutex<Seen>>;

fn success() -> Vec<u8> {
    let mut frame = vec![3u8];
    frame.extend(
        json!({"metadata": {}, "status": "Success"})
            .to_string()
            .bytes(),
    );
    frame
}

fn exit_status(code: i64) -> Vec<u8> {
    let mut frame = vec![3u8];
    let status = json!({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": format!("command terminated with non-zero exit code: {code}"),
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    });
    frame.extend(status.to_string().bytes());
    frame
}

fn stdout(text: &str) -> Vec<u8> {
    let mut frame = vec![1u8];
    frame.extend(text.bytes());
    frame
}

fn commands(uri: &str) -> String {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("command="))
        .map(percent_decode)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One exec connection: the kill sweep and the counters succeed; the main command follows
/// `main`.
/// The session pod as a GET returns it: started now, with the 8 h deadline of a session.
fn pod_json() -> String {
    let started = stockade::audit::now_rfc3339();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stockade-s-test", "namespace": "exec-test"},
        "spec": {"containers": [{"name": "sandbox"}], "activeDeadlineSeconds": 28832},
        "status": {"phase": "Running", "startTime": started},
    })
    .to_string()
}

/// A plain request (not an exec upgrade): the pod, as JSON, and the connection closed.
async fn plain(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = pod_json();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn answer(stream: tokio::net::TcpStream, main: Main, seen: Shared) {
    // An exec is a WebSocket upgrade; anything else is a plain GET of the pod.
    let mut peek = [0u8; 4096];
    let mut n = 0;
    // The whole request head, however the bytes arrive (bounded: a head is small).
    for _ in 0..1000 {
        n = stream.peek(&mut peek).await.unwrap_or(0);
        if n == peek.len() || peek[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if !String::from_utf8_lossy(&peek[..n])
        .to_ascii_lowercase()
        .contains("upgrade: websocket")
    {
        return plain(stream).await;
    }
    let mut command = String::new();
    // The handshake's callback type is tungstenite's; its error variant is a whole response.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut res: Response| {
        command = commands(&req.uri().to_string());
        res.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        Ok(res)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    seen.lock().unwrap().commands.push(command.clone());
    if command.contains(" --env-stdin ") {
        // The environment comes first, on channel 0.
        if let Some(Ok(Message::Binary(frame))) = ws.next().await {
            if frame.first() == Some(&0) {
                seen.lock().unwrap().stdin.extend_from_slice(&frame[1..]);
            }
        }
    }
    let frames = if command.contains(" kill --grace-ms ") {
        vec![success()]
    } else if command.starts_with("/bin/sh -c") {
        vec![stdout("pids/pids.events max 0\n"), success()]
    } else {
        match main {
            Main::CloseWithoutStatus => vec![stdout("partial output\n")],
            Main::Exit(code) => vec![stdout("some output\n"), exit_status(code)],
            Main::Hang => {
                // Hold the stream open, answering nothing, until the client goes.
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
        }
    };
    for frame in frames {
        if ws.send(Message::Binary(frame)).await.is_err() {
            return;
        }
    }
    let _ = ws.close(None).await;
}

async fn serve(main: Main) -> (KubernetesBackend, Shared) {
    let seen: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, main, shared.clone()));
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let backend = KubernetesBackend::from_client(
        client,
        "exec-test",
        &format!("http://{addr}"),
        &KubernetesConfig::default(),
    )
    .unwrap();
    (backend, seen)
}

fn session() -> Sandbox {
    Sandbox {
        id: "stockade-s-test".into(),
        name: "stockade-s-test".into(),
        kind: SandboxKind::Session { name: "s".into() },
        channel: None,
        recovered: None,
        placement: None,
    }
}

fn process(timeout: Duration) -> ProcessSpec {
    ProcessSpec {
        argv: vec!["bash".into(), "-c".into(), "echo hi".into()],
        user: User {
            uid: 65532,
            gid: 65532,
        },
        working_dir: "/workspace".into(),
        env: vec!["A=1".into()],
        timeout,
        kill_grace: Duration::from_millis(100),
        output_cap: 1 << 20,
        output_hard_limit: 1 << 22,
        stdin: false,
    }
}

async fn run(main: Main, timeout: Duration) -> (Result<i64, BackendError>, bool, Streams, Shared) {
    let (backend, seen) = serve(main).await;
    let mut streams = Streams::new(1 << 20, false, None);
    let ran = backend
        .run(
            &session(),
            &process(timeout),
            None,
            &mut streams,
            &Cancel::never(),
        )
        .await;
    let timed_out = ran.as_ref().is_ok_and(|r| r.ended.timed_out);
    let code = ran.map(|r| r.ended.exit_code.unwrap_or(-1));
    (code, timed_out, streams, seen)
}

#[tokio::test]
async fn a_stream_that_closes_without_a_status_is_an_error_not_exit_0() {
    let (code, _, streams, seen) = run(Main::CloseWithoutStatus, Duration::from_secs(60)).await;
    match code {
        Err(BackendError::Stream { reason }) => {
            assert!(reason.contains("without an exit status"), "{reason}")
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert_eq!(streams.stdout.text(), "partial output\n");
    // The command may still run: the kill sweep went in after it.
    let seen = seen.lock().unwrap();
    let main = seen
        .commands
        .iter()
        .position(|c| c.contains(" exec --cwd "));
    let sweep = seen
        .commands
        .iter()
        .rposition(|c| c.contains(" kill --grace-ms "));
    assert!(main.is_some() && sweep > main, "{:?}", seen.commands);
}

#[tokio::test]
async fn the_exit_code_comes_from_the_status() {
    let (code, timed_out, streams, seen) = run(Main::Exit(3), Duration::from_secs(60)).await;
    assert_eq!(code.unwrap(), 3);
    assert!(!timed_out);
    assert_eq!(streams.stdout.text(), "some output\n");
    // The command went through the agent's exec, with its directory; its environment came
    // on stdin, never in the request's URL (which API servers log).
    let seen = seen.lock().unwrap();
    let main =
        "/usr/lib/stockade/stockade-agent exec --cwd /workspace --env-stdin 4 -- bash -c echo hi";
    assert!(
        seen.commands.iter().any(|c| c == main),
        "{:?}",
        seen.commands
    );
    assert!(
        seen.commands.iter().all(|c| !c.contains("A=1")),
        "{:?}",
        seen.commands
    );
    assert_eq!(seen.stdin, b"A=1\0");
}

#[tokio::test]
async fn a_command_that_never_answers_is_ended_by_its_timeout() {
    let (code, timed_out, _, seen) = run(Main::Hang, Duration::from_millis(300)).await;
    // Timed out: no exit code, and the kill sweep ran inside.
    assert_eq!(code.unwrap(), -1);
    assert!(timed_out);
    let seen = seen.lock().unwrap();
    assert!(
        seen.commands
            .iter()
            .any(|c| c.contains(" kill --grace-ms 100")),
        "{:?}",
        seen.commands
    );
}
