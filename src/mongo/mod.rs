//! What every part that talks to MongoDB shares: building clients, naming clusters in errors
//! without secrets, transient-error classification, server time, raw commands, and the
//! catalog (collections, views, indexes).

#![warn(missing_docs)]

pub mod catalog;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::error::{Error as MongoError, ErrorKind};
use mongodb::options::ClientOptions;
use mongodb::Client;
use std::time::Duration;

use crate::uri::ClusterUri;

/// Server error codes the engine reacts to.
pub mod codes {
    /// The collection or database does not exist.
    pub const NAMESPACE_NOT_FOUND: i32 = 26;
    /// The index does not exist.
    pub const INDEX_NOT_FOUND: i32 = 27;
    /// The collection already exists.
    pub const NAMESPACE_EXISTS: i32 = 48;
    /// An index with these keys exists with other options.
    pub const INDEX_OPTIONS_CONFLICT: i32 = 85;
    /// An index with this name exists with other keys.
    pub const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
    /// The server does not know the command.
    pub const COMMAND_NOT_FOUND: i32 = 59;
    /// The user lacks the privilege for the command.
    pub const UNAUTHORIZED: i32 = 13;
    /// A unique index refused a duplicate.
    pub const DUPLICATE_KEY: i32 = 11000;
    /// The index already exists.
    pub const INDEX_ALREADY_EXISTS: i32 = 68;
    /// The change stream's resume point is no longer in the oplog.
    pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
}

/// The server's error code, wherever the driver put it.
pub fn error_code(e: &MongoError) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(im) => im
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| w.code),
        _ => None,
    }
}

/// Errors that go away by themselves: the network, an election, a server restarting.
pub fn is_transient(e: &MongoError) -> bool {
    const TRANSIENT_CODES: &[i32] = &[
        6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 63, 150, 134, 133,
    ];
    if e.contains_label("RetryableWriteError")
        || e.contains_label("TransientTransactionError")
        || e.contains_label("ResumableChangeStreamError")
    {
        return true;
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => true,
        _ => error_code(e).is_some_and(|c| TRANSIENT_CODES.contains(&c)),
    }
}

/// The cluster's latest majority-committed time, used for lag and as the commit point.
pub async fn cluster_time(client: &Client) -> mongodb::error::Result<Timestamp> {
    let reply = client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await?;
    let from_last_write = reply
        .get_document("lastWrite")
        .ok()
        .and_then(|lw| lw.get_document("majorityOpTime").ok())
        .and_then(|op| op.get_timestamp("ts").ok());
    let ts = from_last_write
        .or_else(|| reply.get_timestamp("operationTime").ok())
        .or_else(|| {
            reply
                .get_document("$clusterTime")
                .ok()
                .and_then(|c| c.get_timestamp("clusterTime").ok())
        });
    match ts {
        Some(ts) => Ok(ts),
        None => {
            // A standalone server reports no cluster time; a no-op read gives us one if
            // anything does, otherwise fall back to the wall clock.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as u32;
            Ok(Timestamp {
                time: now,
                increment: 0,
            })
        }
    }
}

/// Runs a command built from raw parts and returns the reply, failing on `ok: 0` (the driver
/// already does) and on write errors inside an `ok: 1` reply.
pub async fn run_write(
    client: &Client,
    db: &str,
    cmd: RawDocumentBuf,
    tolerate: &[i32],
) -> mongodb::error::Result<Document> {
    let reply = client.database(db).run_raw_command(cmd).await?;
    if let Ok(errors) = reply.get_array("writeErrors") {
        for e in errors {
            if let Bson::Document(e) = e {
                let code = e.get_i32("code").unwrap_or_default();
                if !tolerate.contains(&code) {
                    let msg = e.get_str("errmsg").unwrap_or("write error").to_string();
                    return Err(mongodb::error::Error::custom(WriteRejected { code, msg }));
                }
            }
        }
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        let msg = wce
            .get_str("errmsg")
            .unwrap_or("write concern error")
            .to_string();
        return Err(mongodb::error::Error::custom(WriteRejected {
            code: wce.get_i32("code").unwrap_or_default(),
            msg,
        }));
    }
    Ok(reply)
}

/// A write the server answered with an error in its reply rather than as a failure.
#[derive(Debug, thiserror::Error)]
#[error("server refused a write (code {code}): {msg}")]
pub struct WriteRejected {
    /// The server's error code.
    pub code: i32,
    /// The server's message.
    pub msg: String,
}

/// A short, readable account of a driver error (the driver's own `Display` dumps whole
/// topologies). Callers still scrub it: it may quote a host or a user, never on purpose a
/// password.
pub fn describe(e: &MongoError) -> String {
    let text = match e.kind.as_ref() {
        ErrorKind::Authentication { message, .. } => format!(
            "authentication failed ({message}); check the user name, password and authSource in the connection string"
        ),
        ErrorKind::Command(c) => format!("{} ({}): {}", c.code_name, c.code, c.message),
        ErrorKind::Io(io) => format!("I/O error: {io}"),
        ErrorKind::DnsResolve { message, .. } => format!("DNS lookup failed: {message}"),
        ErrorKind::InvalidTlsConfig { message, .. } => format!("invalid TLS settings: {message}"),
        ErrorKind::InvalidArgument { message, .. } => format!("invalid setting: {message}"),
        ErrorKind::ServerSelection { message, .. } => {
            // The message embeds the topology; the first server error in it is the news.
            let cause = message
                .split("Error: Kind: ")
                .nth(1)
                .map(|rest| rest.split(", labels").next().unwrap_or(rest).to_string());
            match cause {
                Some(c) => format!("no server available: {c}"),
                None => "no server available (server selection timed out)".to_string(),
            }
        }
        _ => e.to_string(),
    };
    const MAX: usize = 400;
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &text[..cut])
    } else {
        text
    }
}

