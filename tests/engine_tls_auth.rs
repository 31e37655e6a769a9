//! The engine against servers that require SCRAM authentication and TLS: a full sync with
//! credentials and a private CA, and the failures a misconfigured connection string causes
//! (wrong password, TLS against a plaintext server, an untrusted CA, plaintext against a
//! TLS-only server), none of which may crash the engine or leak a password.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bson::{doc, Document};
use common::{client_for, metric, state_of, Engine, Server};
use mongodb::IndexModel;
use serde_json::{json, Value};
use tempfile::TempDir;

/// cluster0's user and password (given on the command line, unencoded).
const SRC_USER: &str = "syncer";
const SRC_PW: &str = "Sup3r-S3cret-pw";
/// cluster1's user and password (given in the `--config` file, percent-encoded).
const DST_USER: &str = "cfgsyncer";
const DST_PW: &str = "Cfg:S3cret@pw/1";
const DST_PW_ENCODED: &str = "Cfg%3AS3cret%40pw%2F1";
/// A password no user has.
const WRONG_PW: &str = "Wr0ng-Pa55-7731";

/// Every secret form that must never be shown, plus a fragment shared by the real ones.
const SECRETS: [&str; 5] = [SRC_PW, DST_PW, DST_PW_ENCODED, WRONG_PW, "S3cret"];

/// A private CA, a server certificate it signed (SAN IP:127.0.0.1, DNS:localhost) and an
/// unrelated second CA, made with the `openssl` CLI.
struct Certs {
    dir: TempDir,
}

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = clustersync test
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

impl Certs {
    fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("clustersync-tls-")
            .tempdir()
            .expect("temp dir for certificates");
        std::fs::write(dir.path().join("openssl.cnf"), OPENSSL_CNF).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for ca in ["ca", "other-ca"] {
            let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
            let subj = format!("/CN=clustersync {ca}");
            let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
            args.extend(ec);
            args.extend([
                "-keyout",
                &key,
                "-out",
                &pem,
                "-subj",
                &subj,
                "-config",
                "openssl.cnf",
                "-extensions",
                "v3_ca",
            ]);
            openssl(dir.path(), &args);
        }
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
            "-config",
            "openssl.cnf",
        ]);
        openssl(dir.path(), &args);
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.pem",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                "v3_server",
            ],
        );
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    /// `secantusd-py` flags for a TLS-only server that requires authentication.
    fn server_args(&self) -> Vec<String> {
        vec![
            "--auth".into(),
            "--tls-cert-file".into(),
            self.path("server.pem").display().to_string(),
            "--tls-key-file".into(),
            self.path("server.key").display().to_string(),
        ]
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mongodb://user:password@127.0.0.1:PORT/?…&authSource=admin&tls=true&tlsCAFile=CA`
/// (`password` already percent-encoded).
fn secure_uri(port: u16, user: &str, password: &str, ca: &str) -> String {
    format!(
        "mongodb://{user}:{password}@127.0.0.1:{port}/?directConnection=true&authSource=admin&tls=true&tlsCAFile={ca}"
    )
}

/// Creates `user` (root) on a server running without `--auth`, then restarts it TLS-only
/// with `--auth`, waiting until that user can ping over TLS.
async fn secure(server: &mut Server, certs: &Certs, user: &str, password: &str, encoded: &str) {
    server
        .client()
        .await
        .database("admin")
        .run_command(doc! {
            "createUser": user,
            "pwd": password,
            "roles": [ { "role": "root", "db": "admin" } ],
        })
        .await
        .expect("createUser");
    let args = certs.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ready = secure_uri(server.port, user, encoded, &certs.ca());
    server.restart_with_args(&args, Some(ready)).await;
}

/// The secrets found in `text`.
fn leaks(text: &str) -> Vec<&'static str> {
    SECRETS.into_iter().filter(|s| text.contains(s)).collect()
}

fn assert_no_leak(what: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "{what} shows {found:?}:\n{text}");
}

