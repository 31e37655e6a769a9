//! The names the API gives its refusals (`{"success": false, "error": <name>,
//! "errorDescription": ...}`), mongosync's where it has one.

use serde::{Deserialize, Serialize};

/// The `error` field of a refused API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorName {
    /// The verb is not allowed in the current state.
    #[serde(rename = "InvalidState")]
    InvalidState,
    /// The `/start` body is invalid.
    #[serde(rename = "InvalidStartOptions")]
    InvalidStartOptions,
    /// `/commit` before `canCommit`.
    #[serde(rename = "NotReadyToCommit")]
    NotReadyToCommit,
    /// The destination holds data and `preExistingDestinationData` is not set.
    #[serde(rename = "DestinationNotEmpty")]
    DestinationNotEmpty,
    /// A namespace would be written by two sources, or exists with another shape.
    #[serde(rename = "NamespaceConflict")]
    NamespaceConflict,
    /// A cluster did not answer.
    #[serde(rename = "ClusterUnavailable")]
    ClusterUnavailable,
    /// A topology the engine cannot sync (a standalone source, say).
    #[serde(rename = "UnsupportedTopology")]
    UnsupportedTopology,
    /// `/reverse` of a sync not started with `reversible: true`.
    #[serde(rename = "NotReversible")]
    NotReversible,
    /// A connection user lacks a role the sync needs.
    #[serde(rename = "InsufficientPermissions")]
    InsufficientPermissions,
    /// Another preflight check failed.
    #[serde(rename = "PreflightFailed")]
    PreflightFailed,
    /// A cluster has no `setUserWriteBlockMode`.
    #[serde(rename = "WriteBlockingUnsupported")]
    WriteBlockingUnsupported,
    /// `setUserWriteBlockMode` failed.
    #[serde(rename = "WriteBlockingFailed")]
    WriteBlockingFailed,
    /// Another live engine drives this destination.
    #[serde(rename = "LeaseHeld")]
    LeaseHeld,
    /// The destination's filesystem lacks room for the data to sync (mongosync 1.22).
    #[serde(rename = "InsufficientDestinationDiskSpace")]
    InsufficientDestinationDiskSpace,
    /// Anything else.
    #[serde(rename = "InternalError")]
    InternalError,
    /// The body is not a JSON object.
    #[serde(rename = "InvalidRequestBody")]
    InvalidRequestBody,
    /// The body names a field the endpoint does not know.
    #[serde(rename = "UnknownField")]
    UnknownField,
    /// The body lacks a required field.
    #[serde(rename = "MissingField")]
    MissingField,
    /// A field has a value of the wrong type or out of range.
    #[serde(rename = "InvalidFieldValue")]
    InvalidFieldValue,
    /// The API token is missing or wrong.
    #[serde(rename = "Unauthorized")]
    Unauthorized,
    /// No endpoint at that path.
    #[serde(rename = "NotFound")]
    NotFound,
    /// The endpoint does not take that HTTP method.
    #[serde(rename = "MethodNotAllowed")]
    MethodNotAllowed,
    /// The request body is larger than the API reads.
    #[serde(rename = "RequestTooLarge")]
    RequestTooLarge,
    /// The request body did not arrive in time.
    #[serde(rename = "RequestTimeout")]
    RequestTimeout,
    /// The API has as many connections open as it serves, all of them busy.
    #[serde(rename = "TooManyConnections")]
    TooManyConnections,
}

