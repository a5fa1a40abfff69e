//! The OpenAI-compatible HTTP API a node serves (axum).
//!
//! `POST /v1/chat/completions` runs one swarm round with this node as entry node and
//! returns the consensus answer, plainly or as server-sent events in the shape the OpenAI
//! SDKs parse (`data: {chunk}` frames, then `data: [DONE]`); round progress travels as
//! SSE comment lines (`: forming`, `: answering 3 members`, `: ranking ...`), which the
//! SDKs skip. `GET /v1/models` lists the one model a node offers (the swarm), `GET
//! /v1/rounds/{id}` a recorded round's transcript and result, `GET /v1/node` this node's
//! id, peers and message statistics. Errors have OpenAI's shape. Any bearer token is
//! accepted unless the operator sets one (the SDKs refuse to run without some key).

use crate::plugins::Registry;
use crate::sandbox::{Message, Request};
use crate::swarm::wire::Turn;
use crate::swarm::{Node, Progress, RoundFailure};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::mpsc;

/// The model name clients use (any name is accepted; this is the one listed).
pub const MODEL: &str = "apiary-swarm";

pub mod admission;
mod dashboard;
mod events;
mod operate;

pub use admission::Admission;
use admission::Door;

/// How `apiary run` serves its API.
#[derive(Clone, Default)]
pub struct ApiOptions {
    /// Require this bearer token (or the dashboard's cookie); none: any token is accepted.
    pub token: Option<String>,
    pub admission: Admission,
    /// The plugins folder, for the listing with refusals and quarantines.
    pub registry: Option<Arc<Registry>>,
    /// False until the plugins are loaded: `/health` answers 503 meanwhile. None: ready.
    pub ready: Option<Arc<AtomicBool>>,
}

#[derive(Clone)]
struct App {
    node: Node,
    token: Option<String>,
    door: Door,
    registry: Option<Arc<Registry>>,
    ready: Arc<AtomicBool>,
}

pub fn router(node: Node, token: Option<String>) -> Router {
    router_with(
        node,
        ApiOptions {
            token,
            ..Default::default()
        },
    )
}

pub fn router_with(node: Node, options: ApiOptions) -> Router {
    let app = App {
        node,
        token: options.token,
        door: Door::new(options.admission),
        registry: options.registry,
        ready: options
            .ready
            .unwrap_or_else(|| Arc::new(AtomicBool::new(true))),
    };
    let page = dashboard::routes().layer(axum::middleware::from_fn_with_state(
        app.clone(),
        key_from_query,
    ));
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/rounds", get(operate::rounds))
        .route("/v1/rounds/{id}", get(round))
        .route("/v1/node", get(operate::status))
        .route("/v1/node/pause", post(operate::pause))
        .route("/v1/node/resume", post(operate::resume))
        .route("/v1/events", get(events::events))
        .route("/health", get(operate::health))
        .route("/metrics", get(operate::metrics))
        .merge(page)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint (this node serves the dashboard at /, /v1/models, /v1/chat/completions, /v1/rounds, /v1/rounds/{id}, /v1/node, /v1/events, /health, /metrics)",
            )
        })
        .with_state(app)
}

/// Serve until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, node: Node, token: Option<String>) {
    serve_with(
        listener,
        node,
        ApiOptions {
            token,
            ..Default::default()
        },
    )
    .await
}

pub async fn serve_with(listener: tokio::net::TcpListener, node: Node, options: ApiOptions) {
    if let Err(e) = axum::serve(listener, router_with(node, options)).await {
        tracing::error!("HTTP API stopped: {e}");
    }
}

/// The cookie the dashboard's own requests carry (a browser's `EventSource` cannot send
/// an `Authorization` header).
const KEY_COOKIE: &str = "apiary_key";

/// `/?key=KEY` with the right key: keep it in a cookie and show the page without it in the
/// address bar (or the browser's history).
async fn key_from_query(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("key="))
            .map(percent_decode)
    });
    match (&app.token, given) {
        (Some(token), Some(given)) if constant_time_eq(token.as_bytes(), given.as_bytes()) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, request.uri().path().to_string()),
                (
                    header::SET_COOKIE,
                    format!("{KEY_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                ),
            ],
        )
            .into_response(),
        (Some(_), Some(_)) => error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "wrong API key: open the dashboard with the key the node's operator set (--api-key)",
        ),
        _ => next.run(request).await,
    }
}

