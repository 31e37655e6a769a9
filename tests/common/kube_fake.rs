//! An in-memory fake Kubernetes API server for tests.
//!
//! [`FakeApiServer::new`] returns the server handle plus a [`kube::Client`] whose transport is
//! an axum `Router` served in-process (no sockets). It is good enough for `kube::Api<K>`
//! (get/list/create/replace/patch/delete, status subresource), `kube::runtime::watcher` and a
//! real `kube::runtime::Controller`.
//!
//! Supported:
//! - paths `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/status]]` and
//!   `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/status]]`; a path without a
//!   namespace lists across all namespaces (or addresses a cluster-scoped object, stored with
//!   namespace `""`);
//! - GET (get, list, `watch=true` with `resourceVersion`, `timeoutSeconds`,
//!   `sendInitialEvents`), POST, PUT, PATCH (merge, strategic-merge treated as merge,
//!   server-side apply treated as merge + create-if-absent, JSON patch add/remove/replace/test/
//!   move/copy), DELETE (finalizers → `deletionTimestamp`), DELETE on a collection;
//! - `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and
//!   `fieldSelector` (dotted paths with `=`, `==`, `!=`);
//! - `metadata.resourceVersion` optimistic concurrency (409 Conflict), `generation` bumps when
//!   anything outside `metadata`/`status` changes, no-op writes do not bump the resourceVersion.
//!
//! Not supported: discovery, pagination (`limit`/`continue` are ignored: everything is returned
//! in one page), `410 Gone` for expired resourceVersions, watch bookmarks other than the
//! initial-events-end one, managedFields / real apply conflict detection, dry-run, strategic
//! merge list semantics, admission/validation, owner-reference garbage collection, and
//! watch DELETED events for objects that stop matching a selector.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use futures::StreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

/// (api prefix such as `api/v1` or `apis/group/version`, plural, namespace (`""` if cluster-scoped), name)
pub type Key = (String, String, String, String);

#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub prefix: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event_type: &'static str,
    pub object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    kinds: HashMap<(String, String), String>,
    history: Vec<Arc<WatchEvent>>,
    requests: Vec<String>,
    /// Resource types the server answers 404 for, as if their CRD were not installed.
    missing: Vec<(String, String)>,
}

struct Inner {
    store: Mutex<Store>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

/// Handle on the fake API server. Cheap to clone.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
}