impl ErrorName {
    /// Every name, for tables and tests.
    pub const ALL: [ErrorName; 25] = [
        ErrorName::InvalidState,
        ErrorName::InvalidStartOptions,
        ErrorName::NotReadyToCommit,
        ErrorName::DestinationNotEmpty,
        ErrorName::NamespaceConflict,
        ErrorName::ClusterUnavailable,
        ErrorName::UnsupportedTopology,
        ErrorName::NotReversible,
        ErrorName::InsufficientPermissions,
        ErrorName::PreflightFailed,
        ErrorName::WriteBlockingUnsupported,
        ErrorName::WriteBlockingFailed,
        ErrorName::LeaseHeld,
        ErrorName::InsufficientDestinationDiskSpace,
        ErrorName::InternalError,
        ErrorName::InvalidRequestBody,
        ErrorName::UnknownField,
        ErrorName::MissingField,
        ErrorName::InvalidFieldValue,
        ErrorName::Unauthorized,
        ErrorName::NotFound,
        ErrorName::MethodNotAllowed,
        ErrorName::RequestTooLarge,
        ErrorName::RequestTimeout,
        ErrorName::TooManyConnections,
    ];

    /// The name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::InvalidState => "InvalidState",
            ErrorName::InvalidStartOptions => "InvalidStartOptions",
            ErrorName::NotReadyToCommit => "NotReadyToCommit",
            ErrorName::DestinationNotEmpty => "DestinationNotEmpty",
            ErrorName::NamespaceConflict => "NamespaceConflict",
            ErrorName::ClusterUnavailable => "ClusterUnavailable",
            ErrorName::UnsupportedTopology => "UnsupportedTopology",
            ErrorName::NotReversible => "NotReversible",
            ErrorName::InsufficientPermissions => "InsufficientPermissions",
            ErrorName::PreflightFailed => "PreflightFailed",
            ErrorName::WriteBlockingUnsupported => "WriteBlockingUnsupported",
            ErrorName::WriteBlockingFailed => "WriteBlockingFailed",
            ErrorName::LeaseHeld => "LeaseHeld",
            ErrorName::InsufficientDestinationDiskSpace => "InsufficientDestinationDiskSpace",
            ErrorName::InternalError => "InternalError",
            ErrorName::InvalidRequestBody => "InvalidRequestBody",
            ErrorName::UnknownField => "UnknownField",
            ErrorName::MissingField => "MissingField",
            ErrorName::InvalidFieldValue => "InvalidFieldValue",
            ErrorName::Unauthorized => "Unauthorized",
            ErrorName::NotFound => "NotFound",
            ErrorName::MethodNotAllowed => "MethodNotAllowed",
            ErrorName::RequestTooLarge => "RequestTooLarge",
            ErrorName::RequestTimeout => "RequestTimeout",
            ErrorName::TooManyConnections => "TooManyConnections",
        }
    }

    /// The name a reply carries, if it is one of ours.
    pub fn parse(name: &str) -> Option<ErrorName> {
        ErrorName::ALL.into_iter().find(|n| n.as_str() == name)
    }

    /// The HTTP status the engine answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorName::InvalidStartOptions => 400,
            ErrorName::InsufficientPermissions => 403,
            ErrorName::InvalidState
            | ErrorName::NotReadyToCommit
            | ErrorName::DestinationNotEmpty
            | ErrorName::NamespaceConflict
            | ErrorName::NotReversible
            | ErrorName::LeaseHeld
            | ErrorName::InsufficientDestinationDiskSpace
            | ErrorName::UnsupportedTopology
            | ErrorName::PreflightFailed
            | ErrorName::WriteBlockingUnsupported => 409,
            ErrorName::ClusterUnavailable | ErrorName::WriteBlockingFailed => 503,
            ErrorName::InternalError => 500,
            ErrorName::InvalidRequestBody
            | ErrorName::UnknownField
            | ErrorName::MissingField
            | ErrorName::InvalidFieldValue => 400,
            ErrorName::Unauthorized => 401,
            ErrorName::NotFound => 404,
            ErrorName::MethodNotAllowed => 405,
            ErrorName::RequestTimeout => 408,
            ErrorName::RequestTooLarge => 413,
            ErrorName::TooManyConnections => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_serialize_as_written_and_parse_back() {
        for n in ErrorName::ALL {
            assert_eq!(serde_json::to_value(n).unwrap(), n.as_str());
            assert_eq!(ErrorName::parse(n.as_str()), Some(n));
        }
        assert_eq!(ErrorName::parse("Nope"), None);
    }
}
