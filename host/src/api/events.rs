//! `GET /v1/events`: what the node does, live, as server-sent events — the dashboard's
//! feed, and any other tool's (`curl -N`).
//!
//! The first event is `node` (the same object as `GET /v1/node`), repeated every few
//! seconds so figures that change without an event of their own (peers, resources,
//! refusals) stay current; then `round` events as rounds move through their phases and
//! `governor` when its state changes. A watcher that cannot keep up loses the oldest
//! events, never slows a round, and is told so with a `lagged` event.

use super::operate::node_view;
use super::{App, authorize};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often the `node` snapshot is sent again.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

pub(super) async fn events(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    let watch = app.node.watch();
    let first = node_event(&app).await;
    let tick =
        tokio::time::interval_at(tokio::time::Instant::now() + SNAPSHOT_EVERY, SNAPSHOT_EVERY);
    let stream = futures::stream::unfold(
        (app, watch, tick, Some(first)),
        |(app, mut watch, mut tick, first)| async move {
            if let Some(e) = first {
                return Some((e, (app, watch, tick, None)));
            }
            let event = tokio::select! {
                got = watch.recv() => match got {
                    Ok(e) => Event::default().event(e.kind).data(e.data.to_string()),
                    Err(RecvError::Lagged(n)) => Event::default()
                        .event("lagged")
                        .data(json!({"missed": n}).to_string()),
                    Err(RecvError::Closed) => return None,
                },
                _ = tick.tick() => node_event(&app).await,
            };
            Some((event, (app, watch, tick, None)))
        },
    )
    .map(Ok::<_, Infallible>)
    .boxed();
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn node_event(app: &App) -> Event {
    Event::default()
        .event("node")
        .data(node_view(app).await.to_string())
}
