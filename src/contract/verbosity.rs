//! `--verbosity`: the engine's log levels (mongosync's), named the same by the engine's flag
//! and YAML key and by a ClusterSync's `engine.verbosity`.

use serde::Deserialize;

/// mongosync's `--verbosity` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
#[clap(rename_all = "UPPERCASE")]
pub enum Verbosity {
    /// Everything, including per-operation detail.
    Trace,
    /// Detail useful when diagnosing a sync.
    Debug,
    /// Progress and state changes.
    Info,
    /// Only conditions that need attention, and errors.
    Warn,
    /// Only errors.
    Error,
    /// Accepted as mongosync's; logs as `ERROR`, the engine having no level above it.
    Fatal,
    /// Accepted as mongosync's; logs as `ERROR`, the engine having no level above it.
    Panic,
}

impl Verbosity {
    /// Every level, as the flag and the ClusterSync's `engine.verbosity` name them.
    pub const ALL: [Verbosity; 7] = [
        Verbosity::Trace,
        Verbosity::Debug,
        Verbosity::Info,
        Verbosity::Warn,
        Verbosity::Error,
        Verbosity::Fatal,
        Verbosity::Panic,
    ];

    /// The level as written (upper case).
    pub fn as_str(self) -> &'static str {
        match self {
            Verbosity::Trace => "TRACE",
            Verbosity::Debug => "DEBUG",
            Verbosity::Info => "INFO",
            Verbosity::Warn => "WARN",
            Verbosity::Error => "ERROR",
            Verbosity::Fatal => "FATAL",
            Verbosity::Panic => "PANIC",
        }
    }

    /// A level written in any case, as `--verbosity` accepts it.
    pub fn parse(s: &str) -> Option<Verbosity> {
        Verbosity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            Verbosity::Trace => "trace",
            Verbosity::Debug => "debug",
            Verbosity::Info => "info",
            Verbosity::Warn => "warn",
            Verbosity::Error | Verbosity::Fatal | Verbosity::Panic => "error",
        }
    }
}