/// API prefix (`api/v1` or `apis/{group}/{version}`) of a static resource type.
pub fn api_prefix_of<K: Resource<DynamicType = ()>>() -> String {
    let group = K::group(&());
    let version = K::version(&());
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

impl FakeApiServer {
    /// A fresh empty server and a client (default namespace `default`) talking to it.
    pub fn new() -> (FakeApiServer, kube::Client) {
        let (tx, _) = broadcast::channel(4096);
        let server = FakeApiServer {
            inner: Arc::new(Inner {
                store: Mutex::new(Store::default()),
                tx,
            }),
        };
        let client = server.client();
        (server, client)
    }

    /// Another client on the same server.
    pub fn client(&self) -> kube::Client {
        let router = Router::new()
            .fallback(handle)
            .with_state(self.inner.clone());
        kube::Client::new(router, "default")
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap()
    }

    /// Current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().rv
    }

    /// Log of requests received, as `"METHOD /path?query"`.
    pub fn requests(&self) -> Vec<String> {
        self.store().requests.clone()
    }

    /// Every watch event emitted so far.
    pub fn events(&self) -> Vec<WatchEvent> {
        self.store().history.iter().map(|e| (**e).clone()).collect()
    }

    /// Answer 404 for every request on `plural` (as before its CRD is installed), or stop.
    pub fn set_missing(&self, prefix: &str, plural: &str, missing: bool) {
        let mut st = self.store();
        st.missing.retain(|(p, pl)| !(p == prefix && pl == plural));
        if missing {
            st.missing.push((prefix.into(), plural.into()));
        }
    }

    /// Tell the server the `kind` of `plural` (used for `<Kind>List` when nothing is stored yet).
    pub fn register_kind(&self, prefix: &str, plural: &str, kind: &str) {
        self.store()
            .kinds
            .insert((prefix.into(), plural.into()), kind.into());
    }

    /// Insert (or overwrite) a raw object, bypassing the API: assigns uid/resourceVersion/
    /// creationTimestamp/generation when missing and emits a watch event. `namespace` is taken
    /// from `metadata.namespace` (`""` if absent, i.e. cluster-scoped).
    pub fn insert(&self, prefix: &str, plural: &str, mut obj: Value) -> Value {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let key = (prefix.to_string(), plural.to_string(), ns, name);
        let inner = &self.inner;
        let mut st = inner.store.lock().unwrap();
        let existed = st.objects.contains_key(&key);
        fill_create_meta(&mut obj);
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let ty = if existed { "MODIFIED" } else { "ADDED" };
        commit(inner, &mut st, key, Some(obj.clone()), ty, obj.clone());
        obj
    }

    /// Raw stored object.
    pub fn get(&self, prefix: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.store()
            .objects
            .get(&(prefix.into(), plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// Raw stored objects of `plural`, optionally restricted to a namespace.
    pub fn list(&self, prefix: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        self.store()
            .objects
            .iter()
            .filter(|((p, pl, ns, _), _)| {
                p == prefix && pl == plural && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Remove an object outright (ignores finalizers), emitting DELETED. Returns it if present.
    pub fn remove(&self, prefix: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (prefix.into(), plural.into(), namespace.into(), name.into());
        let mut st = self.inner.store.lock().unwrap();
        let mut old = st.objects.get(&key).cloned()?;
        st.rv += 1;
        old["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        commit(&self.inner, &mut st, key, None, "DELETED", old.clone());
        Some(old)
    }

    /// Typed insert of a static resource (namespace from `metadata.namespace`).
    pub fn insert_resource<K>(&self, obj: &K) -> K
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let mut v = serde_json::to_value(obj).expect("serialize");
        v["apiVersion"] = json!(K::api_version(&()));
        v["kind"] = json!(K::kind(&()));
        let out = self.insert(&api_prefix_of::<K>(), &K::plural(&()), v);
        serde_json::from_value(out).expect("deserialize")
    }

    /// Typed get; `namespace` is `""` for cluster-scoped resources.
    pub fn get_resource<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        self.get(&api_prefix_of::<K>(), &K::plural(&()), namespace, name)
            .map(|v| serde_json::from_value(v).expect("deserialize"))
    }

    /// Typed list, optionally in one namespace.
    pub fn list_resources<K>(&self, namespace: Option<&str>) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        self.list(&api_prefix_of::<K>(), &K::plural(&()), namespace)
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("deserialize"))
            .collect()
    }

    /// Poll the store until `pred` holds for the object (or `timeout` elapses → `None`).
    pub async fn wait_for<K, F>(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        pred: F,
    ) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
        F: Fn(&K) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(obj) = self.get_resource::<K>(namespace, name) {
                if pred(&obj) {
                    return Some(obj);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store mutation helpers

fn now_timestamp() -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap()
}

fn fill_create_meta(obj: &mut Value) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"].as_object_mut().unwrap();
    if !meta.get("uid").is_some_and(Value::is_string) {
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    }
    if !meta.get("creationTimestamp").is_some_and(Value::is_string) {
        meta.insert("creationTimestamp".into(), now_timestamp());
    }
    if !meta.get("generation").is_some_and(Value::is_number) {
        meta.insert("generation".into(), json!(1));
    }
}

/// Store (or remove when `new` is None) and broadcast an event.
fn commit(
    inner: &Inner,
    st: &mut Store,
    key: Key,
    new: Option<Value>,
    ty: &'static str,
    event_obj: Value,
) {
    if let Some(kind) = event_obj["kind"].as_str() {
        st.kinds
            .insert((key.0.clone(), key.1.clone()), kind.to_string());
    }
    let ev = Arc::new(WatchEvent {
        prefix: key.0.clone(),
        plural: key.1.clone(),
        namespace: key.2.clone(),
        name: key.3.clone(),
        resource_version: st.rv,
        event_type: ty,
        object: event_obj,
    });
    match new {
        Some(v) => {
            st.objects.insert(key, v);
        }
        None => {
            st.objects.remove(&key);
        }
    }
    st.history.push(ev.clone());
    let _ = inner.tx.send(ev);
}

// ---------------------------------------------------------------------------------------------
// HTTP layer

struct Target {
    prefix: String,
    plural: String,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn key(&self) -> Key {
        (
            self.prefix.clone(),
            self.plural.clone(),
            self.ns.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }
    fn api_version(&self) -> String {
        self.prefix
            .strip_prefix("apis/")
            .or_else(|| self.prefix.strip_prefix("api/"))
            .unwrap_or(&self.prefix)
            .to_string()
    }
    fn group(&self) -> String {
        match self.prefix.strip_prefix("apis/") {
            Some(gv) => gv.split('/').next().unwrap_or("").to_string(),
            None => String::new(),
        }
    }
    fn resource_desc(&self) -> String {
        let g = self.group();
        if g.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, g)
        }
    }
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.first().copied() {
        Some("api") if segs.len() >= 3 => (format!("api/{}", segs[1]), &segs[2..]),
        Some("apis") if segs.len() >= 4 => (format!("apis/{}/{}", segs[1], segs[2]), &segs[3..]),
        _ => return None,
    };
    let s = |i: usize| rest.get(i).map(|x| x.to_string());
    let namespaced =
        rest.len() >= 3 && rest[0] == "namespaces" && !(rest.len() == 3 && rest[2] == "status");
    let t = if namespaced {
        if rest.len() > 5 {
            return None;
        }
        Target {
            prefix,
            plural: rest[2].to_string(),
            ns: s(1),
            name: s(3),
            sub: s(4),
        }
    } else {
        if rest.is_empty() || rest.len() > 3 {
            return None;
        }
        Target {
            prefix,
            plural: rest[0].to_string(),
            ns: None,
            name: s(1),
            sub: s(2),
        }
    };
    Some(t)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn status_error(code: u16, reason: &str, message: String) -> Response {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
}

fn not_found(t: &Target) -> Response {
    status_error(
        404,
        "NotFound",
        format!(
            "{} \"{}\" not found",
            t.resource_desc(),
            t.name.as_deref().unwrap_or("")
        ),
    )
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());
    inner.store.lock().unwrap().requests.push(format!(
        "{} {}{}",
        parts.method,
        path,
        parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));
    let Some(t) = parse_path(&path) else {
        return status_error(404, "NotFound", format!("the server could not find {path}"));
    };
    if inner
        .store
        .lock()
        .unwrap()
        .missing
        .iter()
        .any(|(p, pl)| *p == t.prefix && *pl == t.plural)
    {
        return status_error(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
    }
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return status_error(400, "BadRequest", e.to_string()),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if t.sub.as_deref().is_some_and(|s| s != "status") {
        return status_error(
            404,
            "NotFound",
            format!("subresource {:?} not supported", t.sub),
        );
    }
    let is_status = t.sub.is_some();
    let parse_body = || -> Result<Value, Response> {
        serde_json::from_slice::<Value>(&body)
            .or_else(|_| serde_norway::from_slice::<Value>(&body))
            .map_err(|e| status_error(400, "BadRequest", format!("invalid body: {e}")))
    };
    let r = match (&parts.method, t.name.is_some()) {
        (&Method::GET, true) => {
            let st = inner.store.lock().unwrap();
            match st.objects.get(&t.key()) {
                Some(o) => Ok(json_response(StatusCode::OK, o)),
                None => Ok(not_found(&t)),
            }
        }
        (&Method::GET, false) => {
            if matches!(
                query.get("watch").map(String::as_str),
                Some("true") | Some("1")
            ) {
                Ok(watch(&inner, &t, &query))
            } else {
                Ok(list(&inner, &t, &query))
            }
        }
        (&Method::POST, false) => parse_body().and_then(|b| create(&inner, &t, b)),
        (&Method::PUT, true) => parse_body().and_then(|b| replace(&inner, &t, b, is_status)),
        (&Method::PATCH, true) => {
            parse_body().and_then(|b| patch(&inner, &t, &content_type, b, is_status))
        }
        (&Method::DELETE, true) => delete(&inner, &t),
        (&Method::DELETE, false) => delete_collection(&inner, &t, &query),
        _ => Ok(status_error(
            405,
            "MethodNotAllowed",
            format!("{} not allowed on {path}", parts.method),
        )),
    };
    r.unwrap_or_else(|e| e)
}

// ---------------------------------------------------------------------------------------------
// Selectors

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

fn label_selector_matches(sel: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    split_top_level(sel).iter().all(|req| {
        let set = |rest: &str| -> Vec<String> {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|x| x.trim().to_string())
                .collect()
        };
        if let Some((k, rest)) = req.split_once(" notin ") {
            return get(k.trim()).is_none_or(|v| !set(rest).iter().any(|x| x == v));
        }
        if let Some((k, rest)) = req.split_once(" in ") {
            return get(k.trim()).is_some_and(|v| set(rest).iter().any(|x| x == v));
        }
        if let Some((k, v)) = req.split_once("!=") {
            return get(k.trim()) != Some(v.trim());
        }
        if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            return get(k.trim()) == Some(v.trim());
        }
        if let Some(k) = req.strip_prefix('!') {
            return get(k.trim()).is_none();
        }
        labels.get(req.as_str()).is_some()
    })
}

fn field_selector_matches(sel: &str, obj: &Value) -> bool {
    let lookup = |path: &str| -> String {
        let mut cur = obj;
        for p in path.split('.') {
            cur = &cur[p];
        }
        match cur {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    split_top_level(sel).iter().all(|req| {
        if let Some((k, v)) = req.split_once("!=") {
            lookup(k.trim()) != v.trim()
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            lookup(k.trim()) == v.trim()
        } else {
            true
        }
    })
}

fn selectors_match(query: &HashMap<String, String>, obj: &Value) -> bool {
    query
        .get("labelSelector")
        .is_none_or(|s| label_selector_matches(s, obj))
        && query
            .get("fieldSelector")
            .is_none_or(|s| field_selector_matches(s, obj))
}

fn in_scope(t: &Target, prefix: &str, plural: &str, ns: &str) -> bool {
    prefix == t.prefix && plural == t.plural && t.ns.as_deref().is_none_or(|n| n == ns)
}

fn kind_of(st: &Store, t: &Target) -> String {
    st.kinds
        .get(&(t.prefix.clone(), t.plural.clone()))
        .cloned()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Verbs

fn matching_objects(st: &Store, t: &Target, query: &HashMap<String, String>) -> Vec<Value> {
    st.objects
        .iter()
        .filter(|((p, pl, ns, _), o)| in_scope(t, p, pl, ns) && selectors_match(query, o))
        .map(|(_, o)| o.clone())
        .collect()
}

fn list(inner: &Inner, t: &Target, query: &HashMap<String, String>) -> Response {
    let st = inner.store.lock().unwrap();
    let items = matching_objects(&st, t, query);
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": t.api_version(),
            "kind": format!("{}List", kind_of(&st, t)),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        }),
    )
}

fn event_line(ty: &str, obj: &Value) -> Result<Bytes, Infallible> {
    let mut v = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap();
    v.push(b'\n');
    Ok(Bytes::from(v))
}

fn watch(inner: &Arc<Inner>, t: &Target, query: &HashMap<String, String>) -> Response {
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let since = query
        .get("resourceVersion")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let send_initial = query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let (initial, rx) = {
        let st = inner.store.lock().unwrap();
        let rx = inner.tx.subscribe();
        let mut initial = Vec::new();
        if since == 0 || send_initial {
            for o in matching_objects(&st, t, query) {
                initial.push(event_line("ADDED", &o));
            }
            if send_initial {
                initial.push(event_line(
                    "BOOKMARK",
                    &json!({
                        "apiVersion": t.api_version(),
                        "kind": kind_of(&st, t),
                        "metadata": {
                            "resourceVersion": st.rv.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    }),
                ));
            }
        } else {
            for ev in &st.history {
                if ev.resource_version > since
                    && in_scope(t, &ev.prefix, &ev.plural, &ev.namespace)
                    && selectors_match(query, &ev.object)
                {
                    initial.push(event_line(ev.event_type, &ev.object));
                }
            }
        }
        (initial, rx)
    };
    let t = Target {
        prefix: t.prefix.clone(),
        plural: t.plural.clone(),
        ns: t.ns.clone(),
        name: None,
        sub: None,
    };
    let query = query.clone();
    let live = futures::stream::unfold(rx, move |mut rx| {
        let t_prefix = t.prefix.clone();
        let t_plural = t.plural.clone();
        let t_ns = t.ns.clone();
        let query = query.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if ev.prefix == t_prefix
                            && ev.plural == t_plural
                            && t_ns.as_deref().is_none_or(|n| n == ev.namespace)
                            && selectors_match(&query, &ev.object)
                        {
                            return Some((event_line(ev.event_type, &ev.object), rx));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let stream = futures::stream::iter(initial)
        .chain(live)
        .take_until(tokio::time::sleep(Duration::from_secs(timeout)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn create(inner: &Inner, t: &Target, mut obj: Value) -> Result<Response, Response> {
    if !obj.is_object() {
        return Err(status_error(
            400,
            "BadRequest",
            "body must be an object".into(),
        ));
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let mut st = inner.store.lock().unwrap();
    let name = match obj["metadata"]["name"].as_str() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match obj["metadata"]["generateName"].as_str() {
            Some(g) => format!("{g}{:05x}", (st.rv + 1) & 0xfffff),
            None => {
                return Err(status_error(
                    422,
                    "Invalid",
                    "metadata.name: Required value".into(),
                ))
            }
        },
    };
    obj["metadata"]["name"] = json!(name);
    if let Some(ns) = &t.ns {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let key = (
        t.prefix.clone(),
        t.plural.clone(),
        t.ns.clone().unwrap_or_default(),
        name.clone(),
    );
    if st.objects.contains_key(&key) {
        return Err(status_error(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", t.resource_desc()),
        ));
    }
    let meta = obj["metadata"].as_object_mut().unwrap();
    for k in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
    ] {
        meta.remove(k);
    }
    fill_create_meta(&mut obj);
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    if obj.get("apiVersion").is_none() {
        obj["apiVersion"] = json!(t.api_version());
    }
    if obj.get("kind").is_none() {
        let kind = kind_of(&st, t);
        obj["kind"] = json!(kind);
    }
    commit(inner, &mut st, key, Some(obj.clone()), "ADDED", obj.clone());
    Ok(json_response(StatusCode::CREATED, &obj))
}

fn check_rv(t: &Target, incoming: &Value, old: &Value) -> Result<(), Response> {
    match incoming["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            Err(status_error(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
                     please apply your changes to the latest version and try again",
                    t.resource_desc(),
                    t.name.as_deref().unwrap_or("")
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn without_meta_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// Store `new` as the next version of `old` (already checked for resourceVersion conflicts).
fn update(
    inner: &Inner,
    st: &mut Store,
    t: &Target,
    old: Value,
    new: Value,
    is_status: bool,
) -> Response {
    let mut result = if is_status {
        let mut r = old.clone();
        match new.get("status") {
            Some(s) => r["status"] = s.clone(),
            None => {
                r.as_object_mut().unwrap().remove("status");
            }
        }
        r
    } else {
        let mut r = new;
        if !r["metadata"].is_object() {
            r["metadata"] = json!({});
        }
        let obj = r.as_object_mut().unwrap();
        match old.get("status") {
            Some(s) => {
                obj.insert("status".into(), s.clone());
            }
            None => {
                obj.remove("status");
            }
        }
        for k in ["apiVersion", "kind"] {
            if let Some(v) = old.get(k) {
                obj.insert(k.into(), v.clone());
            }
        }
        let meta = r["metadata"].as_object_mut().unwrap();
        for k in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "generation",
            "resourceVersion",
        ] {
            match old["metadata"].get(k) {
                Some(v) => {
                    meta.insert(k.into(), v.clone());
                }
                None => {
                    meta.remove(k);
                }
            }
        }
        if without_meta_status(&r) != without_meta_status(&old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            r["metadata"]["generation"] = json!(g + 1);
        }
        r
    };
    if result == old {
        return json_response(StatusCode::OK, &old);
    }
    st.rv += 1;
    result["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    let deleting = result["metadata"]["deletionTimestamp"].is_string();
    let finalizers_empty = result["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|a| a.is_empty());
    if deleting && finalizers_empty {
        commit(inner, st, t.key(), None, "DELETED", result.clone());
    } else {
        commit(
            inner,
            st,
            t.key(),
            Some(result.clone()),
            "MODIFIED",
            result.clone(),
        );
    }
    json_response(StatusCode::OK, &result)
}

fn replace(inner: &Inner, t: &Target, body: Value, is_status: bool) -> Result<Response, Response> {
    let mut st = inner.store.lock().unwrap();
    let Some(old) = st.objects.get(&t.key()).cloned() else {
        return Err(not_found(t));
    };
    check_rv(t, &body, &old)?;
    Ok(update(inner, &mut st, t, old, body, is_status))
}

fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        let tm = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                tm.remove(k);
            } else {
                merge_patch(tm.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn pointer_parts(path: &str) -> Vec<String> {
    path.split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn json_patch_remove(doc: &mut Value, path: &str) -> Option<Value> {
    let parts = pointer_parts(path);
    let (last, parents) = parts.split_last()?;
    let mut cur = doc;
    for p in parents {
        cur = match cur {
            Value::Object(m) => m.get_mut(p)?,
            Value::Array(a) => a.get_mut(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match cur {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => {
            let i = last.parse::<usize>().ok()?;
            (i < a.len()).then(|| a.remove(i))
        }
        _ => None,
    }
}

fn json_patch_add(doc: &mut Value, path: &str, value: Value, replace: bool) -> Option<()> {
    let parts = pointer_parts(path);
    let Some((last, parents)) = parts.split_last() else {
        *doc = value;
        return Some(());
    };
    let mut cur = doc;
    for p in parents {
        cur = match cur {
            Value::Object(m) => m.get_mut(p)?,
            Value::Array(a) => a.get_mut(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match cur {
        Value::Object(m) => {
            if replace && !m.contains_key(last) {
                return None;
            }
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i = last.parse::<usize>().ok()?;
                if replace {
                    *a.get_mut(i)? = value;
                } else if i <= a.len() {
                    a.insert(i, value);
                } else {
                    return None;
                }
            }
        }
        _ => return None,
    }
    Some(())
}

fn apply_json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("JSON patch must be an array")?;
    for op in ops {
        let path = op["path"].as_str().unwrap_or("");
        let fail = || format!("JSON patch op {op} failed");
        match op["op"].as_str().unwrap_or("") {
            "add" => json_patch_add(doc, path, op["value"].clone(), false).ok_or_else(fail)?,
            "replace" => json_patch_add(doc, path, op["value"].clone(), true).ok_or_else(fail)?,
            "remove" => json_patch_remove(doc, path).map(|_| ()).ok_or_else(fail)?,
            "test" => {
                // As the API server's json-patch library does, a missing path equals null
                // (kube_runtime's finalizer helper relies on it).
                if doc.pointer(path).unwrap_or(&Value::Null) != &op["value"] {
                    return Err(fail());
                }
            }
            "move" => {
                let from = op["from"].as_str().unwrap_or("");
                let v = json_patch_remove(doc, from).ok_or_else(fail)?;
                json_patch_add(doc, path, v, false).ok_or_else(fail)?
            }
            "copy" => {
                let from = op["from"].as_str().unwrap_or("");
                let v = doc.pointer(from).cloned().ok_or_else(fail)?;
                json_patch_add(doc, path, v, false).ok_or_else(fail)?
            }
            other => return Err(format!("unsupported JSON patch op {other:?}")),
        }
    }
    Ok(())
}

fn patch(
    inner: &Inner,
    t: &Target,
    content_type: &str,
    body: Value,
    is_status: bool,
) -> Result<Response, Response> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let is_apply = ct == "application/apply-patch+yaml";
    let old = inner.store.lock().unwrap().objects.get(&t.key()).cloned();
    let Some(old) = old else {
        if is_apply && !is_status {
            return create(inner, t, body);
        }
        return Err(not_found(t));
    };
    let mut new = old.clone();
    match ct {
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/apply-patch+yaml" => {
            check_rv(t, &body, &old)?;
            merge_patch(&mut new, &body);
        }
        "application/json-patch+json" => {
            apply_json_patch(&mut new, &body).map_err(|e| status_error(422, "Invalid", e))?;
        }
        other => {
            return Err(status_error(
                415,
                "UnsupportedMediaType",
                format!("unsupported patch type {other:?}"),
            ))
        }
    }
    let mut st = inner.store.lock().unwrap();
    // Re-read under the lock so a concurrent writer is not silently overwritten.
    let Some(current) = st.objects.get(&t.key()).cloned() else {
        return Err(not_found(t));
    };
    if current != old {
        drop(st);
        return patch(inner, t, content_type, body, is_status);
    }
    Ok(update(inner, &mut st, t, old, new, is_status))
}

fn delete(inner: &Inner, t: &Target) -> Result<Response, Response> {
    let mut st = inner.store.lock().unwrap();
    let Some(mut obj) = st.objects.get(&t.key()).cloned() else {
        return Err(not_found(t));
    };
    let has_finalizers = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    if has_finalizers {
        if obj["metadata"]["deletionTimestamp"].is_string() {
            return Ok(json_response(StatusCode::OK, &obj));
        }
        st.rv += 1;
        obj["metadata"]["deletionTimestamp"] = now_timestamp();
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        commit(
            inner,
            &mut st,
            t.key(),
            Some(obj.clone()),
            "MODIFIED",
            obj.clone(),
        );
    } else {
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        commit(inner, &mut st, t.key(), None, "DELETED", obj.clone());
    }
    Ok(json_response(StatusCode::OK, &obj))
}

fn delete_collection(
    inner: &Inner,
    t: &Target,
    query: &HashMap<String, String>,
) -> Result<Response, Response> {
    let victims = {
        let st = inner.store.lock().unwrap();
        matching_objects(&st, t, query)
    };
    let mut deleted = Vec::new();
    for o in victims {
        let one = Target {
            prefix: t.prefix.clone(),
            plural: t.plural.clone(),
            ns: o["metadata"]["namespace"].as_str().map(str::to_string),
            name: o["metadata"]["name"].as_str().map(str::to_string),
            sub: None,
        };
        if delete(inner, &one).is_ok() {
            deleted.push(o);
        }
    }
    let st = inner.store.lock().unwrap();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": t.api_version(),
            "kind": format!("{}List", kind_of(&st, t)),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": deleted,
        }),
    ))
}
