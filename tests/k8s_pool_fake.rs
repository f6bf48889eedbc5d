//! The warm pool's error paths against a scripted API server on loopback: a claim that loses
//! a pod to another claimer (409), an unexpected error, an empty pool, a pool that stays
//! contended, a release of someone else's pod. Each answer is scripted; the client, its
//! requests and the pool's decisions are the real ones.
#![cfg(feature = "kubernetes")]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use stockade::backend::kubernetes::pool::{Pool, CLAIM_ROUNDS};
use stockade::backend::kubernetes::{PoolError, RenderOptions};
use stockade::backend::SandboxSpec;
use stockade::plan::sandbox_spec;
use stockade::profile::{load, ProfileDirs};

const NAMESPACE: &str = "pool-test";
const OWNER: &str = "0123456789ab";
const BODY_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// What the server answers, in order; the last list answer repeats.
#[derive(Default)]
struct Script {
    lists: VecDeque<Vec<Value>>,
    patches: VecDeque<(u16, Value)>,
    gets: VecDeque<Value>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Script>>;

fn template() -> SandboxSpec {
    let p = load("default", &ProfileDirs::default()).unwrap();
    sandbox_spec(&p, None, "template", OWNER, None)
}

fn pod(name: &str, rv: &str, state: &str, claim: Option<&str>) -> Value {
    let spec = template();
    let mut labels = json!({
        "app.kubernetes.io/managed-by": "stockade",
        "stockade.dev/owner": OWNER,
        "stockade.dev/profile": "default",
        "stockade.dev/pool-state": state,
        "stockade.dev/spec": spec.digest,
    });
    if let Some(c) = claim {
        labels["stockade.dev/claim"] = json!(c);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": format!("uid-{name}"),
            "resourceVersion": rv,
            "labels": labels,
        },
        "spec": {"containers": [{"name": "sandbox"}], "activeDeadlineSeconds": 3695},
        "status": {"phase": "Pending"},
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn conflict(name: &str) -> (u16, Value) {
    (
        409,
        status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on pods \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        ),
    )
}

async fn answer(State(script): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    let mut s = script.lock().unwrap();
    s.seen.push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let (code, body) = match parts.method.as_str() {
        "GET" if parts.uri.path() == pods => {
            let items = if s.lists.len() > 1 {
                s.lists.pop_front().unwrap_or_default()
            } else {
                s.lists.front().cloned().unwrap_or_default()
            };
            (
                200,
                json!({"apiVersion": "v1", "kind": "PodList",
                       "metadata": {"resourceVersion": "100"}, "items": items}),
            )
        }
        "GET" => match s.gets.pop_front() {
            Some(p) => (200, p),
            None => (404, status(404, "NotFound", "not scripted")),
        },
        "PATCH" => s
            .patches
            .pop_front()
            .unwrap_or_else(|| (500, status(500, "InternalError", "no patch scripted"))),
        _ => (500, status(500, "InternalError", "not scripted")),
    };
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    response.into_response()
}

/// Starts the scripted server on a free loopback port; it ends with the test's runtime.
async fn serve(script: Script) -> (Pool, Shared) {
    let shared: Shared = Arc::new(Mutex::new(script));
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let p = load("default", &ProfileDirs::default()).unwrap();
    let opts = RenderOptions::new(NAMESPACE, p.timeout, p.kill_grace);
    let pool = Pool::new(client, template(), opts, Duration::from_secs(3600)).unwrap();
    (pool, shared)
}

fn seen(shared: &Shared, method: &str) -> Vec<Seen> {
    let s = shared.lock().unwrap();
    s.seen
        .iter()
        .filter(|r| r.method == method)
        .cloned()
        .collect()
}

fn patched_name(r: &Seen) -> &str {
    r.path.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn a_409_on_the_first_claim_patch_moves_the_claimer_to_the_next_pod() {
    let a = pod("stockade-x-a", "11", "warm", None);
    let b = pod("stockade-x-b", "12", "warm", None);
    // Which pod is tried first is the claimer's choice: the first patch loses, whichever it is.
    let (pool, shared) = serve(Script {
        lists: VecDeque::from([vec![a, b]]),
        patches: VecDeque::from([
            conflict("first"),
            (200, pod("stockade-x-won", "13", "claimed", Some("c1"))),
        ]),
        ..Script::default()
    })
    .await;
    let won = pool.claim("c1").await.unwrap();
    let patches = seen(&shared, "PATCH");
    assert_eq!(patches.len(), 2, "{patches:?}");
    let (first, second) = (patched_name(&patches[0]), patched_name(&patches[1]));
    assert_ne!(first, second, "the loser retried the pod it lost");
    assert_eq!(won.pod, second);
    assert_eq!(won.claim, "c1");
    assert_eq!(won.conflicts, 1);
    assert_eq!(won.resource_version, "13");
    for p in &patches {
        assert_eq!(p.content_type, "application/merge-patch+json");
        let rv = if patched_name(p) == "stockade-x-a" {
            "11"
        } else {
            "12"
        };
        assert_eq!(p.body["metadata"]["resourceVersion"], json!(rv), "{p:?}");
        assert_eq!(
            p.body["metadata"]["labels"],
            json!({"stockade.dev/pool-state": "claimed", "stockade.dev/claim": "c1"})
        );
        // The warm deadline (3695 s) is lowered to the one-shot's.
        let d = p.body["spec"]["activeDeadlineSeconds"].as_i64().unwrap();
        assert!(d < 3695, "{d}");
    }
    let lists = seen(&shared, "GET");
    assert_eq!(lists.len(), 1);
    assert!(
        lists[0].query.contains("stockade.dev%2Fpool-state%3Dwarm")
            || lists[0].query.contains("stockade.dev/pool-state=warm"),
        "{}",
        lists[0].query
    );
}

#[tokio::test]
async fn an_unexpected_error_ends_the_claim_without_trying_other_pods() {
    let (pool, shared) = serve(Script {
        lists: VecDeque::from([vec![
            pod("stockade-x-a", "11", "warm", None),
            pod("stockade-x-b", "12", "warm", None),
        ]]),
        patches: VecDeque::from([(
            403,
            status(403, "Forbidden", "pods is forbidden: cannot patch resource"),
        )]),
        ..Script::default()
    })
    .await;
    let err = pool.claim("c1").await.unwrap_err();
    match &err {
        PoolError::Api {
            action: "claim pod",
            error,
            ..
        } => assert!(
            matches!(&**error, kube::Error::Api(r) if r.code == 403),
            "{error:?}"
        ),
        other => panic!("want a 403 claim error, got {other:?}"),
    }
    assert!(err.to_string().contains("grant the Role"), "{err}");
    assert_eq!(seen(&shared, "PATCH").len(), 1);
}

#[tokio::test]
async fn a_loser_whose_pool_emptied_gets_the_pool_empty_error() {
    let (pool, shared) = serve(Script {
        lists: VecDeque::from([vec![pod("stockade-x-a", "11", "warm", None)], vec![]]),
        patches: VecDeque::from([conflict("stockade-x-a")]),
        ..Script::default()
    })
    .await;
    let err = pool.claim("c1").await.unwrap_err();
    assert!(matches!(err, PoolError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains("fill it"), "{err}");
    assert_eq!(seen(&shared, "PATCH").len(), 1);
    assert_eq!(seen(&shared, "GET").len(), 2);
}

#[tokio::test]
async fn an_empty_pool_is_an_error_and_no_pod_is_made() {
    let (pool, shared) = serve(Script::default()).await;
    let err = pool.claim("c1").await.unwrap_err();
    assert!(matches!(err, PoolError::Empty { .. }), "{err:?}");
    let s = shared.lock().unwrap();
    assert!(s.seen.iter().all(|r| r.method == "GET"), "{:?}", s.seen);
}

#[tokio::test]
async fn a_pool_that_stays_contended_gives_up_after_bounded_rounds() {
    let conflicts = (0..2 * CLAIM_ROUNDS).map(|_| conflict("x")).collect();
    let (pool, shared) = serve(Script {
        lists: VecDeque::from([vec![
            pod("stockade-x-a", "11", "warm", None),
            pod("stockade-x-b", "12", "warm", None),
        ]]),
        patches: conflicts,
        ..Script::default()
    })
    .await;
    let err = pool.claim("c1").await.unwrap_err();
    match err {
        PoolError::Contended {
            rounds, conflicts, ..
        } => {
            assert_eq!(rounds, CLAIM_ROUNDS);
            assert_eq!(conflicts, 2 * CLAIM_ROUNDS);
        }
        other => panic!("want Contended, got {other:?}"),
    }
    assert_eq!(seen(&shared, "PATCH").len(), 2 * CLAIM_ROUNDS);
    assert_eq!(seen(&shared, "GET").len(), CLAIM_ROUNDS);
}

#[tokio::test]
async fn a_release_of_a_pod_another_claim_holds_deletes_nothing() {
    let (pool, shared) = serve(Script {
        gets: VecDeque::from([pod("stockade-x-a", "11", "claimed", Some("theirs"))]),
        ..Script::default()
    })
    .await;
    let err = pool.release("stockade-x-a", "mine").await.unwrap_err();
    assert!(matches!(err, PoolError::NotHeld { .. }), "{err:?}");
    assert!(err.to_string().contains("claim theirs"), "{err}");
    assert!(seen(&shared, "DELETE").is_empty());
}