/// `%XX` and `+` as a form sends them.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Keys are compared in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
    )
        .into_response()
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &app.token else {
        return Ok(());
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(KEY_COOKIE)?.strip_prefix('='));
    let ok = [bearer, cookie]
        .into_iter()
        .flatten()
        .any(|given| constant_time_eq(given.as_bytes(), token.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or wrong API key: send `Authorization: Bearer <key>` with the key the node's operator set (--api-key)",
        )))
    }
}

fn now_s() -> u64 {
    crate::swarm::wire::now_ms() / 1000
}

async fn models(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    Json(json!({
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "apiary"}]
    }))
    .into_response()
}

async fn round(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    match app.node.transcript(&id) {
        Ok(t) => {
            let problems = t.verify();
            let winner = t
                .result
                .payload
                .winner
                .and_then(|w| t.answers.get(w))
                .map(|a| a.payload.text.clone());
            Json(json!({
                "id": t.id,
                "object": "apiary.round",
                "answer": winner,
                "verified": problems.is_empty(),
                "problems": problems,
                "transcript": t,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, "not_found", &e),
    }
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

/// The text of a message: a string, or the text parts of a content array.
fn text_of(content: &Option<Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A `POST /v1/chat/completions` body, validated: what the round is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAsk {
    /// The text of the last user message (never blank).
    pub prompt: String,
    /// The whole conversation, oldest first (`developer` read as `system`), which reaches
    /// the plugins as `request.messages`.
    pub messages: Vec<Turn>,
    pub model: String,
    /// In 1..=4096.
    pub max_tokens: u32,
    /// In [0, 2].
    pub temperature: f32,
    pub seed: Option<u64>,
    pub stream: bool,
}

/// Parse and validate a chat completion body; the error is the 400's message.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatAsk, String> {
    let req: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a chat completion request: {e}"))?;
    let prompt = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| text_of(&m.content))
        .filter(|t| !t.trim().is_empty())
        .ok_or("messages must contain a user message with text")?;
    let messages = req
        .messages
        .iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(format!(
                        "message role {other:?} is not supported: use system, developer, user or assistant"
                    ));
                }
            };
            Ok(Turn {
                role: role.to_string(),
                content: text_of(&m.content),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ChatAsk {
        prompt,
        messages,
        model: req.model.unwrap_or_else(|| MODEL.to_string()),
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(256)
            .clamp(1, 4096),
        temperature: req.temperature.unwrap_or(0.0).clamp(0.0, 2.0),
        seed: req.seed,
        stream: req.stream,
    })
}

async fn chat(State(app): State<App>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return *r;
    }
    let ask = match parse_chat_request(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", &e),
    };
    let (model, seed, req) = (ask.model.clone(), ask.seed, round_request(&ask));
    if let Err((size, limit)) = app.node.announcement_fits(&req) {
        crate::metrics::global().http_rejected("too_large");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            &format!(
                "the conversation is too large to ask the swarm: its announcement would be {size} bytes, and peers accept at most {limit}; shorten the messages"
            ),
        );
    }
    let ticket = match app.door.enter().await {
        Ok(t) => t,
        Err(busy) => return too_busy(busy),
    };
    if ask.stream {
        return stream(app, req, model, seed, ticket);
    }
    let result = app.node.ask_request(req, seed, None).await;
    drop(ticket);
    match result {
        Ok(r) => Json(json!({
            "id": format!("chatcmpl-{}", r.id),
            "object": "chat.completion",
            "created": now_s(),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": r.answer},
                "finish_reason": "stop",
                "logprobs": null
            }],
            // Plugins report the tokens they generate (contract 1.2); a prompt's tokens
            // depend on each plugin's tokenizer and are not counted.
            "usage": {"prompt_tokens": 0, "completion_tokens": r.tokens, "total_tokens": r.tokens},
            "apiary": r,
        }))
        .into_response(),
        Err(e) => failure(e),
    }
}

/// Seconds a refused client is told to wait: about one round's time.
const RETRY_AFTER_S: u64 = 5;

fn too_busy(busy: admission::Busy) -> Response {
    crate::metrics::global().http_rejected("busy");
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        &format!(
            "this node is busy: {} rounds running and {} waiting, the most it takes; retry after {RETRY_AFTER_S} s (its operator sets --max-rounds and --queue)",
            busy.running, busy.waiting
        ),
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(RETRY_AFTER_S),
    );
    r
}

