//! `clustersync engine` settings: mongosync's flags and YAML keys, merged and validated.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::contract::verbosity::Verbosity;
use crate::uri::{ClusterUri, UriError};

pub const DEFAULT_PORT: u16 = 27182;
pub const DEFAULT_LOAD_LEVEL: u8 = 3;
/// The shortest `--apiToken` accepted with a non-loopback `--bind`.
const MIN_OPEN_TOKEN_CHARS: usize = 16;
/// Fewest different characters in such a token.
const MIN_OPEN_TOKEN_DISTINCT: usize = 6;
/// Each partition costs the source one `_id`-range query, so partitions are large (the
/// migration-verifier settled on about 400 MB) and writes within one run concurrently instead.
const DEFAULT_PARTITION_MB: u64 = 400;

/// The flags, exactly as mongosync spells them. Every flag but `--config` is also a key of the
/// YAML file; a flag given on the command line wins over the file.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineArgs {
    /// Connection string of the first cluster (source or destination, as /start decides). The
    /// environment variable keeps it out of the process list (the operator uses it).
    #[arg(
        long = "cluster0",
        value_name = "URI",
        env = "CLUSTERSYNC_CLUSTER0",
        hide_env_values = true
    )]
    pub cluster0: Option<String>,
    /// Connection string of the second cluster.
    #[arg(
        long = "cluster1",
        value_name = "URI",
        env = "CLUSTERSYNC_CLUSTER1",
        hide_env_values = true
    )]
    pub cluster1: Option<String>,
    /// Port of the HTTP API [default: 27182].
    #[arg(long = "port")]
    pub port: Option<u16>,
    /// Address the HTTP API listens on [default: 127.0.0.1].
    #[arg(long = "bind", value_name = "ADDR")]
    pub bind: Option<String>,
    /// YAML file with the same keys as these flags (keeps passwords out of `ps`).
    #[arg(long = "config", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for the log file (`clustersync.log`, or `mongosync.log` with --logFormat
    /// mongosync), rotated on SIGUSR1 and daily, seven rotated files kept; standard output when
    /// unset.
    #[arg(long = "logPath", value_name = "DIR")]
    pub log_path: Option<PathBuf>,
    /// The log lines' shape: `clustersync` (tracing's JSON) or `mongosync` (mongosync's keys:
    /// level, time, message, mongosyncID, pid) [default: mongosync when invoked as
    /// `mongosync`, clustersync otherwise].
    #[arg(long = "logFormat", value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,
    /// Log level [default: DEBUG].
    #[arg(long = "verbosity", ignore_case = true)]
    pub verbosity: Option<Verbosity>,
    /// Load on the clusters, 1 (lightest) to 4 (heaviest) [default: 3].
    #[arg(long = "loadLevel", value_parser = clap::value_parser!(u8).range(1..=4))]
    pub load_level: Option<u8>,
    /// Instance identifier (the source shard id for one-instance-per-shard sync).
    #[arg(long = "id")]
    pub id: Option<String>,
    /// Accepts the verification disclaimer without a prompt.
    #[arg(long = "acceptDisclaimer")]
    #[serde(default)]
    pub accept_disclaimer: bool,
    /// Accepted for mongosync compatibility; clustersync sends no telemetry.
    #[arg(long = "disableTelemetry")]
    #[serde(default)]
    pub disable_telemetry: bool,
    /// Turns the embedded verifier off for a migration already started (use
    /// `verification.enabled: false` in `/start` for a new one); the commit then goes ahead
    /// without the final comparison.
    #[arg(long = "disableVerification")]
    #[serde(default)]
    pub disable_verification: bool,
    /// Accepted for mongosync compatibility.
    #[arg(long = "disableMetricsLogging")]
    #[serde(default)]
    pub disable_metrics_logging: bool,
    /// Accepted for mongosync compatibility.
    #[arg(long = "enableCappedCollectionHandling")]
    #[serde(default)]
    pub enable_capped_collection_handling: bool,
    /// Directory for metrics log files (Prometheus text, a snapshot a minute); none written
    /// when unset or with --disableMetricsLogging. `/metrics` serves the same at any time.
    #[arg(long = "metricsLoggingFilepath", value_name = "DIR")]
    pub metrics_logging_filepath: Option<PathBuf>,
    /// mongosync's hot documents, as JSON: {"db":…,"collection":…,"ids":[{"_id":…}]};
    /// repeatable. Validated and accepted; clustersync applies each document's changes in
    /// order within a batch and needs no deferral of hot documents to the commit.
    #[arg(long = "hotDocIDs", value_name = "JSON")]
    #[serde(default, rename = "hotDocIDs", deserialize_with = "one_or_many")]
    pub hot_doc_ids: Vec<String>,
    /// Indexes per createIndexes command on the destination, 1 to 64 [default: 1: one
    /// command per index, so that an index the destination refuses stops no other].
    #[arg(long = "createIndexesBatchSize", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub create_indexes_batch_size: Option<u16>,
    /// Bearer token the HTTP API requires (`Authorization: Bearer <token>`); needed when
    /// `--bind` is not a loopback address.
    #[arg(
        long = "apiToken",
        env = "CLUSTERSYNC_API_TOKEN",
        hide_env_values = true
    )]
    #[serde(default)]
    pub api_token: Option<String>,
    /// Target size of one copy partition in MiB [default: 400].
    #[arg(long = "partitionSizeMB", hide = true)]
    #[serde(rename = "partitionSizeMB")]
    pub partition_size_mb: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} is required: pass {flag} URI or set {key} in the --config file")]
    Missing {
        flag: &'static str,
        key: &'static str,
    },
    #[error(transparent)]
    Uri(#[from] UriError),
    #[error("--config {path}: cannot read the file: {reason}")]
    Read { path: String, reason: String },
    #[error("--config {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("--bind {0:?} is not an IP address; use e.g. 127.0.0.1 or 0.0.0.0")]
    Bind(String),
    #[error("--bind {0} exposes the API beyond this host: set --apiToken (or CLUSTERSYNC_API_TOKEN) so that only holders of the token can drive the sync")]
    OpenWithoutToken(String),
    #[error("--bind {0} exposes the API beyond this host, and --apiToken (or CLUSTERSYNC_API_TOKEN) is shorter than 16 characters or has fewer than 6 different characters; use a random one, e.g. `openssl rand -hex 24`")]
    WeakToken(String),
    #[error("--partitionSizeMB must be at least 1")]
    PartitionSize,
    #[error("--hotDocIDs {index}: {reason}; the form is {{\"db\":\"<db>\",\"collection\":\"<collection>\",\"ids\":[{{\"_id\":<extended JSON>}}]}}")]
    HotDocIds { index: usize, reason: String },
    #[error("createIndexesBatchSize must be between 1 and 64, not {0}")]
    IndexBatch(u16),
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub cluster0: ClusterUri,
    pub cluster1: ClusterUri,
    pub port: u16,
    pub bind: std::net::IpAddr,
    pub log_path: Option<PathBuf>,
    /// `None`: the default for how the binary was invoked.
    pub log_format: Option<crate::logging::LogFormat>,
    pub verbosity: Verbosity,
    pub load_level: u8,
    pub id: Option<String>,
    pub partition_bytes: u64,
    pub api_token: Option<String>,
    pub disable_verification: bool,
    /// Where metrics snapshots are written (`None`: not written).
    pub metrics_log_dir: Option<PathBuf>,
    /// Indexes per createIndexes command.
    pub create_indexes_batch: usize,
}

