//! The HTTP API, mongosync's contract: `GET /api/v1/progress` and
//! `POST /api/v1/{start,pause,resume,commit,reverse}`, answering `{"success":true}` or
//! `{"success":false,"error":"<Name>","errorDescription":"..."}`.
//!
//! [`serve`] runs it with guards a plain `axum::serve` lacks (see [`ServerLimits`]): a request
//! head must arrive within a timeout (which also closes idle keep-alive connections), a body
//! within another, at most so many connections are open, and a shutdown waits on requests being
//! served for a few seconds and on half-sent ones not at all.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use futures::StreamExt;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::{ApiError, Engine};
use crate::contract::errors::ErrorName;
use crate::contract::options::StartOptions;

/// The largest request body the API reads (every body it takes is a small JSON object).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// How much of a too-large body is read and dropped before answering, so that the client,
/// still sending, reads the answer rather than a reset connection.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;
/// How long a too-large body is drained at most.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// How long a shutdown waits on a connection with no request being served (one half-sent, or
/// a response being flushed).
const IDLE_SHUTDOWN: Duration = Duration::from_secs(1);

/// Overrides [`ServerLimits::header_timeout`], in milliseconds.
pub const HEADER_TIMEOUT_VAR: &str = "CLUSTERSYNC_API_HEADER_TIMEOUT_MS";
/// Overrides [`ServerLimits::body_timeout`], in milliseconds.
pub const BODY_TIMEOUT_VAR: &str = "CLUSTERSYNC_API_BODY_TIMEOUT_MS";
/// Overrides [`ServerLimits::max_connections`].
pub const MAX_CONNECTIONS_VAR: &str = "CLUSTERSYNC_API_MAX_CONNECTIONS";
/// Overrides [`ServerLimits::shutdown_grace`], in milliseconds.
pub const SHUTDOWN_GRACE_VAR: &str = "CLUSTERSYNC_API_SHUTDOWN_GRACE_MS";

/// How the API's server protects the engine from slow, idle or too many clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A connection must deliver a complete request head within this long of opening, or of
    /// its previous response (so this is the keep-alive idle timeout too); else it is closed.
    pub header_timeout: Duration,
    /// A request's body must arrive within this long of its head; else `RequestTimeout`.
    pub body_timeout: Duration,
    /// Connections open at once. A new one beyond closes the oldest that is not being served
    /// (idle, or with a request still arriving); when every one is, it is refused with
    /// `TooManyConnections`.
    pub max_connections: usize,
    /// On shutdown, how long requests being served may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl ServerLimits {
    /// The defaults, with the overrides of the environment (`CLUSTERSYNC_API_*`); a value that
    /// is not a positive whole number is ignored with a warning.
    pub fn from_env() -> Self {
        let (limits, problems) = Self::from_lookup(|k| std::env::var(k).ok());
        for p in problems {
            tracing::warn!(target: "clustersync", "{p}");
        }
        limits
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let d = Self::default();
        let mut problems = Vec::new();
        let mut num = |var: &str| -> Option<u64> {
            let v = get(var)?;
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    problems.push(format!(
                        "{var}={v:?} is not a positive whole number; using the default"
                    ));
                    None
                }
            }
        };
        let limits = Self {
            header_timeout: num(HEADER_TIMEOUT_VAR).map_or(d.header_timeout, Duration::from_millis),
            body_timeout: num(BODY_TIMEOUT_VAR).map_or(d.body_timeout, Duration::from_millis),
            max_connections: num(MAX_CONNECTIONS_VAR).map_or(d.max_connections, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
            shutdown_grace: num(SHUTDOWN_GRACE_VAR).map_or(d.shutdown_grace, Duration::from_millis),
        };
        (limits, problems)
    }
}

/// A refusal rendered in mongosync's shape.
pub struct Refusal {
    status: StatusCode,
    name: ErrorName,
    description: String,
}

impl Refusal {
    fn new(name: ErrorName, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(name.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            name,
            description: description.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "success": false, "error": self.name, "errorDescription": self.description })),
        )
            .into_response()
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::new(e.name(), e.to_string())
    }
}

fn ok() -> Response {
    Json(json!({ "success": true })).into_response()
}

