//! Self-test of the in-memory fake Kubernetes API server (`tests/common/kube_fake.rs`).

#[path = "common/kube_fake.rs"]
mod kube_fake;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, CustomResource, ResourceExt};
use kube_fake::FakeApiServer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "test.clustersync.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub size: u32,
}

#[derive(JsonSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WidgetStatus {
    #[serde(default)]
    pub seen: bool,
    #[serde(default)]
    pub observed_size: u32,
}

fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        },
        "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn configmap_crud() {
    let (server, client) = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let a = api
        .create(&pp, &cm("a", &[("app", "x")], &[("k", "1")]))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some());
    assert!(a.metadata.creation_timestamp.is_some());
    assert_eq!(a.metadata.generation, Some(1));
    assert_eq!(a.namespace().as_deref(), Some("default"));
    api.create(&pp, &cm("b", &[("app", "y")], &[]))
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "other")
        .create(&pp, &cm("c", &[("app", "x")], &[]))
        .await
        .unwrap();

    // AlreadyExists.
    let err = api.create(&pp, &cm("a", &[], &[])).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "AlreadyExists");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Get / NotFound.
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "1");
    match api.get("nope").await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!(s.code, 404),
        other => panic!("unexpected {other:?}"),
    }
    assert!(api.get_opt("nope").await.unwrap().is_none());

    // List, label and field selectors, all namespaces.
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(api.list(&ListParams::default()).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=x"))
                .await
                .unwrap()
        ),
        ["a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app!=x"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("app=x"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );

    // Merge patch.
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "2", "new": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["k"], "2");
    assert_eq!(patched.data.as_ref().unwrap()["new"], "v");
    assert_eq!(patched.metadata.generation, Some(2));
    assert_ne!(patched.resource_version(), a.resource_version());

    // No-op patch keeps the resourceVersion.
    let same = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version(), patched.resource_version());

    // JSON patch.
    // (kube's `Patch::Json` needs the `jsonpatch` feature, so send it raw.)
    let req = axum::http::Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/configmaps/a")
        .header("content-type", "application/json-patch+json")
        .body(
            serde_json::to_vec(&json!([
                {"op": "remove", "path": "/data/new"},
                {"op": "add", "path": "/data/j", "value": "p"},
            ]))
            .unwrap(),
        )
        .unwrap();
    let j: ConfigMap = client.request(req).await.unwrap();
    let d = j.data.unwrap();
    assert!(!d.contains_key("new"));
    assert_eq!(d["j"], "p");

    // Server-side apply creates then merges.
    let ssa = PatchParams::apply("test").force();
    api.patch(
        "applied",
        &ssa,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "1"}})),
    )
    .await
    .unwrap();
    let applied = api
        .patch(
            "applied",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"y": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["y"], "2");

    // Replace with stale resourceVersion → Conflict; with fresh → OK.
    let mut stale = a.clone();
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    match api.replace("a", &pp, &stale).await.unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut fresh = api.get("a").await.unwrap();
    fresh.data = Some([("k".to_string(), "replaced".to_string())].into());
    let replaced = api.replace("a", &pp, &fresh).await.unwrap();
    assert_eq!(replaced.data.unwrap()["k"], "replaced");

    // Delete without finalizers removes.
    api.delete("b", &DeleteParams::default()).await.unwrap();
    assert!(server.get("api/v1", "configmaps", "default", "b").is_none());

    // Delete with finalizers sets deletionTimestamp; removing the finalizer removes the object.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test/fin"]}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let pending = api.get("a").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());

    // Inspection helpers.
    assert_eq!(server.list_resources::<ConfigMap>(None).len(), 2);
    assert!(server.get_resource::<ConfigMap>("other", "c").is_some());
    assert!(server
        .requests()
        .iter()
        .any(|r| r.starts_with("PATCH /api/v1/namespaces/default/configmaps/a")));
}