impl EngineConfig {
    pub fn engine_id(&self) -> &str {
        self.id.as_deref().unwrap_or("coordinator")
    }

    pub fn from_args(args: EngineArgs) -> Result<Self, ConfigError> {
        let merged = match &args.config {
            Some(path) => merge(read_file(path)?, args),
            None => args,
        };
        let uri = |v: &Option<String>,
                   flag: &'static str,
                   key: &'static str|
         -> Result<ClusterUri, ConfigError> {
            let raw = v.as_deref().ok_or(ConfigError::Missing { flag, key })?;
            Ok(ClusterUri::parse(flag, raw)?)
        };
        let cluster0 = uri(&merged.cluster0, "--cluster0", "cluster0")?;
        let cluster1 = uri(&merged.cluster1, "--cluster1", "cluster1")?;
        let bind_s = merged.bind.clone().unwrap_or_else(|| "127.0.0.1".into());
        let bind: std::net::IpAddr = bind_s
            .parse()
            .map_err(|_| ConfigError::Bind(bind_s.clone()))?;
        let api_token = merged.api_token.clone().filter(|t| !t.is_empty());
        if !bind.is_loopback() {
            match &api_token {
                None => return Err(ConfigError::OpenWithoutToken(bind_s)),
                // Beyond this host the token is all that stands between the network and the
                // sync: one a guess could find (" ", "secret") is refused.
                Some(t) if !strong_enough(t) => return Err(ConfigError::WeakToken(bind_s)),
                Some(_) => {}
            }
        }
        for (i, h) in merged.hot_doc_ids.iter().enumerate() {
            validate_hot_doc_ids(h).map_err(|reason| ConfigError::HotDocIds {
                index: i + 1,
                reason,
            })?;
        }
        let batch = merged.create_indexes_batch_size.unwrap_or(1);
        if !(1..=64).contains(&batch) {
            return Err(ConfigError::IndexBatch(batch));
        }
        let mb = merged.partition_size_mb.unwrap_or(DEFAULT_PARTITION_MB);
        if mb == 0 {
            return Err(ConfigError::PartitionSize);
        }
        Ok(Self {
            cluster0,
            cluster1,
            port: merged.port.unwrap_or(DEFAULT_PORT),
            bind,
            log_path: merged.log_path,
            log_format: merged.log_format,
            verbosity: merged.verbosity.unwrap_or(Verbosity::Debug),
            load_level: merged.load_level.unwrap_or(DEFAULT_LOAD_LEVEL),
            id: merged.id,
            partition_bytes: mb * 1024 * 1024,
            api_token,
            disable_verification: merged.disable_verification,
            metrics_log_dir: merged
                .metrics_logging_filepath
                .filter(|_| !merged.disable_metrics_logging),
            create_indexes_batch: batch as usize,
        })
    }
}

