//! The test kubelet's HTTPS endpoint for container logs, so that `pods/log` works through the
//! real API server: it proxies `GET pods/{pod}/log` to
//! `https://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/{ns}/{pod}/{container}`
//! with `tailLines` and `follow`, and (no `--kubelet-certificate-authority` in
//! `scripts/k8s.sh`) does not verify the kubelet's certificate, so a self-signed one made with
//! the openssl CLI serves.
//!
//! One endpoint per test process (every test kubelet registers the same Node), answering from
//! the log file of whichever kubelet runs the pod.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where a pod's container log is, if a kubelet of this process runs it.
pub type Lookup = fn(&str, &str) -> Option<PathBuf>;

/// The endpoint's port, started on first use (on the calling runtime's thread pool it would
/// die with that test's runtime, so it gets a thread and runtime of its own).
pub fn port(lookup: Lookup) -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| start(lookup))
}

fn start(lookup: Lookup) -> u16 {
    let dir = tempfile::Builder::new()
        .prefix("clustersync-kubelet-tls-")
        .tempdir()
        .unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=test-node", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (scripts/k8s.sh needs it too)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route(
        "/containerLogs/{ns}/{pod}/{container}",
        get(move |p, q| container_log(lookup, p, q)),
    );
    std::thread::spawn(move || {
        let _keep = dir;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
    });
    port
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(rename = "tailLines")]
    tail_lines: Option<usize>,
    follow: Option<bool>,
}

/// The container's output so far (its last `tailLines` lines), then with `follow` what it
/// appends, until the pod is gone or the reader hangs up.
async fn container_log(
    lookup: Lookup,
    Path((ns, pod, _container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(path) = lookup(&ns, &pod) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} is not running here"),
        )
            .into_response();
    };
    let text = std::fs::read(&path).unwrap_or_default();
    let start = match q.tail_lines {
        Some(n) => {
            let body = text.strip_suffix(b"\n").unwrap_or(&text);
            body.iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| **b == b'\n')
                .nth(n.saturating_sub(1))
                .map_or(0, |(i, _)| i + 1)
                .min(text.len())
        }
        None => 0,
    };
    let first = Bytes::from(
        text[if q.tail_lines == Some(0) {
            text.len()
        } else {
            start
        }..]
            .to_vec(),
    );
    if !q.follow.unwrap_or(false) {
        return first.into_response();
    }
    let offset = text.len() as u64;
    let stream = futures::stream::unfold(
        (Some(first), offset, ns, pod),
        move |(pending, offset, ns, pod)| async move {
            if let Some(b) = pending {
                return Some((Ok::<_, std::io::Error>(b), (None, offset, ns, pod)));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let path = lookup(&ns, &pod)?;
                let all = std::fs::read(&path).ok()?;
                if all.len() as u64 > offset {
                    let new = Bytes::from(all[offset as usize..].to_vec());
                    return Some((Ok(new), (None, all.len() as u64, ns, pod)));
                }
            }
        },
    );
    Body::from_stream(stream).into_response()
}
