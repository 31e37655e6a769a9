//! What the commands that connect to both clusters share (`check`, `plan`): the connection
//! flags (`--cluster0`, `--cluster1`, `--config`, `--source`), read as the engine reads them,
//! the report format, and the namespace filters as `/api/v1/start` takes them (also
//! `verify`'s).

use mongodb::Client;

use crate::contract::filter::NamespaceFilter;
use crate::contract::options::ClusterLabel;
use crate::engine::config::{EngineArgs, EngineConfig};
use crate::engine::StartupError;

/// The connection flags.
#[derive(clap::Args)]
pub(super) struct ClusterArgs {
    /// Connection string of the first cluster.
    #[arg(long = "cluster0", value_name = "URI")]
    cluster0: Option<String>,
    /// Connection string of the second cluster.
    #[arg(long = "cluster1", value_name = "URI")]
    cluster1: Option<String>,
    /// YAML file with cluster0 and cluster1 (the engine's --config file works).
    #[arg(long = "config", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Which cluster is the source.
    #[arg(long = "source", value_enum, default_value = "cluster0")]
    pub(super) source: Label,
}

// No doc comments on these enums' variants: clap would print them beside the possible values
// in `--help`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Label {
    Cluster0,
    Cluster1,
}

impl Label {
    /// The contract's label.
    pub(super) fn cluster(self) -> ClusterLabel {
        match self {
            Label::Cluster0 => ClusterLabel::Cluster0,
            Label::Cluster1 => ClusterLabel::Cluster1,
        }
    }
}

/// Both clusters, connected.
pub(super) struct Connected {
    pub(super) config: EngineConfig,
    pub(super) clients: [Client; 2],
}

/// One side: client, label, hosts.
pub(super) type Side<'a> = (&'a Client, &'static str, &'a str);

impl ClusterArgs {
    /// The connection strings, from the flags or the config file; an error is bad usage.
    pub(super) fn config(&self) -> Result<EngineConfig, String> {
        EngineConfig::from_args(EngineArgs {
            cluster0: self.cluster0.clone(),
            cluster1: self.cluster1.clone(),
            config: self.config.clone(),
            ..Default::default()
        })
        .map_err(|e| e.to_string())
    }
}

impl Connected {
    /// Clients for both clusters (nothing is sent yet); an unusable connection string is bad
    /// usage.
    pub(super) async fn new(config: EngineConfig) -> Result<Self, StartupError> {
        let c0 = crate::mongo::build_client("--cluster0", &config.cluster0).await?;
        let c1 = crate::mongo::build_client("--cluster1", &config.cluster1).await?;
        Ok(Self {
            config,
            clients: [c0, c1],
        })
    }

    /// (source, destination), as `--source` says.
    pub(super) fn sides(&self, source: Label) -> (Side<'_>, Side<'_>) {
        let a = (&self.clients[0], "cluster0", self.config.cluster0.hosts());
        let b = (&self.clients[1], "cluster1", self.config.cluster1.hosts());
        if source == Label::Cluster0 {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// Closes both clients while the runtime still runs. A client dropped as the runtime stops
    /// leaves the driver's session cleanup to a task that finds its connection pool gone,
    /// and panics ("SendError" in connection_requester.rs) on the user's terminal.
    pub(super) async fn close(self) {
        let [a, b] = self.clients;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(a.shutdown().immediate(true), b.shutdown().immediate(true))
        })
        .await;
    }

    /// `text` without either connection string's secrets.
    pub(super) fn scrub(&self, text: &str) -> String {
        self.config
            .cluster1
            .scrub(&self.config.cluster0.scrub(text))
    }
}

/// `--include-namespaces`/`--exclude-namespaces`: a JSON array of filters as `/api/v1/start`
/// takes them; nothing given is no filter.
pub(super) fn namespace_filters(
    flag: &str,
    json: Option<&str>,
) -> Result<Vec<NamespaceFilter>, String> {
    let Some(json) = json.map(str::trim).filter(|j| !j.is_empty()) else {
        return Ok(Vec::new());
    };
    serde_json::from_str(json).map_err(|e| {
        format!("{flag}: {e}; give a JSON array of filters as /api/v1/start takes them, e.g. [{{\"database\":\"sales\",\"collections\":[\"orders\"]}}] or, with regular expressions, [{{\"databaseRegex\":{{\"pattern\":\"^(shop|metrics)$\"}},\"collectionsRegex\":{{\"pattern\":\"^orders\",\"options\":\"i\"}}}}]")
    })
}