/// A token for an API reachable beyond this host: long enough, and not a run of a few
/// characters repeated (`aaaa…`, `abababab…`), which a guesser tries first. Any random token
/// (hex, base64) of 16 characters or more has more than 6 different ones.
fn strong_enough(token: &str) -> bool {
    let t = token.trim();
    let distinct: std::collections::HashSet<char> = t.chars().collect();
    t.chars().count() >= MIN_OPEN_TOKEN_CHARS && distinct.len() >= MIN_OPEN_TOKEN_DISTINCT
}

/// `hotDocIDs` as a string (mongosync's form), a mapping, or a list of either. A config file
/// written in YAML naturally spells the JSON object as a mapping; it is taken as the same
/// JSON text, so both spellings are validated (and reported) alike.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    fn one<E: Error>(v: serde_json::Value) -> Result<String, E> {
        match v {
            serde_json::Value::String(s) => Ok(s),
            v @ serde_json::Value::Object(_) => Ok(v.to_string()),
            other => Err(E::custom(format!(
                "hotDocIDs entries are JSON text or a mapping {{db, collection, ids}}, not {}",
                json_kind(&other)
            ))),
        }
    }
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items.into_iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// mongosync's `--hotDocIDs` form: `{"db":…,"collection":…,"ids":[{"_id":…},…]}`.
fn validate_hot_doc_ids(text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    for key in ["db", "collection"] {
        match obj.get(key).and_then(|x| x.as_str()) {
            Some(s) if !s.is_empty() => {}
            _ => return Err(format!("\"{key}\" must be a non-empty string")),
        }
    }
    let ids = obj
        .get("ids")
        .and_then(|x| x.as_array())
        .ok_or("\"ids\" must be an array")?;
    if ids.is_empty() || !ids.iter().all(|i| i.get("_id").is_some()) {
        return Err("\"ids\" must list objects with an \"_id\"".into());
    }
    if let Some(k) = obj
        .keys()
        .find(|k| !["db", "collection", "ids"].contains(&k.as_str()))
    {
        return Err(format!("unknown key \"{k}\""));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<EngineArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut parsed: EngineArgs = serde_norway::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        // The YAML error quotes no values for unknown keys or type errors, but it can for
        // syntax errors: keep its location and kind only.
        reason: yaml_reason(&e),
    })?;
    if let Some(l) = parsed.load_level {
        if !(1..=4).contains(&l) {
            return Err(ConfigError::Parse {
                path: path.display().to_string(),
                reason: format!("loadLevel must be between 1 and 4, not {l}"),
            });
        }
    }
    parsed.config = Some(path.to_path_buf());
    Ok(parsed)
}

fn yaml_reason(e: &serde_norway::Error) -> String {
    let msg = e.to_string();
    // Drop any quoted scalar: it could be a connection string.
    let mut out = String::new();
    let mut in_quote = false;
    for c in msg.chars() {
        if c == '"' || c == '`' {
            if !in_quote {
                out.push_str("\"…");
            }
            in_quote = !in_quote;
            if !in_quote {
                out.push('"');
            }
            continue;
        }
        if !in_quote {
            out.push(c);
        }
    }
    if msg.contains("unknown field") {
        // Unknown keys are safe to name and are the useful part.
        return msg;
    }
    out
}

