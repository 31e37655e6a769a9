//! The connection strings a ClusterSync names, read from its Secrets and validated by the
//! engine's own URI rules. Errors name the Secret and key, never the value.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::crd::{ClusterSyncSpec, SecretKeyRef};
use crate::uri::ClusterUri;

/// Which side of the sync a Secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Both connection strings, and what they were read from.
pub struct Resolved {
    pub source: ClusterUri,
    pub destination: ClusterUri,
    /// Changes when either connection string does, and only then (a label or another key of
    /// the Secret changing does not restart the engine): a keyed hash of the two values, so
    /// the fingerprint, which is written into the engine's pod template, reveals nothing of
    /// them without the key.
    pub fingerprint: String,
}

impl Resolved {
    /// Removes both connection strings (and their passwords) from `text`.
    pub fn scrub(&self, text: &str) -> String {
        self.destination.scrub(&self.source.scrub(text))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("Secret {namespace}/{name} ({side}) does not exist; create it with the {side} cluster's connection string under key {key:?}")]
    SecretMissing {
        side: Side,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} ({side}) has no key {key:?} (it has: {present}); add the connection string under that key or set spec.{side}.key")]
    KeyMissing {
        side: Side,
        namespace: String,
        name: String,
        key: String,
        present: String,
    },
    #[error("Secret {namespace}/{name} key {key:?} ({side}) is not a valid connection string: {problem}")]
    InvalidUri {
        side: Side,
        namespace: String,
        name: String,
        key: String,
        problem: String,
    },
    #[error("Secret {namespace}/{name} ({side}) cannot be read: {source}")]
    Api {
        side: Side,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl CredentialError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::SecretMissing { .. } => "SecretNotFound",
            CredentialError::KeyMissing { .. } => "SecretKeyNotFound",
            CredentialError::InvalidUri { .. } => "InvalidConnectionString",
            CredentialError::Api { .. } => "SecretUnreadable",
        }
    }
}

/// Reads both Secrets from `namespace`, by name. `key` keys the fingerprint (the engine's API
/// token serves: random, secret, and fixed for the sync's life).
pub async fn resolve(
    secrets: &Api<Secret>,
    namespace: &str,
    spec: &ClusterSyncSpec,
    key: &[u8],
) -> Result<Resolved, CredentialError> {
    let (source, src) = read(secrets, namespace, Side::Source, &spec.source).await?;
    let (destination, dst) = read(secrets, namespace, Side::Destination, &spec.destination).await?;
    Ok(Resolved {
        source,
        destination,
        fingerprint: fingerprint(key, &src, &dst),
    })
}

/// HMAC-SHA-256 of the two raw values, in hex, cut to 32 digits.
pub fn fingerprint(key: &[u8], source: &str, destination: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    // Lengths first, so ("ab", "c") and ("a", "bc") differ.
    for v in [source, destination] {
        mac.update(&(v.len() as u64).to_be_bytes());
        mac.update(v.as_bytes());
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn read(
    secrets: &Api<Secret>,
    namespace: &str,
    side: Side,
    r: &SecretKeyRef,
) -> Result<(ClusterUri, String), CredentialError> {
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|source| CredentialError::Api {
            side,
            namespace: namespace.into(),
            name: r.name.clone(),
            source,
        })?
        .ok_or_else(|| CredentialError::SecretMissing {
            side,
            namespace: namespace.into(),
            name: r.name.clone(),
            key: r.key.clone(),
        })?;
    let raw = value_of(&secret, &r.key).ok_or_else(|| CredentialError::KeyMissing {
        side,
        namespace: namespace.into(),
        name: r.name.clone(),
        key: r.key.clone(),
        present: keys_of(&secret),
    })?;
    let flag = format!("Secret {}/{} key {}", namespace, r.name, r.key);
    // The URI error already names the problem without the value (the engine's own rules).
    let uri = ClusterUri::parse(&flag, raw.trim()).map_err(|e| CredentialError::InvalidUri {
        side,
        namespace: namespace.into(),
        name: r.name.clone(),
        key: r.key.clone(),
        problem: format!("{}. {}", e.problem, e.fix),
    })?;
    Ok((uri, raw))
}

/// The value of `key`, from `data` or (for Secrets not yet normalised) `stringData`.
pub fn value_of(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

fn keys_of(secret: &Secret) -> String {
    let mut keys: Vec<&str> = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        "no keys".into()
    } else {
        keys.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn values_come_from_data_or_string_data() {
        let s = Secret {
            data: Some(BTreeMap::from([(
                "uri".to_string(),
                k8s_openapi::ByteString(b"mongodb://a".to_vec()),
            )])),
            string_data: Some(BTreeMap::from([("other".to_string(), "x".to_string())])),
            ..Default::default()
        };
        assert_eq!(value_of(&s, "uri").as_deref(), Some("mongodb://a"));
        assert_eq!(value_of(&s, "other").as_deref(), Some("x"));
        assert!(value_of(&s, "missing").is_none());
        assert_eq!(keys_of(&s), "other, uri");
        assert_eq!(keys_of(&Secret::default()), "no keys");
    }

    #[test]
    fn the_fingerprint_follows_the_values_only_and_hides_them() {
        let a = fingerprint(b"k", "mongodb://u:p@a", "mongodb://u:p@b");
        assert_eq!(a, fingerprint(b"k", "mongodb://u:p@a", "mongodb://u:p@b"));
        assert_ne!(a, fingerprint(b"k", "mongodb://u:q@a", "mongodb://u:p@b"));
        assert_ne!(
            a,
            fingerprint(b"other key", "mongodb://u:p@a", "mongodb://u:p@b")
        );
        assert_ne!(fingerprint(b"k", "ab", "c"), fingerprint(b"k", "a", "bc"));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("mongodb"));
    }

    #[test]
    fn errors_name_the_secret_and_never_the_value() {
        let e = CredentialError::InvalidUri {
            side: Side::Source,
            namespace: "shop".into(),
            name: "old-db".into(),
            key: "uri".into(),
            problem: "the scheme must be mongodb:// or mongodb+srv://".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("shop/old-db") && text.contains("source"),
            "{text}"
        );
        assert_eq!(e.reason(), "InvalidConnectionString");
    }
}