fn failure(e: RoundFailure) -> Response {
    let status = match e {
        RoundFailure::NoVolunteers | RoundFailure::NoAnswers(_) => StatusCode::SERVICE_UNAVAILABLE,
        RoundFailure::Stopped | RoundFailure::Ledger(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, "server_error", &e.to_string())
}

/// What the round is asked: the conversation and its last user message.
fn round_request(ask: &ChatAsk) -> Request {
    let mut req = crate::round::request(&ask.prompt, 0);
    req.max_tokens = ask.max_tokens;
    req.temperature = ask.temperature;
    req.messages = ask
        .messages
        .iter()
        .map(|t| Message {
            role: t.role.clone(),
            content: t.content.clone(),
        })
        .collect();
    req
}

fn stream(
    app: App,
    req: Request,
    model: String,
    seed: Option<u64>,
    ticket: admission::Ticket,
) -> Response {
    let (events, rx) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        // The slot is held until the round is over, however the client reads.
        let _ticket = ticket;
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let node = app.node.clone();
        let ask = tokio::spawn(async move { node.ask_request(req, seed, Some(ptx)).await });
        while let Some(p) = prx.recv().await {
            let line = match p {
                Progress::Forming => "forming".to_string(),
                Progress::Answering { members } => format!("answering {members} members"),
                Progress::Ranking { answers, judges } => {
                    format!("ranking {answers} answers by {judges} judges")
                }
            };
            let _ = events.send(Event::default().comment(line));
        }
        let created = now_s();
        let chunk = |id: &str, delta: Value, finish: Value| {
            Event::default().data(
                json!({
                    "id": format!("chatcmpl-{id}"),
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                })
                .to_string(),
            )
        };
        match ask.await {
            Ok(Ok(r)) => {
                let _ = events.send(chunk(
                    &r.id,
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                ));
                // Word by word, so clients render it as they would a generated reply.
                for piece in r.answer.split_inclusive(' ') {
                    let _ = events.send(chunk(&r.id, json!({"content": piece}), Value::Null));
                }
                let _ = events.send(chunk(&r.id, json!({}), json!("stop")));
                let _ = events.send(Event::default().comment(format!(
                    "round {} margin {:.2} answers {} verdicts {}",
                    r.id, r.margin, r.answers, r.verdicts
                )));
            }
            Ok(Err(e)) => {
                let _ = events.send(Event::default().data(
                    json!({"error": {"message": e.to_string(), "type": "server_error", "param": null, "code": null}})
                        .to_string(),
                ));
            }
            Err(_) => {
                let _ = events.send(Event::default().data(
                    json!({"error": {"message": "the round failed", "type": "server_error", "param": null, "code": null}})
                        .to_string(),
                ));
            }
        }
        let _ = events.send(Event::default().data("[DONE]"));
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    })
    .boxed();
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_from_strings_and_parts() {
        assert_eq!(text_of(&Some(json!("hi"))), "hi");
        assert_eq!(
            text_of(&Some(
                json!([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}])
            )),
            "a\nb"
        );
        assert_eq!(text_of(&None), "");
    }

    #[test]
    fn chat_bodies_are_validated_and_clamped() {
        let ask = parse_chat_request(
            br#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}],"max_tokens":0,"temperature":9,"seed":3}"#,
        )
        .unwrap();
        assert_eq!(
            ask,
            ChatAsk {
                prompt: "c".into(),
                messages: [("user", "a"), ("assistant", "b"), ("user", "c")]
                    .map(|(role, content)| Turn {
                        role: role.into(),
                        content: content.into(),
                    })
                    .to_vec(),
                model: MODEL.into(),
                max_tokens: 1,
                temperature: 2.0,
                seed: Some(3),
                stream: false,
            }
        );
        let system = parse_chat_request(
            br#"{"messages":[{"role":"developer","content":"be brief"},{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(system.messages[0].role, "system");
        let tool = parse_chat_request(
            br#"{"messages":[{"role":"user","content":"hi"},{"role":"tool","content":"x"}]}"#,
        );
        assert!(tool.unwrap_err().contains("role \"tool\" is not supported"));
        let blank = parse_chat_request(br#"{"messages":[{"role":"user","content":"  "}]}"#);
        assert!(blank.unwrap_err().contains("user message with text"));
        assert!(
            parse_chat_request(b"[]")
                .unwrap_err()
                .contains("not a chat completion")
        );
    }
}
