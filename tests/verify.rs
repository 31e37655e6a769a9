//! `clustersync verify` and the verifier library against real servers: identical clusters,
//! every kind of drift, namespace filters, the seed dataset's odd `_id`s, and a cluster that
//! cannot be reached.

mod common;

use std::process::Output;

use bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, Bson, DateTime, Document};
use clustersync::uri::ClusterUri;
use clustersync::verify::{
    self, Cluster, DocumentCheck, MismatchKind, NamespaceKind, Report, VerifyOptions,
};
use common::Server;
use mongodb::{Client, IndexModel};
use serde_json::Value;

fn cluster(label: &str, uri: &str, client: &Client) -> Cluster {
    let uri = ClusterUri::parse(&format!("--{label}"), uri).expect("test URI");
    Cluster::new(label, uri, client.clone())
}

async fn run_verify(a: &Server, b: &Server, options: &VerifyOptions) -> Report {
    let (ca, cb) = (a.client().await, b.client().await);
    verify::verify(
        &cluster("cluster0", &a.uri(), &ca),
        &cluster("cluster1", &b.uri(), &cb),
        options,
    )
    .await
    .expect("verify")
}

/// Runs the binary with `args` and `envs` (and none of the caller's CLUSTERSYNC_* variables).
async fn cli(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_clustersync"))
            .arg("verify")
            .args(&args)
            .env_remove("CLUSTERSYNC_CLUSTER0")
            .env_remove("CLUSTERSYNC_CLUSTER1")
            .envs(envs)
            .output()
            .expect("run clustersync verify")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn oid(n: u8) -> ObjectId {
    ObjectId::from_bytes([0x66, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, n])
}

/// The same data on any server it is given: two databases, an index, a unique index, a view,
/// a validator, nested documents and `_id`s of many types.
async fn seed(client: &Client) {
    let app = client.database("app");
    let users = app.collection::<Document>("users");
    users
        .insert_many((0..40).map(|i| {
            doc! {
                "_id": i,
                "name": format!("user{i}"),
                "email": format!("u{i}@example.net"),
                "age": 18 + i % 50,
                "address": { "city": format!("city{}", i % 7), "geo": { "lat": i as f64 / 3.0, "lng": -(i as f64) } },
                "tags": ["a", { "k": i }, [i, i + 1]],
            }
        }))
        .await
        .unwrap();
    users
        .create_index(IndexModel::builder().keys(doc! { "age": 1 }).build())
        .await
        .unwrap();
    users
        .create_index(
            IndexModel::builder()
                .keys(doc! { "email": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    app.create_collection("adults")
        .view_on("users".to_string())
        .pipeline(vec![doc! { "$match": { "age": { "$gte": 21 } } }])
        .await
        .unwrap();
    let ids = [
        Bson::Int32(1),
        Bson::Int64(2),
        Bson::Double(2.5),
        Bson::String("s3".into()),
        Bson::String("s4".into()),
        Bson::ObjectId(oid(5)),
        Bson::Document(doc! { "k": 6, "sub": { "x": true } }),
        Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![7, 7],
        }),
        Bson::DateTime(DateTime::from_millis(8_000_000)),
        Bson::Boolean(true),
    ];
    app.collection::<Document>("mixed")
        .insert_many(
            ids.iter()
                .enumerate()
                .map(|(i, id)| doc! { "_id": id.clone(), "i": i as i32, "nested": { "deep": { "v": [i as i32] } } }),
        )
        .await
        .unwrap();
    let shop = client.database("shop");
    shop.collection::<Document>("orders")
        .insert_many((0..30).map(|i| {
            doc! {
                "_id": format!("o-{i:03}"),
                "items": [{ "sku": format!("p{}", i % 5), "qty": i % 3 + 1 }],
                "total": Bson::Decimal128(format!("{i}.99").parse().unwrap()),
            }
        }))
        .await
        .unwrap();
    shop.create_collection("products")
        .validator(doc! { "price": { "$gte": 0 } })
        .await
        .unwrap();
    shop.collection::<Document>("products")
        .insert_many((0..5).map(|i| doc! { "_id": oid(100 + i), "price": i as i32 * 10 }))
        .await
        .unwrap();
}

/// On the destination: one document changed, one deleted, one added, an index dropped and a
/// collection created.
async fn drift(dst: &Client) {
    let app = dst.database("app");
    app.collection::<Document>("users")
        .update_one(
            doc! { "_id": 7 },
            doc! { "$set": { "address.city": "elsewhere" } },
        )
        .await
        .unwrap();
    app.collection::<Document>("users")
        .drop_index("age_1")
        .await
        .unwrap();
    app.collection::<Document>("mixed")
        .delete_one(doc! { "_id": "s3" })
        .await
        .unwrap();
    let shop = dst.database("shop");
    shop.collection::<Document>("orders")
        .insert_one(doc! { "_id": "o-999", "items": [], "total": 0 })
        .await
        .unwrap();
    shop.collection::<Document>("only_here")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
}

async fn seeded_pair() -> (Server, Server) {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let (ca, cb) = (a.client().await, b.client().await);
    tokio::join!(seed(&ca), seed(&cb));
    (a, b)
}

/// Each mismatch's `_id` as `Debug` text (which, unlike `==` on documents, keeps field order)
/// with its kind.
fn mismatch_kinds(r: &Report, ns: &str) -> Vec<(String, MismatchKind)> {
    r.namespace(ns)
        .unwrap_or_else(|| panic!("{ns} not in the report: {r:#?}"))
        .mismatches
        .iter()
        .map(|m| {
            (
                format!("{:?}", Bson::try_from(m.id.clone()).unwrap()),
                m.kind,
            )
        })
        .collect()
}

fn expect(id: Bson, kind: MismatchKind) -> (String, MismatchKind) {
    (format!("{id:?}"), kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_clusters_are_equal_and_every_drift_is_named() {
    let (a, b) = seeded_pair().await;

    let report = run_verify(&a, &b, &VerifyOptions::default()).await;
    assert!(report.is_equal(), "{report:#?}");
    assert_eq!(
        names(&report),
        [
            "app.adults",
            "app.mixed",
            "app.users",
            "shop.orders",
            "shop.products"
        ]
    );
    let users = report.namespace("app.users").unwrap();
    let src = users.source.as_ref().unwrap();
    assert_eq!(src.count, Some(40));
    assert_eq!(src.digest, users.destination.as_ref().unwrap().digest);
    let view = report.namespace("app.adults").unwrap();
    assert_eq!(view.source.as_ref().unwrap().kind, NamespaceKind::View);
    assert_eq!(view.source.as_ref().unwrap().count, None);

    // Flags on the command line; the URIs from the environment in the later runs.
    let out = cli(&["--cluster0", &a.uri(), "--cluster1", &b.uri()], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("RESULT: EQUAL"), "{text}");
    assert!(!text.contains("DIFFERENT"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("app.users") && l.contains("40") && l.ends_with("EQUAL")),
        "{text}"
    );

    drift(&b.client().await).await;
    let report = run_verify(&a, &b, &VerifyOptions::default()).await;
    assert!(!report.is_equal());
    let different: Vec<&str> = report.different().map(|n| n.namespace.as_str()).collect();
    assert_eq!(
        different,
        ["app.mixed", "app.users", "shop.only_here", "shop.orders"]
    );

    let users = report.namespace("app.users").unwrap();
    assert_eq!(
        mismatch_kinds(&report, "app.users"),
        [expect(Bson::Int32(7), MismatchKind::DifferentContent)]
    );
    assert_eq!(
        users.metadata_differences,
        ["index `age_1` missing on the destination"]
    );
    assert_eq!(users.source.as_ref().unwrap().count, Some(40));
    assert_eq!(users.destination.as_ref().unwrap().count, Some(40));
    assert_eq!(
        mismatch_kinds(&report, "app.mixed"),
        [expect(
            Bson::String("s3".into()),
            MismatchKind::MissingOnDestination
        )]
    );
    assert_eq!(
        mismatch_kinds(&report, "shop.orders"),
        [expect(
            Bson::String("o-999".into()),
            MismatchKind::ExtraOnDestination
        )]
    );
    let extra = report.namespace("shop.only_here").unwrap();
    assert!(extra.source.is_none());
    assert_eq!(extra.destination.as_ref().unwrap().count, Some(1));
    assert_eq!(
        extra.metadata_differences,
        ["collection extra on the destination (not on the source)"]
    );
    assert!(report.namespace("app.adults").unwrap().equal);
    assert!(report.namespace("shop.products").unwrap().equal);

    // The embedded verifier's cheaper modes, on the same drift: counts only (the extra order
    // shows, the changed user does not), definitions only, and a namespace subset.
    let counts = run_verify(
        &a,
        &b,
        &VerifyOptions {
            documents: DocumentCheck::Count,
            ..VerifyOptions::default()
        },
    )
    .await;
    let orders = counts.namespace("shop.orders").unwrap();
    assert!(orders.mismatches.is_empty(), "{orders:?}");
    assert!(
        orders
            .metadata_differences
            .iter()
            .any(|d| d.starts_with("document counts differ:") && d.contains("on the destination")),
        "{orders:?}"
    );
    let users = counts.namespace("app.users").unwrap();
    assert!(users.mismatches.is_empty());
    assert_eq!(
        users.metadata_differences,
        ["index `age_1` missing on the destination"]
    );
    assert_eq!(users.source.as_ref().unwrap().digest, None);
    let definitions = run_verify(
        &a,
        &b,
        &VerifyOptions {
            documents: DocumentCheck::Skip,
            only: Some(["shop.orders".to_string(), "app.users".to_string()].into()),
            ..VerifyOptions::default()
        },
    )
    .await;
    let names: Vec<&str> = definitions
        .namespaces
        .iter()
        .map(|n| n.namespace.as_str())
        .collect();
    assert_eq!(names, ["app.users", "shop.orders"]);
    assert!(definitions.namespace("shop.orders").unwrap().equal);
    assert!(!definitions.namespace("app.users").unwrap().equal);

    let envs = [
        ("CLUSTERSYNC_CLUSTER0", a.uri()),
        ("CLUSTERSYNC_CLUSTER1", b.uri()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = cli(&[], &envs).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for want in [
        "RESULT: DIFFERENT (4 of 6 namespaces differ)",
        "_id 7: different content (fields: address.city)",
        "_id \"s3\": missing on destination",
        "_id \"o-999\": extra on destination",
        "index `age_1` missing on the destination",
        "collection extra on the destination",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    let out = cli(&["--json"], &envs).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["equal"], false);
    assert_eq!(json["summary"]["different"], 4);
    let ns = |name: &str| -> &Value {
        json["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {json}"))
    };
    let users = ns("app.users");
    assert_eq!(users["equal"], false);
    assert_eq!(
        users["mismatches"][0]["id"],
        serde_json::json!({"$numberInt": "7"})
    );
    assert_eq!(users["mismatches"][0]["kind"], "differentContent");
    assert_eq!(
        users["mismatches"][0]["fields"],
        serde_json::json!(["address.city"])
    );
    assert_eq!(
        users["metadataDifferences"][0],
        "index `age_1` missing on the destination"
    );
    assert_eq!(users["source"]["count"], 40);
    assert_ne!(users["source"]["digest"], users["destination"]["digest"]);
    assert_eq!(
        ns("app.mixed")["mismatches"][0]["kind"],
        "missingOnDestination"
    );
    assert_eq!(ns("app.mixed")["destination"]["count"], 9);
    assert_eq!(ns("shop.orders")["mismatches"][0]["id"], "o-999");
    assert_eq!(
        ns("shop.orders")["mismatches"][0]["kind"],
        "extraOnDestination"
    );
    assert_eq!(ns("shop.only_here")["source"], Value::Null);
    assert_eq!(ns("app.adults")["equal"], true);

    // --max-mismatches bounds the list and says more differ.
    let coll = b
        .client()
        .await
        .database("app")
        .collection::<Document>("users");
    coll.delete_many(doc! { "_id": { "$gte": 30 } })
        .await
        .unwrap();
    let out = cli(&["--json", "--max-mismatches", "3"], &envs).await;
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let users = json["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == "app.users")
        .unwrap();
    let ids: Vec<&Value> = users["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        ids,
        [
            &serde_json::json!({"$numberInt": "7"}),
            &serde_json::json!({"$numberInt": "30"}),
            &serde_json::json!({"$numberInt": "31"}),
        ]
    );
    assert_eq!(users["moreMismatches"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_differing_document_is_described_by_field_paths_never_values() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let (src, dst) = (a.client().await, b.client().await);
    let (s, d) = (
        src.database("shop").collection::<Document>("orders"),
        dst.database("shop").collection::<Document>("orders"),
    );
    s.insert_many([
        doc! { "_id": 1, "k": "x", "v": 87, "sub": { "y": { "z": "c" } } },
        doc! { "_id": 2, "k": "secret-src", "sub": { "y": { "z": "c", "w": 1 } } },
        doc! { "_id": 3, "n": 1, "arr": [1, 2, 3], "a.b": true },
        doc! { "_id": 4, "same": 1 },
    ])
    .await
    .unwrap();
    d.insert_many([
        // Same fields, different order.
        doc! { "_id": 1, "k": "x", "sub": { "y": { "z": "c" } }, "v": 87 },
        // A nested field changed.
        doc! { "_id": 2, "k": "secret-src", "sub": { "y": { "z": "d", "w": 1 } } },
        // A type, an array's length and a dotted name.
        doc! { "_id": 3, "n": 1.0, "arr": [1, 2], "a.b": false },
        doc! { "_id": 4, "same": 1 },
    ])
    .await
    .unwrap();

    let report = run_verify(&a, &b, &VerifyOptions::default()).await;
    let orders = report.namespace("shop.orders").unwrap();
    let details: Vec<Option<&str>> = orders
        .mismatches
        .iter()
        .map(|m| m.detail.as_deref())
        .collect();
    assert_eq!(
        details,
        [
            Some("same fields, different order at top level"),
            Some("fields: sub.y.z"),
            Some(
                "fields: n (int32 on the source, double on the destination), arr (array of 3 on the source, 2 on the destination), \"a.b\""
            ),
        ],
        "{orders:#?}"
    );
    assert_eq!(orders.mismatches[1].fields, ["sub.y.z"]);

    let envs = [
        ("CLUSTERSYNC_CLUSTER0", a.uri()),
        ("CLUSTERSYNC_CLUSTER1", b.uri()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = cli(&[], &envs).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "_id 1: different content (same fields, different order at top level)",
        "_id 2: different content (fields: sub.y.z)",
        "_id 3: different content (fields: n (int32 on the source, double on the destination)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // No value, on the difference lines (the header's ports are numbers too).
    assert!(
        text.lines()
            .filter(|l| l.starts_with("    - "))
            .all(|l| !l.contains("secret") && !l.contains("87")),
        "{text}"
    );

    let out = cli(&["--json"], &envs).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let mismatches = &json["namespaces"][0]["mismatches"];
    assert_eq!(mismatches[0]["kind"], "differentContent");
    assert_eq!(
        mismatches[0]["detail"],
        "same fields, different order at top level"
    );
    assert!(mismatches[0].get("fields").is_none(), "{json}");
    assert_eq!(mismatches[1]["id"], serde_json::json!({"$numberInt": "2"}));
    assert_eq!(mismatches[1]["fields"], serde_json::json!(["sub.y.z"]));
    assert_eq!(mismatches[1]["detail"], "fields: sub.y.z");
    assert_eq!(
        mismatches[2]["fields"],
        serde_json::json!(["n", "arr", "\"a.b\""])
    );
    assert!(!out.stdout.windows(6).any(|w| w == b"secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_restrict_the_comparison() {
    let (a, b) = seeded_pair().await;
    drift(&b.client().await).await;
    let filters = |json: &str| -> Vec<clustersync::contract::filter::NamespaceFilter> {
        serde_json::from_str(json).unwrap()
    };

    // Only the untouched namespaces: equal, and nothing else is listed.
    let options = VerifyOptions {
        include: filters(
            r#"[{"database":"shop","collections":["products"]},{"database":"app","collections":["adults"]}]"#,
        ),
        ..Default::default()
    };
    let report = run_verify(&a, &b, &options).await;
    assert_eq!(names(&report), ["app.adults", "shop.products"]);
    assert!(report.is_equal(), "{report:#?}");

    // Excluding the drifted namespaces (by name and by regex) leaves an equal remainder.
    let options = VerifyOptions {
        exclude: filters(
            r#"[{"database":"app","collections":["users","mixed"]},{"database":"shop","collectionsRegex":{"pattern":"^o"}}]"#,
        ),
        ..Default::default()
    };
    let report = run_verify(&a, &b, &options).await;
    assert_eq!(names(&report), ["app.adults", "shop.products"]);
    assert!(report.is_equal(), "{report:#?}");

    // The CLI takes the same JSON; include first, then exclude.
    let out = cli(
        &[
            "--cluster0",
            &a.uri(),
            "--cluster1",
            &b.uri(),
            "--include-namespaces",
            r#"[{"database":"shop"}]"#,
            "--exclude-namespaces",
            r#"[{"database":"shop","collections":["only_here"]}]"#,
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = json["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop.orders", "shop.products"]);

    let out = cli(
        &[
            "--cluster0",
            &a.uri(),
            "--cluster1",
            &b.uri(),
            "--include-namespaces",
            r#"[{"database":"app","collections":["adults"]}]"#,
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("RESULT: EQUAL (1 namespaces compared)"),
        "{}",
        stdout(&out)
    );

    // A filter /start would refuse is bad usage.
    for bad in [
        r#"{"database":"app"}"#,
        r#"[{"database":"admin"}]"#,
        r#"[{"databaseRegex":{"pattern":"("}}]"#,
    ] {
        let out = cli(
            &[
                "--cluster0",
                &a.uri(),
                "--cluster1",
                &b.uri(),
                "--include-namespaces",
                bad,
            ],
            &[],
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("error:"), "{}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_cannot_be_reached_exits_2_without_the_password() {
    let a = Server::start().await;
    let closed = common::free_port();
    let bad = format!("mongodb://user:s3cretPW@127.0.0.1:{closed}/?serverSelectionTimeoutMS=1500");
    let out = cli(&["--cluster0", &a.uri(), "--cluster1", &bad], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}{err}", stdout(&out));
    assert!(err.contains("cannot reach cluster1"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    assert!(err.contains("--cluster1 or CLUSTERSYNC_CLUSTER1"), "{err}");
    assert!(
        !err.contains("s3cretPW") && !stdout(&out).contains("s3cretPW"),
        "{err}"
    );

    // The engine's URI rules apply, and their messages hide the password too.
    let refused = "mongodb://user:s3cretPW@127.0.0.1:1/?w=1";
    let out = cli(
        &["--cluster0", &a.uri()],
        &[("CLUSTERSYNC_CLUSTER1", refused)],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--cluster1") && err.contains("write concern"),
        "{err}"
    );
    assert!(!err.contains("s3cretPW"), "{err}");

    let out = cli(&["--cluster0", &a.uri()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--cluster1"), "{}", stderr(&out));
}

/// The fixtures' full dataset (every BSON type, near-16 MiB documents, time series, clustered,
/// capped, collated and validated collections, many index kinds, `_id`s of 19 types) copied
/// naively compares equal; removing and changing documents among the odd `_id`s is found
/// exactly, with no document present on both sides called missing or extra. (The test server
/// sorts embedded-document `_id`s by their bytes, not as MongoDB does, so this also covers
/// the verifier noticing that and finding the documents by lookups instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_dataset_copy_is_equal_and_odd_ids_are_found_exactly() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let (ca, cb) = (a.client().await, b.client().await);
    common::seed_full_dataset(&ca).await.expect("seed");
    common::copy_cluster_naive(&ca, &cb).await.expect("copy");

    let report = run_verify(&a, &b, &VerifyOptions::default()).await;
    let diffs: Vec<_> = report.different().collect();
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert!(
        report.namespaces.len() >= 15,
        "{:?}",
        report.namespaces.len()
    );

    let mixed = cb.database("seed_a").collection::<Document>("mixed_ids");
    let removed = [
        Bson::MinKey,
        Bson::Int64(2),
        Bson::Document(doc! { "b": "nine", "a": 9 }),
    ];
    for id in &removed {
        let r = mixed.delete_one(doc! { "_id": id.clone() }).await.unwrap();
        assert_eq!(r.deleted_count, 1, "{id:?}");
    }
    mixed
        .update_one(doc! { "_id": "five" }, doc! { "$set": { "extra": 1 } })
        .await
        .unwrap();
    let report = run_verify(&a, &b, &VerifyOptions::default()).await;
    let different: Vec<&str> = report.different().map(|n| n.namespace.as_str()).collect();
    assert_eq!(different, ["seed_a.mixed_ids"]);
    // In the server's order: MinKey, numbers, strings, documents.
    assert_eq!(
        mismatch_kinds(&report, "seed_a.mixed_ids"),
        [
            expect(Bson::MinKey, MismatchKind::MissingOnDestination),
            expect(Bson::Int64(2), MismatchKind::MissingOnDestination),
            expect(Bson::String("five".into()), MismatchKind::DifferentContent),
            expect(
                Bson::Document(doc! { "b": "nine", "a": 9 }),
                MismatchKind::MissingOnDestination
            ),
        ]
    );
}

/// The namespaces a report covers, in its order.
fn names(report: &Report) -> Vec<&str> {
    report
        .namespaces
        .iter()
        .map(|n| n.namespace.as_str())
        .collect()
}