fn merge(file: EngineArgs, cli: EngineArgs) -> EngineArgs {
    EngineArgs {
        cluster0: cli.cluster0.or(file.cluster0),
        cluster1: cli.cluster1.or(file.cluster1),
        port: cli.port.or(file.port),
        bind: cli.bind.or(file.bind),
        config: file.config,
        log_path: cli.log_path.or(file.log_path),
        log_format: cli.log_format.or(file.log_format),
        verbosity: cli.verbosity.or(file.verbosity),
        load_level: cli.load_level.or(file.load_level),
        id: cli.id.or(file.id),
        accept_disclaimer: cli.accept_disclaimer || file.accept_disclaimer,
        disable_telemetry: cli.disable_telemetry || file.disable_telemetry,
        disable_verification: cli.disable_verification || file.disable_verification,
        disable_metrics_logging: cli.disable_metrics_logging || file.disable_metrics_logging,
        enable_capped_collection_handling: cli.enable_capped_collection_handling
            || file.enable_capped_collection_handling,
        partition_size_mb: cli.partition_size_mb.or(file.partition_size_mb),
        api_token: cli.api_token.or(file.api_token),
        metrics_logging_filepath: cli
            .metrics_logging_filepath
            .or(file.metrics_logging_filepath),
        hot_doc_ids: if cli.hot_doc_ids.is_empty() {
            file.hot_doc_ids
        } else {
            cli.hot_doc_ids
        },
        create_indexes_batch_size: cli
            .create_indexes_batch_size
            .or(file.create_indexes_batch_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c0: &str, c1: &str) -> EngineArgs {
        EngineArgs {
            cluster0: Some(c0.into()),
            cluster1: Some(c1.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_match_mongosync() {
        let c = EngineConfig::from_args(args("mongodb://a:1", "mongodb+srv://u:p@x.example.net"))
            .unwrap();
        assert_eq!(c.port, 27182);
        assert_eq!(c.load_level, 3);
        assert_eq!(c.verbosity, Verbosity::Debug);
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.engine_id(), "coordinator");
    }

    #[test]
    fn config_file_with_cli_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "cluster0: \"mongodb://u:pw@h0:1\"\ncluster1: \"mongodb://h1:2\"\nport: 9999\nverbosity: WARN\nloadLevel: 2\n").unwrap();
        let cli = EngineArgs {
            config: Some(p.clone()),
            port: Some(7777),
            ..Default::default()
        };
        let c = EngineConfig::from_args(cli).unwrap();
        assert_eq!(c.port, 7777);
        assert_eq!(c.load_level, 2);
        assert_eq!(c.verbosity, Verbosity::Warn);
        assert_eq!(c.cluster0.hosts(), "h0:1");

        std::fs::write(&p, "cluster0: \"mongodb://u:pw@h0:1\"\nclusterZero: x\n").unwrap();
        let e = EngineConfig::from_args(EngineArgs {
            config: Some(p.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("clusterZero"), "{e}");
        std::fs::write(&p, "cluster0: \"mongodb://u:pw@h0:1\"\nloadLevel: 9\n").unwrap();
        let e = EngineConfig::from_args(EngineArgs {
            config: Some(p),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("loadLevel"), "{e}");
    }

    #[test]
    fn a_guessable_token_is_refused_beyond_loopback() {
        let open = |token: &str| {
            EngineConfig::from_args(EngineArgs {
                bind: Some("0.0.0.0".into()),
                api_token: Some(token.into()),
                ..args("mongodb://a:1", "mongodb://b:2")
            })
        };
        for weak in [
            " ",
            "hunter2",
            "               q7",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababababab",
        ] {
            let e = open(weak).unwrap_err().to_string();
            assert!(e.contains("shorter than 16"), "{e}");
            assert!(
                weak.trim().is_empty() || !e.contains(weak.trim()),
                "the token is echoed: {e}"
            );
        }
        assert!(open("0123456789abcdef0123").is_ok());
        // On loopback a short token is the user's business.
        assert!(EngineConfig::from_args(EngineArgs {
            api_token: Some("short".into()),
            ..args("mongodb://a:1", "mongodb://b:2")
        })
        .is_ok());
    }

    /// mongosync's documented options, as flags and as YAML keys, start the engine (the issue:
    /// `metricsLoggingFilepath`, `hotDocIDs` and `createIndexesBatchSize` were refused).
    #[test]
    fn every_documented_mongosync_option_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            r#"
cluster0: "mongodb://a:1"
cluster1: "mongodb://b:2"
acceptDisclaimer: true
disableTelemetry: true
disableVerification: false
disableMetricsLogging: false
enableCappedCollectionHandling: true
metricsLoggingFilepath: "/tmp/metrics"
hotDocIDs: '{"db":"shop","collection":"carts","ids":[{"_id":{"$oid":"65f0c0ffee0123456789abcd"}}]}'
createIndexesBatchSize: 8
loadLevel: 2
verbosity: WARN
logPath: "/tmp/logs"
port: 27183
id: coordinator
"#,
        )
        .unwrap();
        let c = EngineConfig::from_args(EngineArgs {
            config: Some(p.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.create_indexes_batch, 8);
        assert_eq!(
            c.metrics_log_dir.as_deref(),
            Some(Path::new("/tmp/metrics"))
        );
        assert_eq!(c.port, 27183);
        // In YAML the JSON object may be written as a mapping, alone or in a list.
        for (yaml, n) in [
            ("hotDocIDs:\n  db: shop\n  collection: carts\n  ids:\n    - _id: {$oid: 65f0c0ffee0123456789abcd}\n", 1),
            ("hotDocIDs:\n  - db: shop\n    collection: carts\n    ids: [{_id: 1}, {_id: 2}]\n  - '{\"db\":\"a\",\"collection\":\"b\",\"ids\":[{\"_id\":1}]}'\n", 2),
        ] {
            std::fs::write(&p, format!("cluster0: mongodb://a:1\ncluster1: mongodb://b:2\n{yaml}")).unwrap();
            let parsed = read_file(&p).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(parsed.hot_doc_ids.len(), n, "{yaml}");
            for h in &parsed.hot_doc_ids {
                validate_hot_doc_ids(h).unwrap_or_else(|e| panic!("{h}: {e}"));
            }
        }
        // A mapping with a mistake is reported as the string form would be.
        std::fs::write(&p, "cluster0: mongodb://a:1\ncluster1: mongodb://b:2\nhotDocIDs:\n  db: shop\n  ids: [{_id: 1}]\n").unwrap();
        let e = EngineConfig::from_args(EngineArgs {
            config: Some(p.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"collection\" must be a non-empty string"),
            "{e}"
        );
        std::fs::write(
            &p,
            "cluster0: mongodb://a:1\ncluster1: mongodb://b:2\nhotDocIDs: 7\n",
        )
        .unwrap();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");
        // The flag forms, hotDocIDs repeated.
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: EngineArgs,
        }
        let cli = Cli::try_parse_from([
            "mongosync",
            "--cluster0",
            "mongodb://a:1",
            "--cluster1",
            "mongodb://b:2",
            "--metricsLoggingFilepath",
            "/tmp/m",
            "--disableMetricsLogging",
            "--hotDocIDs",
            r#"{"db":"a","collection":"b","ids":[{"_id":1}]}"#,
            "--hotDocIDs",
            r#"{"db":"a","collection":"c","ids":[{"_id":"x"}]}"#,
            "--createIndexesBatchSize",
            "64",
        ])
        .unwrap();
        assert_eq!(cli.args.hot_doc_ids.len(), 2);
        let c = EngineConfig::from_args(cli.args).unwrap();
        assert_eq!(c.metrics_log_dir, None, "disableMetricsLogging wins");
        assert_eq!(c.create_indexes_batch, 64);
        assert!(Cli::try_parse_from(["m", "--createIndexesBatchSize", "65"]).is_err());
        // A malformed hotDocIDs names the flag, the problem and the form.
        let e = EngineConfig::from_args(EngineArgs {
            hot_doc_ids: vec![r#"{"db":"a","ids":[]}"#.into()],
            ..args("mongodb://a:1", "mongodb://b:2")
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--hotDocIDs 1") && e.contains("collection") && e.contains("\"ids\""),
            "{e}"
        );
    }

    #[test]
    fn missing_and_bad_values_name_the_flag() {
        let e = EngineConfig::from_args(EngineArgs {
            cluster0: Some("mongodb://h".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--cluster1 is required"), "{e}");
        let e = EngineConfig::from_args(args("mongodb://h", "mongodb://u:topsecret@h/?w=2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cluster1") && !e.contains("topsecret"), "{e}");
        let mut a = args("mongodb://h", "mongodb://h2");
        a.bind = Some("localhostx".into());
        assert!(EngineConfig::from_args(a)
            .unwrap_err()
            .to_string()
            .contains("--bind"));
    }
}
