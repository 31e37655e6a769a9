//! `enableUserWriteBlocking`: which clusters a sync blocks user writes on, as `/start` accepts
//! it (mongosync's strings and the older booleans).

use serde::{Deserialize, Serialize};

/// Which clusters are blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// `none`: user writes are never blocked.
    None,
    /// `destinationOnly`: the destination is blocked until just before `canWrite`.
    DestinationOnly,
    /// `sourceAndDestination`: as `destinationOnly`, and the source is blocked from `/commit`
    /// on, so applications cannot keep writing to the old cluster.
    SourceAndDestination,
}

impl Mode {
    /// Whether user writes to the destination are blocked during the sync.
    pub fn blocks_destination(self) -> bool {
        !matches!(self, Mode::None)
    }
    /// Whether user writes to the source are blocked at `/commit`.
    pub fn blocks_source(self) -> bool {
        matches!(self, Mode::SourceAndDestination)
    }
    /// The name `/start` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::DestinationOnly => "destinationOnly",
            Mode::SourceAndDestination => "sourceAndDestination",
        }
    }
}

/// `enableUserWriteBlocking` as `/start` accepts it: mongosync's strings and the older booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Request {
    /// The older boolean: `true` is `sourceAndDestination`, `false` is `none`.
    Bool(bool),
    /// One of mongosync's strings.
    Named(Mode),
}

impl Request {
    /// The blocking asked for.
    pub fn mode(self) -> Mode {
        match self {
            Request::Bool(false) => Mode::None,
            Request::Bool(true) => Mode::SourceAndDestination,
            Request::Named(mode) => mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in [
            Mode::None,
            Mode::DestinationOnly,
            Mode::SourceAndDestination,
        ] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
    }

    #[test]
    fn request_values() {
        let m = |s: &str| serde_json::from_str::<Request>(s).unwrap().mode();
        assert_eq!(m("true"), Mode::SourceAndDestination);
        assert_eq!(m("false"), Mode::None);
        assert_eq!(m("\"none\""), Mode::None);
        assert_eq!(m("\"destinationOnly\""), Mode::DestinationOnly);
        assert_eq!(m("\"sourceAndDestination\""), Mode::SourceAndDestination);
        assert!(serde_json::from_str::<Request>("\"sometimes\"").is_err());
    }
}