/// A connection string whose settings can never work; the text names the flag and the
/// problem, never the password.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnusableUri(pub String);

/// How long [`build_client`] keeps trying to resolve an SRV connection string: 60 s, or
/// `CLUSTERSYNC_SRV_RESOLVE_SECONDS` (seconds, fractions allowed).
pub fn srv_resolve_deadline() -> Duration {
    std::env::var("CLUSTERSYNC_SRV_RESOLVE_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
        .unwrap_or(Duration::from_secs(60))
}

/// Builds a client without contacting the cluster, except for the DNS lookup of an SRV
/// connection string, which is retried with backoff for [`srv_resolve_deadline`] and then
/// refused with the SRV record named. Settings that can never work (a TLS file that cannot be
/// read, say) are refused with the flag named. The driver runs under [`crate::uri::guarded`]:
/// a panic inside it becomes an error and prints nothing. No message holds the password.
pub async fn build_client(flag: &str, uri: &ClusterUri) -> Result<Client, UnusableUri> {
    use crate::uri::{guarded, guarded_async};
    use mongodb::options::ConnectionString;
    // The driver's account, scrubbed; withheld if it would still quote the password.
    let detail = |text: String| {
        uri.scrub_strict(&text).unwrap_or_else(|| {
            "the driver's explanation is not shown because it would quote part of the password"
                .to_string()
        })
    };
    let refuse = |why: String| {
        UnusableUri(format!(
            "{flag}: the connection string cannot be used: {why}; check its options (a tlsCAFile or tlsCertificateKeyFile must name a readable PEM file)"
        ))
    };
    let panicked = || refuse("the MongoDB driver failed while reading it".to_string());
    let parse = || match guarded(|| ConnectionString::parse(uri.expose())) {
        Some(Ok(cs)) => Ok(cs),
        Some(Err(e)) => Err(refuse(detail(describe(&e)))),
        None => Err(panicked()),
    };
    let first = parse()?;
    let srv_record = match &first.host_info {
        mongodb::options::HostInfo::DnsRecord(host) => format!(
            "_{}._tcp.{host}",
            first.srv_service_name.as_deref().unwrap_or("mongodb")
        ),
        _ => String::new(),
    };
    let unresolved = |why: String| {
        UnusableUri(format!(
            "{flag}: cannot resolve the SRV record {srv_record}: {why}; check the host name and DNS, or use a mongodb:// connection string"
        ))
    };
    let deadline = srv_resolve_deadline();
    let started = std::time::Instant::now();
    let mut next = Some(first);
    let mut attempt = 0u32;
    let mut opts = loop {
        let cs = match next.take() {
            Some(cs) => cs,
            None => parse()?,
        };
        let remaining = deadline.saturating_sub(started.elapsed());
        let outcome =
            match tokio::time::timeout(remaining, guarded_async(ClientOptions::parse(cs))).await {
                Ok(Some(outcome)) => outcome,
                Ok(None) => return Err(panicked()),
                // Only an SRV lookup can take time: a plain string needs no I/O.
                Err(_) => {
                    return Err(unresolved(format!(
                        "no answer within {:.0} s ({} attempts)",
                        deadline.as_secs_f64(),
                        attempt + 1
                    )))
                }
            };
        match outcome {
            Ok(o) => break o,
            Err(e)
                if uri.is_srv()
                    && matches!(
                        e.kind.as_ref(),
                        ErrorKind::DnsResolve { .. } | ErrorKind::Io(_)
                    ) =>
            {
                attempt += 1;
                let why = detail(describe(&e));
                let remaining = deadline.saturating_sub(started.elapsed());
                let wait = Duration::from_millis((500u64 << attempt.min(5)).min(10_000));
                if remaining <= wait {
                    return Err(unresolved(format!(
                        "{why} (gave up after {attempt} attempts in {:.0} s)",
                        started.elapsed().as_secs_f64()
                    )));
                }
                tracing::warn!(
                    flag,
                    hosts = uri.hosts(),
                    record = %srv_record,
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    error = %why,
                    "cannot resolve the SRV record; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(refuse(detail(describe(&e)))),
        }
    };
    opts.app_name
        .get_or_insert_with(|| "clustersync".to_string());
    opts.server_selection_timeout = opts
        .server_selection_timeout
        .or(Some(Duration::from_secs(10)));
    match guarded(|| Client::with_options(opts)) {
        Some(Ok(client)) => Ok(client),
        Some(Err(e)) => Err(refuse(detail(describe(&e)))),
        None => Err(panicked()),
    }
}