#[tokio::test]
async fn status_subresource() {
    let (server, client) = FakeApiServer::new();
    let api: Api<Widget> = Api::namespaced(client, "ns1");
    let w = api
        .create(
            &PostParams::default(),
            &Widget::new("w1", WidgetSpec { size: 3 }),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));

    let s = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"seen": true}, "spec": {"size": 99}})),
        )
        .await
        .unwrap();
    assert!(s.status.as_ref().unwrap().seen);
    assert_eq!(s.spec.size, 3, "status patch must not touch spec");
    assert_eq!(s.metadata.generation, Some(1));

    // Main-resource writes ignore status but bump generation on spec change.
    let m = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}, "status": {"seen": false}})),
        )
        .await
        .unwrap();
    assert_eq!(m.spec.size, 4);
    assert!(m.status.as_ref().unwrap().seen);
    assert_eq!(m.metadata.generation, Some(2));

    let stored = server.get_resource::<Widget>("ns1", "w1").unwrap();
    assert_eq!(stored.spec.size, 4);
    assert!(stored.status.unwrap().seen);

    match api
        .patch_status(
            "missing",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {}})),
        )
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!(s.code, 404),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watcher_sees_changes() {
    let (server, client) = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    server.insert_resource(&{
        let mut c = cm("pre", &[], &[]);
        c.metadata.namespace = Some("default".into());
        c
    });

    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // Initial list.
    let mut seen_init_done = false;
    let mut init_names = Vec::new();
    while !seen_init_done {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(c) => init_names.push(c.name_any()),
            watcher::Event::InitDone => seen_init_done = true,
            _ => {}
        }
    }
    assert_eq!(init_names, ["pre"]);

    api.create(&PostParams::default(), &cm("w", &[], &[("a", "1")]))
        .await
        .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();

    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Apply(c) => got.push(format!(
                "apply:{}:{}",
                c.name_any(),
                c.data
                    .unwrap_or_default()
                    .get("a")
                    .cloned()
                    .unwrap_or_default()
            )),
            watcher::Event::Delete(c) => got.push(format!("delete:{}", c.name_any())),
            _ => {}
        }
    }
    assert_eq!(got, ["apply:w:1", "apply:w:2", "delete:w"]);

    let types: Vec<_> = server
        .events()
        .iter()
        .filter(|e| e.name == "w")
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn streaming_list_watcher() {
    let (server, client) = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("s1", &[], &[]))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.name_any(), "s1");
    api.create(&PostParams::default(), &cm("s2", &[], &[]))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.name_any(), "s2");
    assert!(server
        .requests()
        .iter()
        .any(|r| r.contains("sendInitialEvents=true")));
}

#[derive(Debug)]
struct ReconcileError(#[allow(dead_code)] kube::Error);

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for ReconcileError {}

async fn reconcile(w: Arc<Widget>, api: Arc<Api<Widget>>) -> Result<Action, ReconcileError> {
    api.patch_status(
        &w.name_any(),
        &PatchParams::apply("fake-test").force(),
        &Patch::Apply(json!({
            "apiVersion": "test.clustersync.io/v1",
            "kind": "Widget",
            "status": {"seen": true, "observed_size": w.spec.size},
        })),
    )
    .await
    .map_err(ReconcileError)?;
    Ok(Action::await_change())
}

fn error_policy(_w: Arc<Widget>, _e: &ReconcileError, _api: Arc<Api<Widget>>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_reconciles_custom_resource() {
    let (server, client) = FakeApiServer::new();
    let api: Api<Widget> = Api::namespaced(client, "default");
    api.create(
        &PostParams::default(),
        &Widget::new("first", WidgetSpec { size: 1 }),
    )
    .await
    .unwrap();

    let ctl = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, Arc::new(api.clone()))
            .for_each(|_| async {}),
    );

    let done = server
        .wait_for::<Widget, _>("default", "first", Duration::from_secs(10), |w| {
            w.status.as_ref().is_some_and(|s| s.seen)
        })
        .await
        .expect("first reconciled");
    assert_eq!(done.status.unwrap().observed_size, 1);

    // A later spec change is reconciled too.
    api.patch(
        "first",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 7}})),
    )
    .await
    .unwrap();
    server
        .wait_for::<Widget, _>("default", "first", Duration::from_secs(10), |w| {
            w.status.as_ref().is_some_and(|s| s.observed_size == 7)
        })
        .await
        .expect("spec change reconciled");

    // And a newly created object.
    api.create(
        &PostParams::default(),
        &Widget::new("second", WidgetSpec { size: 2 }),
    )
    .await
    .unwrap();
    server
        .wait_for::<Widget, _>("default", "second", Duration::from_secs(10), |w| {
            w.status.as_ref().is_some_and(|s| s.seen)
        })
        .await
        .expect("second reconciled");

    ctl.abort();
}
