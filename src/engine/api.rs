//! The HTTP API, mongosync's contract: `GET /api/v1/progress` and
//! `POST /api/v1/{start,pause,resume,commit,reverse}`, answering `{"success":true}` or
//! `{"success":false,"error":"<Name>","errorDescription":"..."}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, Engine};
use crate::contract::errors::ErrorName;
use crate::contract::options::StartOptions;

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
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let name = if msg.starts_with("unknown field") {
            ErrorName::UnknownField
        } else if msg.starts_with("missing field") {
            ErrorName::MissingField
        } else {
            ErrorName::InvalidFieldValue
        };
        Refusal::new(name, format!("/{endpoint}: {msg}"))
    })
}

/// Bodies of the endpoints that take no parameters: `{}` and nothing else.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

pub fn router(engine: Arc<Engine>) -> Router {
    let token = engine.config().api_token.clone();
    let registry = Arc::new(super::metrics::registry(engine.status()));
    Router::new()
        .route("/api/v1/progress", get(progress))
        .route("/api/v1/start", post(start))
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/commit", post(commit))
        .route("/api/v1/reverse", post(reverse))
        .route("/api/v1/preflight", post(preflight))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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

async fn healthz() -> Response {
    Json(json!({ "ok": true })).into_response()
}

/// Compares in constant time, so the token cannot be guessed byte by byte from timings.
fn bearer_matches(req: &axum::extract::Request, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

async fn not_found(uri: Uri) -> Refusal {
    Refusal::new(
            ErrorName::NotFound,
        format!(
            "no endpoint at {}; the API is GET /api/v1/progress and POST /api/v1/start, pause, resume, commit, reverse, preflight",
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
        assert_eq!(
            parse_body::<Empty>("pause", br#"{"a":1}"#)
                .err()
                .map(|r| r.name),
            Some(ErrorName::UnknownField)
        );
    }
}