async fn seed_source(client: &mongodb::Client) {
    let users = client.database("app").collection::<Document>("users");
    users
        .insert_many(
            (0..200).map(|i| doc! { "_id": i, "name": format!("user {i}"), "active": i % 3 == 0 }),
        )
        .await
        .unwrap();
    let orders = client.database("app").collection::<Document>("orders");
    orders
        .insert_many(
            (0..50)
                .map(|i| doc! { "_id": format!("o{i}"), "user": i % 20, "total": i as f64 * 1.5 }),
        )
        .await
        .unwrap();
    orders
        .create_index(IndexModel::builder().keys(doc! { "user": 1 }).build())
        .await
        .unwrap();
    let items = client.database("inventory").collection::<Document>("items");
    items
        .insert_many((0..30).map(|i| doc! { "sku": format!("sku-{i:03}"), "qty": i }))
        .await
        .unwrap();
    items
        .create_index(
            IndexModel::builder()
                .keys(doc! { "sku": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    client
        .database("app")
        .run_command(doc! {
            "create": "active_users",
            "viewOn": "users",
            "pipeline": [ { "$match": { "active": true } } ],
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_over_tls_with_auth() {
    let certs = Certs::generate();
    let (mut a, mut b) = tokio::join!(Server::start(), Server::start());
    seed_source(&a.client().await).await;
    tokio::join!(
        secure(&mut a, &certs, SRC_USER, SRC_PW, SRC_PW),
        secure(&mut b, &certs, DST_USER, DST_PW, DST_PW_ENCODED),
    );
    let uri0 = secure_uri(a.port, SRC_USER, SRC_PW, &certs.ca());
    let uri1 = secure_uri(b.port, DST_USER, DST_PW_ENCODED, &certs.ca());
    let (src, dst) = tokio::join!(client_for(&uri0), client_for(&uri1));
    // The servers really insist on TLS and on credentials.
    let plain = client_for(&format!("{}&serverSelectionTimeoutMS=1000", a.uri())).await;
    assert!(plain
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .is_err());
    let anonymous = client_for(&format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&tls=true&tlsCAFile={}",
        a.port,
        certs.ca()
    ))
    .await;
    assert!(anonymous.list_database_names().await.is_err());

    // cluster0 on the command line, cluster1 from the config file.
    let cfg = certs.path("engine.yaml");
    // TRACE: every crate's log lines, not only the engine's, must be free of passwords.
    std::fs::write(&cfg, format!("cluster1: \"{uri1}\"\nverbosity: TRACE\n")).unwrap();
    let port = common::free_port().to_string();
    let engine = Engine::spawn(&[
        "--cluster0",
        &uri0,
        "--config",
        cfg.to_str().unwrap(),
        "--port",
        &port,
    ]);
    let mut bodies: Vec<Value> = Vec::new();
    let idle = engine.wait_ready().await;
    assert_eq!(state_of(&idle), Some("IDLE"), "{idle}");
    bodies.push(idle);

    let (code, v) = engine
        .post(
            "start",
            json!({"source": "cluster0", "destination": "cluster1"}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    bodies.push(v);
    let (code, v) = engine
        .post(
            "start",
            json!({"source": "cluster0", "destination": "cluster1"}),
        )
        .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("InvalidState")),
        "{v}"
    );
    bodies.push(v);
    bodies.push(engine.progress().await);
    let ready = engine
        .wait_until(
            |p| p["progress"]["canCommit"] == true,
            Duration::from_secs(30),
        )
        .await;
    let mapping = &ready["progress"]["directionMapping"];
    assert_eq!(
        mapping["Source"],
        format!("cluster0: 127.0.0.1:{}", a.port),
        "{ready}"
    );
    assert_eq!(
        mapping["Destination"],
        format!("cluster1: 127.0.0.1:{}", b.port),
        "{ready}"
    );
    bodies.push(ready);
    let before = engine.metrics().await;
    assert!(
        metric(&before, "clustersync_engine_copied_bytes_total") > 0.0,
        "{before}"
    );
    assert!(
        metric(&before, "clustersync_engine_partitions_copied_total") >= 1.0,
        "{before}"
    );
    assert_eq!(
        metric(&before, "clustersync_engine_state{state=\"RUNNING\"}"),
        1.0
    );
    assert!(
        before.contains("clustersync_engine_collection_partitions_done{collection=\"app.users\"}"),
        "{before}"
    );
    assert!(
        before.contains("clustersync_engine_lag_seconds "),
        "the lag gauge is there: {before}"
    );

    // Live writes over the authenticated TLS connection.
    let users = src.database("app").collection::<Document>("users");
    users
        .insert_one(doc! { "_id": 1000, "name": "late", "active": true })
        .await
        .unwrap();
    users
        .update_many(
            doc! { "_id": { "$lt": 10 } },
            doc! { "$set": { "touched": true } },
        )
        .await
        .unwrap();
    users.delete_one(doc! { "_id": 199 }).await.unwrap();
    src.database("inventory")
        .collection::<Document>("restock")
        .insert_one(doc! { "sku": "sku-001", "qty": 5 })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    bodies.push(
        engine
            .wait_until(
                |p| p["progress"]["canCommit"] == true,
                Duration::from_secs(30),
            )
            .await,
    );

    let during = engine.metrics().await;
    let applied = |text: &str, kind: &str| {
        metric(
            text,
            &format!("clustersync_engine_events_applied_total{{type=\"{kind}\"}}"),
        )
    };
    assert!(
        applied(&during, "insert") >= applied(&before, "insert") + 2.0,
        "{during}"
    );
    assert!(
        applied(&during, "update") >= applied(&before, "update") + 10.0,
        "{during}"
    );
    assert!(
        applied(&during, "delete") >= applied(&before, "delete") + 1.0,
        "{during}"
    );
    assert_no_leak("/metrics", &during);

    let (code, v) = engine.post("commit", json!({})).await;
    assert_eq!(code, 200, "{v}");
    bodies.push(v);
    let done = engine
        .wait_state("COMMITTED", Duration::from_secs(30))
        .await;
    assert_eq!(done["progress"]["canWrite"], true, "{done}");
    bodies.push(done);
    bodies.push(engine.progress().await);
    common::assert_clusters_equal(&src, &dst).await;
    // The live writes made it (not just the copy).
    let dst_users = dst.database("app").collection::<Document>("users");
    assert!(dst_users
        .find_one(doc! { "_id": 1000 })
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        dst_users
            .count_documents(doc! { "touched": true })
            .await
            .unwrap(),
        10
    );

    for body in &bodies {
        assert_no_leak("an API response", &body.to_string());
    }
    let log = engine.log_contents();
    assert!(
        log.contains(&format!("127.0.0.1:{}", a.port)),
        "log names no host:\n{log}"
    );
    assert_no_leak("the engine log", &log);
    engine.terminate();
    assert!(engine.wait_exit(Duration::from_secs(10)).await.is_some());
    assert_no_leak("the engine log after shutdown", &engine.log_contents());
}

/// The one warning of an INITIALIZING engine that names `label`, once it appears.
async fn init_warning(engine: &Engine, label: &str) -> (Value, String) {
    let p = engine
        .wait_until(
            |p| {
                p["progress"]["warnings"]
                    .as_array()
                    .is_some_and(|w| w.iter().any(|w| w.as_str().unwrap_or("").contains(label)))
            },
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(state_of(&p), Some("INITIALIZING"), "{p}");
    let warnings = p["progress"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{p}");
    let w = warnings[0].as_str().unwrap().to_string();
    (p, w)
}

/// Checks an engine stuck on `label` stays up, keeps answering, refuses /start and
/// leaks no secret; returns the warning.
async fn assert_stuck_on(engine: &Engine, label: &str, port: u16) -> String {
    let (p, w) = init_warning(engine, label).await;
    let prefix = format!("cannot reach {label} (127.0.0.1:{port}): ");
    assert!(
        w.starts_with(&prefix) && w.ends_with("; retrying"),
        "unexpected warning {w:?}"
    );
    let mut bodies = vec![p];
    let (code, v) = engine
        .post(
            "start",
            json!({"source": "cluster0", "destination": "cluster1"}),
        )
        .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("InvalidState")),
        "{v}"
    );
    bodies.push(v);
    // Still retrying a while later, not crashed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(engine.is_running(), "{}", engine.log_tail(30));
    let later = engine.progress().await;
    assert_eq!(state_of(&later), Some("INITIALIZING"), "{later}");
    bodies.push(later);
    for b in &bodies {
        assert_no_leak("/progress", &b.to_string());
    }
    let log = engine.log_contents();
    assert!(
        log.contains(&format!("cannot reach {label}")),
        "the log does not report the failure:\n{log}"
    );
    assert_no_leak("the engine log", &log);
    w
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_reported_without_leaking_it() {
    let certs = Certs::generate();
    let (plain, mut secured) = tokio::join!(Server::start(), Server::start());
    secure(&mut secured, &certs, SRC_USER, SRC_PW, SRC_PW).await;
    let ca = certs.ca();
    let good = secure_uri(secured.port, SRC_USER, SRC_PW, &ca);
    let fast = "&serverSelectionTimeoutMS=2000";

    // Wrong password for cluster1.
    let wrong = Engine::spawn_between(
        &plain.uri(),
        &secure_uri(secured.port, SRC_USER, WRONG_PW, &ca),
        &[],
    );
    // tls=true against a plaintext server.
    let tls_to_plain = Engine::spawn_between(
        &good,
        &format!("{}&tls=true&tlsCAFile={ca}{fast}", plain.uri()),
        &[],
    );
    // A CA that did not sign the server's certificate.
    let untrusted = Engine::spawn_between(
        &plain.uri(),
        &format!(
            "{}{fast}",
            secure_uri(
                secured.port,
                SRC_USER,
                SRC_PW,
                &certs.path("other-ca.pem").display().to_string()
            )
        ),
        &[],
    );
    // No TLS against a TLS-only server.
    let plaintext_to_tls = Engine::spawn_between(
        &plain.uri(),
        &format!(
            "mongodb://{SRC_USER}:{SRC_PW}@127.0.0.1:{}/?directConnection=true&authSource=admin{fast}",
            secured.port
        ),
        &[],
    );

    let w = assert_stuck_on(&wrong, "cluster1", secured.port).await;
    eprintln!("wrong password: {w}");
    assert!(w.to_lowercase().contains("auth"), "{w}");
    let w = assert_stuck_on(&tls_to_plain, "cluster1", plain.port).await;
    eprintln!("tls=true against a plaintext server: {w}");
    let w = assert_stuck_on(&untrusted, "cluster1", secured.port).await;
    eprintln!("untrusted CA: {w}");
    assert!(w.to_lowercase().contains("certificate"), "{w}");
    let w = assert_stuck_on(&plaintext_to_tls, "cluster1", secured.port).await;
    eprintln!("plaintext against a TLS-only server: {w}");

    // The same engine with the right password gets going.
    let fixed = Engine::spawn_between(&plain.uri(), &good, &[]);
    let idle = fixed.wait_ready().await;
    assert_eq!(state_of(&idle), Some("IDLE"), "{idle}");
    assert!(idle["progress"].get("warnings").is_none(), "{idle}");
    assert_no_leak("the engine log", &fixed.log_contents());
}

/// A TLS file the driver cannot read must not crash the engine: it exits with code 2 and an
/// error naming the flag.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_tls_files_do_not_crash_the_engine() {
    let plain = Server::start().await;
    for option in ["tlsCAFile", "tlsCertificateKeyFile"] {
        let uri = format!(
            "mongodb://{SRC_USER}:{SRC_PW}@127.0.0.1:{}/?directConnection=true&tls=true&{option}=/nonexistent/clustersync/{option}.pem",
            plain.port
        );
        let engine = Engine::spawn_between(&plain.uri(), &uri, &[]);
        // A setting that can never work is refused at once, like a bad flag: exit code 2,
        // naming the flag and the option, without the password.
        let status = engine
            .wait_exit(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{option}: the engine kept running:\n{}",
                    engine.log_contents()
                )
            });
        let out = engine.log_contents();
        assert_eq!(status.code(), Some(2), "{option}: {status}:\n{out}");
        assert!(!out.contains("panicked"), "{option}: {out}");
        assert!(
            out.contains("--cluster1") && out.contains("TLS") || out.contains(option),
            "{option}: {out}"
        );
        assert_no_leak("the engine output", &out);
    }
}
