//! The controller's side of the engine's HTTP API: where an engine is, and the calls the
//! controller makes to it. This is the only place the two meet.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use super::workload::API_PORT;
use crate::contract::errors::ErrorName;
use crate::contract::options::StartOptions;
use crate::contract::plan::{Plan, PlanReply};
use crate::contract::preflight::PreflightReply;
use crate::contract::progress::{Progress, ProgressReply};

/// Where the engine of a ClusterSync answers.
pub trait EngineLocator: Send + Sync {
    /// Base URL (`http://host:port`) of the engine named `engine` in `namespace`, or `None`
    /// while it has nowhere to be reached.
    fn base_url(&self, namespace: &str, engine: &str) -> Option<String>;
}

/// In a cluster: the engine's Service, by its DNS name.
pub struct ServiceDns;

impl EngineLocator for ServiceDns {
    fn base_url(&self, namespace: &str, engine: &str) -> Option<String> {
        Some(format!("http://{engine}.{namespace}.svc:{API_PORT}"))
    }
}

/// Addresses registered by whoever runs the engines (used when the operator runs outside the
/// cluster network, and by tests that play the kubelet).
#[derive(Clone, Default)]
pub struct StaticLocator {
    map: Arc<RwLock<HashMap<(String, String), String>>>,
}

impl StaticLocator {
    pub fn set(&self, namespace: &str, engine: &str, base_url: String) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((namespace.into(), engine.into()), base_url);
    }

    pub fn remove(&self, namespace: &str, engine: &str) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.into(), engine.into()));
    }
}

impl EngineLocator for StaticLocator {
    fn base_url(&self, namespace: &str, engine: &str) -> Option<String> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.into(), engine.into()))
            .cloned()
    }
}

/// Why a call to the engine did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the engine at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    /// The engine answered with one of its named API errors.
    #[error("the engine refused /{verb}: {name}: {description}")]
    Refused {
        verb: &'static str,
        status: u16,
        name: String,
        description: String,
    },
    #[error("the engine at {url} answered /{verb} with HTTP {status} and an unexpected body")]
    Protocol {
        url: String,
        verb: &'static str,
        status: u16,
    },
}

impl CallError {
    /// The engine's error name (`InsufficientPermissions`, ...) when it refused.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            CallError::Refused { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The refusal's name, when it is one the contract knows.
    pub fn refused_as(&self) -> Option<ErrorName> {
        self.refusal().and_then(ErrorName::parse)
    }
}

/// A state-changing call: the engine's own verbs.
pub use crate::contract::state::Verb;

/// The URL path segment of `verb` (`start`, `pause`, ...).
pub fn path(verb: Verb) -> &'static str {
    verb.name().trim_start_matches('/')
}

/// One engine's API, with its bearer token.
pub struct EngineApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl EngineApi {
    pub fn new(http: reqwest::Client, base: String, token: String) -> Self {
        Self { http, base, token }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/progress`, typed by the contract both sides compile against.
    pub async fn progress(&self) -> Result<Progress, CallError> {
        let url = format!("{}/api/v1/progress", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|_| CallError::Protocol {
            url: url.clone(),
            verb: "progress",
            status,
        })?;
        if status != 200 {
            return Err(refused_or_protocol(&url, "progress", status, &body));
        }
        serde_json::from_value::<ProgressReply>(body)
            .map(|r| r.progress)
            .map_err(|_| CallError::Protocol {
                url,
                verb: "progress",
                status,
            })
    }

    /// `POST /api/v1/<verb>` with the `/start` body `options`, answered 200 with a `T`.
    async fn post_options<T: serde::de::DeserializeOwned>(
        &self,
        verb: &'static str,
        options: &StartOptions,
    ) -> Result<T, CallError> {
        let url = format!("{}/api/v1/{verb}", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(options)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 200 {
            return Err(refused_or_protocol(&url, verb, status, &body));
        }
        serde_json::from_value(body).map_err(|_| CallError::Protocol { url, verb, status })
    }

    /// `POST /api/v1/preflight` with the `/start` body: the engine's checks, reported.
    pub async fn preflight(&self, options: &StartOptions) -> Result<PreflightReply, CallError> {
        self.post_options("preflight", options).await
    }

    /// `POST /api/v1/plan` with the `/start` body: what the sync would carry, how long it
    /// should take and what may go wrong. The engine bounds it (two minutes); the client's own
    /// timeout must allow for that.
    pub async fn plan(&self, options: &StartOptions) -> Result<Plan, CallError> {
        self.post_options::<PlanReply>("plan", options)
            .await
            .map(|r| r.plan)
    }

    /// `POST /api/v1/<verb>` with `body` (`{}` when the verb takes none).
    pub async fn call(&self, verb: Verb, body: Option<Value>) -> Result<(), CallError> {
        let url = format!("{}/api/v1/{}", self.base, path(verb));
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body.unwrap_or_else(|| json!({})))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 && body["success"] == json!(true) {
            return Ok(());
        }
        Err(refused_or_protocol(&url, path(verb), status, &body))
    }

    fn unreachable(&self, e: reqwest::Error) -> CallError {
        // reqwest's message names the URL, which is the Service address: nothing secret.
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        CallError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }
}

fn refused_or_protocol(url: &str, verb: &'static str, status: u16, body: &Value) -> CallError {
    match (body["error"].as_str(), body["errorDescription"].as_str()) {
        (Some(name), description) => CallError::Refused {
            verb,
            status,
            name: name.to_string(),
            description: description.unwrap_or_default().to_string(),
        },
        _ => CallError::Protocol {
            url: url.to_string(),
            verb,
            status,
        },
    }
}

/// The HTTP client the controller uses for every engine: short timeouts, so one hung engine
/// cannot stall a reconcile.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_engines_error_name() {
        let e = refused_or_protocol(
            "http://e",
            "start",
            403,
            &json!({"success": false, "error": "InsufficientPermissions", "errorDescription": "user u lacks restore"}),
        );
        assert_eq!(e.refusal(), Some("InsufficientPermissions"));
        assert!(e.to_string().contains("user u lacks restore"));
        let p = refused_or_protocol("http://e", "start", 502, &json!("bad gateway"));
        assert!(p.refusal().is_none());
        assert!(p.to_string().contains("HTTP 502"));
    }

    #[test]
    fn locators() {
        assert_eq!(
            ServiceDns.base_url("shop", "move-engine").as_deref(),
            Some("http://move-engine.shop.svc:27182")
        );
        let s = StaticLocator::default();
        assert!(s.base_url("a", "b").is_none());
        s.set("a", "b", "http://127.0.0.1:1".into());
        assert_eq!(s.base_url("a", "b").as_deref(), Some("http://127.0.0.1:1"));
        s.remove("a", "b");
        assert!(s.base_url("a", "b").is_none());
    }
}
