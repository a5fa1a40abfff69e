//! The endpoints an operator (and their tools) use: `GET /v1/node` (what the node is and
//! does), `POST /v1/node/pause|resume` (the governor by hand), `GET /v1/rounds` (recent
//! rounds, verified), `GET /health` (llama.cpp's: 503 while loading, 200 when ready) and
//! `GET /metrics` (OpenMetrics text for Prometheus).

use super::{App, authorize, error};
use crate::metrics::{self, Snapshot};
use crate::swarm::watch;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// Everything `GET /v1/node` says, also the dashboard's `node` event.
pub(super) async fn node_view(app: &App) -> Value {
    let net = app.node.net();
    let peers: Vec<String> = net.peers().await.iter().map(|p| p.to_string()).collect();
    let listening: Vec<String> = net
        .listening()
        .await
        .iter()
        .map(|a| format!("{a}/p2p/{}", net.peer_id))
        .collect();
    let governor = app.node.governor().map(|g| g.status());
    let cpu = governor
        .as_ref()
        .and_then(|s| s.sample.as_ref())
        .map(|s| s.own_cpu_percent);
    let listing = app.registry.as_ref().map(|r| r.listing());
    json!({
        "node": app.node.id(),
        "peer_id": net.peer_id.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": app.node.uptime().as_secs(),
        "ready": app.ready.load(Ordering::SeqCst),
        "listening": listening,
        "peers": peers,
        "plugins": app.node.expertise().names(),
        "plugin_listing": listing.map(|l| l.iter().map(plugin_entry).collect::<Vec<_>>()),
        "messages": net.stats(),
        "governor": governor,
        "resources": {"rss_mib": rss_mib(), "cpu_percent": cpu},
        "rounds": {
            "running": app.door.running(),
            "queued": app.door.waiting(),
            "max_rounds": app.door.limits().max_rounds,
            "queue": app.door.limits().queue,
        },
    })
}

fn plugin_entry(l: &crate::plugins::registry::Listing) -> Value {
    use crate::plugins::registry::Status;
    match &l.status {
        Status::Loaded {
            name,
            version,
            domains,
            quarantined,
            ..
        } => json!({
            "id": l.id,
            "status": if *quarantined { "quarantined" } else { "loaded" },
            "name": name,
            "version": version,
            "domains": domains,
        }),
        Status::Refused { reason } => json!({"id": l.id, "status": "refused", "reason": reason}),
    }
}

/// This process's resident memory, where the platform tells (Linux).
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

pub(super) async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    Json(node_view(&app).await).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    /// How long; none or null: until resumed.
    #[serde(default)]
    for_ms: Option<u64>,
}

pub(super) async fn pause(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    let body: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("the body must be {{\"for_ms\": N or null}}: {e}"),
                );
            }
        }
    };
    match app.node.governor() {
        Some(g) => Json(g.pause(body.for_ms)).into_response(),
        None => no_governor(),
    }
}

pub(super) async fn resume(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    match app.node.governor() {
        Some(g) => Json(g.resume()).into_response(),
        None => no_governor(),
    }
}

fn no_governor() -> Response {
    error(
        StatusCode::CONFLICT,
        "invalid_request_error",
        "this node runs without a governor (it is always active); `apiary run` has one",
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct RoundsQuery {
    #[serde(default)]
    limit: Option<usize>,
}

/// Recent rounds, newest first, each re-verified from its stored transcript.
pub(super) async fn rounds(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<RoundsQuery>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let node = app.node.clone();
    let data = tokio::task::spawn_blocking(move || {
        node.recent_rounds(limit)
            .into_iter()
            .map(|(id, created, t)| match t {
                Ok(t) => watch::summary(&t, created),
                Err(e) => json!({"id": id, "at_ms": created, "verified": false, "problems": [e]}),
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Open to anyone, like llama.cpp's: a load balancer or systemd probe has no key, and the
/// answer tells nothing but whether the plugins are loaded.
pub(super) async fn health(State(app): State<App>) -> Response {
    if app.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading", "message": "the node is loading its plugins"})),
        )
            .into_response()
    }
}

pub(super) async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    let net = app.node.net();
    let snapshot = Snapshot {
        peers: net.peers().await.len(),
        refused: net.stats().rejected.into_iter().collect(),
        governor: app.node.governor().map(|g| g.state().to_string()),
        rounds_running: app.door.running(),
        rounds_queued: app.door.waiting(),
    };
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::global().encode(&snapshot),
    )
        .into_response()
}