/// Parses a request body strictly: it must be a JSON object, with known fields of the right
/// types. Each way of getting it wrong has its own error name.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    endpoint: &str,
    body: &[u8],
) -> Result<T, Refusal> {
    let example = if endpoint == "start" {
        r#"'{"source":"cluster0","destination":"cluster1"}'"#
    } else {
        "'{}'"
    };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Refusal::new(
            ErrorName::InvalidRequestBody,
            format!("/{endpoint} needs a JSON object as its body, e.g. --data {example}"),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            ErrorName::InvalidRequestBody,
            format!("the body of /{endpoint} is not valid JSON ({e}); send e.g. --data {example}"),
        )
    })?;
    if !value.is_object() {
        return Err(Refusal::new(
            ErrorName::InvalidRequestBody,
            format!("the body of /{endpoint} must be a JSON object, e.g. --data {example}"),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        // The field's path (`verification.enabled`, `includeNamespaces[0].databaseRegex`)
        // says where; serde's message says what.
        let path = e.path().to_string();
        let msg = readable(&e.inner().to_string());
        let name = if msg.starts_with("unknown field") {
            ErrorName::UnknownField
        } else if msg.starts_with("missing field") {
            ErrorName::MissingField
        } else {
            ErrorName::InvalidFieldValue
        };
        let at = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!(" {path}")
        };
        Refusal::new(name, format!("/{endpoint}{at}: {msg}"))
    })
}

/// serde names the Rust type it expected; a user needs the JSON shape.
fn readable(msg: &str) -> String {
    msg.replace(
        "expected struct RegexSpec",
        r#"expected an object {"pattern": "<regex>", "options": "<flags>"}"#,
    )
    .replace(
        "expected struct NamespaceFilter",
        r#"expected an object such as {"database": "<name>", "collections": ["<name>"]}"#,
    )
    .replace(
        "expected struct Verification",
        r#"expected an object {"enabled": true|false}"#,
    )
    .replace("expected struct ", "expected an object: ")
}

/// Bodies of the endpoints that take no parameters: `{}` and nothing else.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

pub fn router(engine: Arc<Engine>) -> Router {
    // Kept as a keyed digest, so that checking a token takes the same time whatever its length.
    let token = engine
        .config()
        .api_token
        .as_deref()
        .map(|t| token_tag(t.as_bytes()));
    let body_timeout = ServerLimits::from_lookup(|k| std::env::var(k).ok())
        .0
        .body_timeout;
    let registry = Arc::new(super::metrics::registry(engine.status()));
    Router::new()
        .route("/api/v1/progress", get(progress))
        .route("/api/v1/start", post(start))
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/commit", post(commit))
        .route("/api/v1/reverse", post(reverse))
        .route("/api/v1/preflight", post(preflight))
        .route("/api/v1/plan", post(plan))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside the token check: a caller without the token gets no body read.
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                read_body(req, next, body_timeout)
            },
        ))
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                match token {
                    Some(t) if !bearer_matches(&req, &t) => Refusal::new(
            ErrorName::Unauthorized,
                        "this engine's API needs the header Authorization: Bearer <token> with the token it was started with (--apiToken)",
                    )
                    .into_response(),
                    _ => next.run(req).await,
                }
            }
        }))
        // Kubelet probes cannot carry the API token, so health stays outside it and says
        // nothing about the sync.
        .route("/healthz", get(healthz))
        // Scrapers cannot carry the API token either; the metrics hold counts and no names
        // of hosts or users.
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        super::metrics::render(&registry),
                    )
                }
            }),
        )
        .with_state(engine)
}

/// The API while the engine is being built (its connection strings parsed, an SRV name
/// resolved, which can take a while): `/healthz` answers from the first moment, `/progress`
/// says INITIALIZING, and the verbs are refused until the engine's own router is in `slot`,
/// to which every request then goes.
pub fn starting(slot: Arc<std::sync::OnceLock<Router>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(move |req: axum::extract::Request| {
            let slot = slot.clone();
            async move {
                use tower::ServiceExt;
                match slot.get() {
                    Some(app) => match app.clone().oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    None if req.uri().path() == "/api/v1/progress" => {
                        Json(crate::contract::progress::ProgressReply {
                            progress: crate::contract::progress::Progress::nulls(
                                crate::contract::state::State::Initializing,
                                false,
                            ),
                            success: true,
                        })
                        .into_response()
                    }
                    None => Refusal::new(
                        ErrorName::InvalidState,
                        "the engine is still starting (reading its settings, resolving the clusters' addresses); poll /api/v1/progress until it leaves INITIALIZING",
                    )
                    .into_response(),
                }
            }
        })
}

async fn healthz() -> Response {
    Json(json!({ "ok": true })).into_response()
}

/// Whether the request carries the token whose [`token_tag`] is `tag`.
fn bearer_matches(req: &axum::extract::Request, tag: &[u8]) -> bool {
    let Some(given) = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    token_matches(given.as_bytes(), tag)
}

/// Key of the HMAC tokens are compared through: any fixed key does, the digest only makes
/// both sides the same length.
const TOKEN_KEY: &[u8] = b"clustersync API token";

/// The 32-byte HMAC-SHA-256 of a token, computed once for the configured one.
fn token_tag(token: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(TOKEN_KEY).expect("HMAC takes any key");
    mac.update(token);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `given` is the token whose tag is `tag`. Compares the digests, always 32 bytes, in
/// constant time: neither the token's bytes nor its length can be learnt from timings.
fn token_matches(given: &[u8], tag: &[u8]) -> bool {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(TOKEN_KEY).expect("HMAC takes any key");
    mac.update(given);
    mac.verify_slice(tag).is_ok()
}

/// Reads the body (at most [`MAX_BODY_BYTES`], within `timeout`) before the handler runs, so
/// that a too-large, slow or broken body gets an answer in the API's shape.
async fn read_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    timeout: Duration,
) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    let too_large = || {
        Refusal::new(
            ErrorName::RequestTooLarge,
            format!(
                "the request body is larger than the {} bytes the API reads; its bodies are small JSON objects, e.g. --data '{{\"source\":\"cluster0\",\"destination\":\"cluster1\"}}'",
                MAX_BODY_BYTES
            ),
        )
        .into_response()
    };
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        if declared.is_some_and(|n| n <= DRAIN_BYTES as u64) {
            drain(&mut stream).await;
        }
        return too_large();
    }
    let read = async {
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Some)?;
            if buf.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(None::<axum::Error>);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(None)) => {
            drain(&mut stream).await;
            too_large()
        }
        Ok(Err(Some(e))) => Refusal::new(
            ErrorName::InvalidRequestBody,
            format!("the request body could not be read: {e}"),
        )
        .into_response(),
        Err(_) => Refusal::new(
            ErrorName::RequestTimeout,
            format!(
                "the request body did not arrive within {} ms; send the whole body at once",
                timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Reads and drops what is left of a body, briefly and up to [`DRAIN_BYTES`].
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Counts a request being served on its connection while it lives.
struct Serving(Arc<AtomicUsize>);

impl Serving {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One open connection, as the accept loop sees it.
struct Slot {
    /// Requests being served on it.
    serving: Arc<AtomicUsize>,
    /// Closes it.
    evict: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Slots {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

impl Slots {
    /// Makes room for a new connection: with `max` open, closes the oldest not being served
    /// (idle, or with a request still arriving). `None` when every one is being served.
    fn admit(&mut self, max: usize) -> Option<(u64, Arc<AtomicUsize>, Arc<Notify>)> {
        while self.open.len() >= max.max(1) {
            let oldest_idle = self
                .open
                .iter()
                .find(|(_, s)| s.serving.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            if let Some(s) = self.open.remove(&oldest_idle) {
                s.evict.notify_one();
            }
        }
        let id = self.next;
        self.next += 1;
        let slot = Slot {
            serving: Arc::new(AtomicUsize::new(0)),
            evict: Arc::new(Notify::new()),
        };
        let handles = (id, slot.serving.clone(), slot.evict.clone());
        self.open.insert(id, slot);
        Some(handles)
    }
}

/// Serves `app` on `listener` with the [`ServerLimits`] of the environment until `shutdown`
/// completes; then stops accepting, lets requests being served finish for
/// [`ServerLimits::shutdown_grace`], and closes every other connection at once. The engine's
/// replacement for `axum::serve(listener, app).with_graceful_shutdown(shutdown)`.
pub async fn serve<F>(listener: TcpListener, app: Router, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(listener, app, shutdown, ServerLimits::from_env()).await
}

/// [`serve`] with the limits given.
pub async fn serve_with<F>(
    listener: TcpListener,
    app: Router,
    shutdown: F,
    limits: ServerLimits,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let slots = Arc::new(Mutex::new(Slots::default()));
    let (stop, stopped) = watch::channel(());
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let admitted = slots
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .admit(limits.max_connections);
                    match admitted {
                        Some((id, serving, evict)) => {
                            tasks.spawn(connection(
                                stream,
                                TowerToHyperService::new(app.clone()),
                                http.clone(),
                                Conn { id, serving, evict, slots: slots.clone() },
                                stopped.clone(),
                                limits.shutdown_grace,
                            ));
                        }
                        None => {
                            tasks.spawn(refuse(stream, limits.max_connections));
                        }
                    }
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(target: "clustersync", error = %e, "the API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop.send(());
    let deadline = tokio::time::Instant::now() + limits.shutdown_grace + IDLE_SHUTDOWN;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {}
    if !tasks.is_empty() {
        tracing::warn!(
            target: "clustersync",
            connections = tasks.len(),
            "API connections still open after the shutdown grace; closing them"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// Errors of one incoming connection that say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// A connection's handles on its slot.
struct Conn {
    id: u64,
    serving: Arc<AtomicUsize>,
    evict: Arc<Notify>,
    slots: Arc<Mutex<Slots>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .remove(&self.id);
    }
}

/// Serves one connection until it closes, is evicted, or the server stops.
async fn connection(
    stream: TcpStream,
    app: TowerToHyperService<Router>,
    http: Arc<http1::Builder>,
    conn: Conn,
    mut stopped: watch::Receiver<()>,
    grace: Duration,
) {
    let serving = conn.serving.clone();
    let service = hyper::service::service_fn(move |req| {
        let guard = Serving::new(&serving);
        let response = app.call(req);
        async move {
            let r = response.await;
            drop(guard);
            r
        }
    });
    let served = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let fuse = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(fuse);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = served.as_mut() => break,
            () = conn.evict.notified() => break,
            _ = stopped.changed(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
                let wait = if conn.serving.load(Ordering::Acquire) == 0 { IDLE_SHUTDOWN } else { grace };
                fuse.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            () = &mut fuse, if stopping => break,
        }
    }
}

/// Answers a connection beyond the cap, every other one being served, and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = json!({
        "success": false,
        "error": ErrorName::TooManyConnections,
        "errorDescription": format!("the API already serves {max} connections, each with a request under way; retry in a moment"),
    })
    .to_string();
    let reply = format!(
        "HTTP/1.1 {} Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        ErrorName::TooManyConnections.http_status(),
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent, so that closing does not reset the connection under the
        // answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn progress(AxState(engine): AxState<Arc<Engine>>) -> Response {
    Json(engine.progress()).into_response()
}

async fn start(AxState(engine): AxState<Arc<Engine>>, body: Bytes) -> Result<Response, Refusal> {
    let options: StartOptions = parse_body("start", &body)?;
    engine.start(options).await?;
    Ok(ok())
}

async fn pause(AxState(engine): AxState<Arc<Engine>>, body: Bytes) -> Result<Response, Refusal> {
    parse_body::<Empty>("pause", &body)?;
    engine.pause().await?;
    Ok(ok())
}

async fn resume(AxState(engine): AxState<Arc<Engine>>, body: Bytes) -> Result<Response, Refusal> {
    parse_body::<Empty>("resume", &body)?;
    engine.resume().await?;
    Ok(ok())
}

async fn commit(AxState(engine): AxState<Arc<Engine>>, body: Bytes) -> Result<Response, Refusal> {
    parse_body::<Empty>("commit", &body)?;
    engine.commit().await?;
    Ok(ok())
}

async fn reverse(AxState(engine): AxState<Arc<Engine>>, body: Bytes) -> Result<Response, Refusal> {
    parse_body::<Empty>("reverse", &body)?;
    engine.reverse().await?;
    Ok(ok())
}

/// Ours: the checks `/start` runs, for a supervisor that must not connect to the clusters.
async fn preflight(
    AxState(engine): AxState<Arc<Engine>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let options = parse_body::<StartOptions>("preflight", &body)?;
    Ok(Json(engine.check(options).await?).into_response())
}

/// Ours: what a sync with the `/start` body's options would carry, how long it should take and
/// what may go wrong (`{"plan": {...}, "success": true}`), in any state.
async fn plan(AxState(engine): AxState<Arc<Engine>>, body: Bytes) -> Result<Response, Refusal> {
    let options = parse_body::<StartOptions>("plan", &body)?;
    let plan = engine.plan(options).await?;
    Ok(Json(crate::contract::plan::PlanReply {
        plan,
        success: true,
    })
    .into_response())
}

async fn not_found(uri: Uri) -> Refusal {
    Refusal::new(
            ErrorName::NotFound,
        format!(
            "no endpoint at {}; the API is GET /api/v1/progress and POST /api/v1/start, pause, resume, commit, reverse, preflight, plan",
            uri.path()
        ),
    )
}

async fn method_not_allowed(uri: Uri) -> Refusal {
    let hint = if uri.path().ends_with("/progress") {
        "use GET"
    } else {
        "use POST with a JSON body"
    };
    Refusal::new(
        ErrorName::MethodNotAllowed,
        format!("{} does not accept this method; {hint}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_are_named() {
        let name = |r: Result<StartOptions, Refusal>| r.err().map(|r| r.name.as_str());
        assert_eq!(name(parse_body("start", b"")), Some("InvalidRequestBody"));
        assert_eq!(
            name(parse_body("start", b"{not json")),
            Some("InvalidRequestBody")
        );
        assert_eq!(
            name(parse_body("start", b"[1]")),
            Some("InvalidRequestBody")
        );
        assert_eq!(
            name(parse_body("start", br#"{"source":"cluster0"}"#)),
            Some("MissingField")
        );
        assert_eq!(
            name(parse_body(
                "start",
                br#"{"source":"cluster0","destination":"cluster1","x":1}"#
            )),
            Some("UnknownField")
        );
        assert_eq!(
            name(parse_body(
                "start",
                br#"{"source":1,"destination":"cluster1"}"#
            )),
            Some("InvalidFieldValue")
        );
        assert!(parse_body::<Empty>("pause", b"{}").is_ok());
        // The field is named, and the JSON shape rather than a Rust type.
        let e = parse_body::<StartOptions>(
            "start",
            br#"{"source":"cluster0","destination":"cluster1","verification":{"enabled":"no"}}"#,
        )
        .err()
        .unwrap();
        assert!(
            e.description
                .starts_with("/start verification.enabled: invalid type"),
            "{}",
            e.description
        );
        let e = parse_body::<StartOptions>(
            "start",
            br#"{"source":"cluster0","destination":"cluster1","includeNamespaces":[{"databaseRegex":"("}]}"#,
        )
        .err()
        .unwrap();
        assert!(
            e.description.contains("includeNamespaces[0].databaseRegex")
                && e.description.contains(r#"{"pattern": "<regex>""#)
                && !e.description.contains("RegexSpec"),
            "{}",
            e.description
        );
        assert_eq!(
            parse_body::<Empty>("pause", br#"{"a":1}"#)
                .err()
                .map(|r| r.name),
            Some(ErrorName::UnknownField)
        );
    }

    #[test]
    fn tokens_compare_through_fixed_length_digests() {
        let tag = token_tag(b"s3cret-t0ken");
        assert_eq!(tag.len(), 32);
        assert_eq!(token_tag(b"").len(), 32);
        assert_eq!(token_tag(&[b'x'; 10_000]).len(), 32);
        assert!(token_matches(b"s3cret-t0ken", &tag));
        for wrong in [
            &b""[..],
            b"s",
            b"s3cret-t0ke",
            b"s3cret-t0ken ",
            b"s3cret-t0kem",
            b"S3cret-t0ken",
            b"s3cret-t0kens3cret-t0ken",
        ] {
            assert!(!token_matches(wrong, &tag), "{wrong:?}");
        }
        assert!(token_matches(b"", &token_tag(b"")));
        // A tag of another length never matches.
        assert!(!token_matches(b"s3cret-t0ken", b"s3cret-t0ken"));
    }

    #[test]
    fn limits_come_from_the_environment_or_default() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let (l, problems) = ServerLimits::from_lookup(env(&[]));
        assert_eq!(l, ServerLimits::default());
        assert!(problems.is_empty());
        assert_eq!(l.header_timeout, Duration::from_secs(10));
        assert_eq!(l.max_connections, 256);
        let (l, problems) = ServerLimits::from_lookup(env(&[
            (HEADER_TIMEOUT_VAR, "250"),
            (BODY_TIMEOUT_VAR, " 750 "),
            (MAX_CONNECTIONS_VAR, "8"),
            (SHUTDOWN_GRACE_VAR, "0"),
        ]));
        assert_eq!(l.header_timeout, Duration::from_millis(250));
        assert_eq!(l.body_timeout, Duration::from_millis(750));
        assert_eq!(l.max_connections, 8);
        assert_eq!(l.shutdown_grace, ServerLimits::default().shutdown_grace);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains(SHUTDOWN_GRACE_VAR), "{problems:?}");
    }

    #[test]
    fn beyond_the_cap_the_oldest_idle_connection_goes() {
        let mut slots = Slots::default();
        let (a, a_serving, a_evict) = slots.admit(2).unwrap();
        let (b, _, b_evict) = slots.admit(2).unwrap();
        a_serving.fetch_add(1, Ordering::AcqRel); // a is serving a request
        let (c, c_serving, _) = slots.admit(2).unwrap();
        // b, the oldest not serving, made room; a stays.
        assert_eq!(slots.open.keys().copied().collect::<Vec<_>>(), vec![a, c]);
        assert!(futures::FutureExt::now_or_never(b_evict.notified()).is_some());
        assert!(futures::FutureExt::now_or_never(a_evict.notified()).is_none());
        assert!(b != c);
        // Every connection serving: the next is refused and none is closed.
        c_serving.fetch_add(1, Ordering::AcqRel);
        assert!(slots.admit(2).is_none());
        assert_eq!(slots.open.len(), 2);
    }

    /// A small app behind [`serve_with`]: `/api/v1/progress` answers, `/slow` takes 300 ms.
    async fn test_server(
        limits: ServerLimits,
    ) -> (
        u16,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let app = Router::new()
            .route(
                "/api/v1/progress",
                get(|| async { Json(json!({"state": "IDLE"})) }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(
            listener,
            app,
            async {
                let _ = rx.await;
            },
            limits,
        ));
        (port, tx, server)
    }

    async fn send(port: u16, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }

    /// Reads until the peer closes, or `None` after `wait`.
    async fn until_closed(s: &mut TcpStream, wait: Duration) -> Option<String> {
        let mut out = Vec::new();
        match tokio::time::timeout(wait, s.read_to_end(&mut out)).await {
            Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn serve_closes_half_sent_and_idle_connections_and_keeps_answering() {
        let limits = ServerLimits {
            header_timeout: Duration::from_millis(400),
            max_connections: 8,
            ..ServerLimits::default()
        };
        let (port, stop, server) = test_server(limits).await;
        let mut stalled = Vec::new();
        for _ in 0..20 {
            stalled.push(send(port, b"GET /api/v1/progress HTTP/1.1\r\nHost: x").await);
        }
        // Beyond the cap: answered at once, on a new connection.
        let mut ok = send(
            port,
            b"GET /api/v1/progress HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let answer = until_closed(&mut ok, Duration::from_millis(300)).await;
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "{answer:?}"
        );
        // Then every stalled one is closed: most at once (the cap is 8), the rest on the timeout.
        for s in &mut stalled {
            assert!(until_closed(s, Duration::from_secs(2)).await.is_some());
        }
        // An idle keep-alive connection goes the same way.
        let mut idle = send(port, b"GET /api/v1/progress HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let answer = until_closed(&mut idle, Duration::from_secs(2)).await;
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "{answer:?}"
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn at_the_cap_with_every_connection_busy_the_next_is_refused_in_json() {
        let limits = ServerLimits {
            max_connections: 1,
            ..ServerLimits::default()
        };
        let (port, stop, server) = test_server(limits).await;
        let mut busy = send(
            port,
            b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut refused = send(port, b"GET /api/v1/progress HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let answer = until_closed(&mut refused, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.contains(r#""error":"TooManyConnections""#),
            "{answer}"
        );
        let slow = until_closed(&mut busy, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(
            slow.starts_with("HTTP/1.1 200") && slow.ends_with("done"),
            "{slow}"
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_finishes_requests_under_way_and_drops_half_sent_ones() {
        let limits = ServerLimits {
            header_timeout: Duration::from_secs(60),
            ..ServerLimits::default()
        };
        let (port, stop, server) = test_server(limits).await;
        let mut half = send(port, b"GET /api/v1/progress HTTP/1.1\r\nHost: x").await;
        let mut slow = send(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("the server stops within the idle fuse")
            .unwrap()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let done = until_closed(&mut slow, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            done.starts_with("HTTP/1.1 200") && done.ends_with("done"),
            "{done}"
        );
        assert!(until_closed(&mut half, Duration::from_secs(1))
            .await
            .is_some());
        // The port no longer accepts.
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    }
}
