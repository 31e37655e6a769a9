//! Connection strings: validation against mongosync's rules and redaction.
//!
//! A connection string carries a password, so nothing in this module ever returns
//! the raw string in an error: messages name the flag and describe the problem, and
//! any text that came from the driver is scrubbed of the userinfo first.

use mongodb::options::{ConnectionString, HostInfo};
use std::fmt;

/// Why a connection string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: {problem}. {fix}")]
pub struct UriError {
    pub flag: String,
    pub problem: String,
    pub fix: String,
}

/// A validated connection string. `Debug` and `Display` show hosts only.
#[derive(Clone)]
pub struct ClusterUri {
    raw: String,
    hosts: String,
    srv: bool,
}

impl fmt::Debug for ClusterUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterUri({})", self.redacted())
    }
}

impl fmt::Display for ClusterUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hosts)
    }
}

impl ClusterUri {
    /// Validates `raw` as the value of `flag` (e.g. `--cluster0`).
    pub fn parse(flag: &str, raw: &str) -> Result<Self, UriError> {
        let err = |problem: String, fix: &str| UriError {
            flag: flag.to_string(),
            problem,
            fix: fix.to_string(),
        };
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(err(
                "the connection string is empty".into(),
                "Pass a URI such as mongodb://user:pass@host:27017/?tls=true.",
            ));
        }
        if !(raw.starts_with("mongodb://") || raw.starts_with("mongodb+srv://")) {
            return Err(err(
                "the connection string must start with mongodb:// or mongodb+srv://".into(),
                "Check the scheme of the URI.",
            ));
        }
        let cs = ConnectionString::parse(raw).map_err(|e| {
            err(
                format!("the connection string is invalid: {}", scrub(&e.to_string(), raw)),
                "Fix the URI; see https://www.mongodb.com/docs/manual/reference/connection-string/.",
            )
        })?;
        let (hosts, srv) = match &cs.host_info {
            HostInfo::HostIdentifiers(h) if h.is_empty() => {
                return Err(err(
                    "the connection string names no host".into(),
                    "Add at least one host:port.",
                ))
            }
            HostInfo::HostIdentifiers(h) => (
                h.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                false,
            ),
            HostInfo::DnsRecord(name) => (name.clone(), true),
            #[allow(unreachable_patterns)]
            _ => (String::from("<unknown>"), false),
        };
        if let Some(rc) = &cs.read_concern {
            if !matches!(rc.level, mongodb::options::ReadConcernLevel::Majority) {
                return Err(err(
                    "read concern must be majority".into(),
                    "Remove readConcernLevel from the URI or set it to majority.",
                ));
            }
        }
        if let Some(wc) = &cs.write_concern {
            if let Some(w) = &wc.w {
                if !matches!(w, mongodb::options::Acknowledgment::Majority) {
                    return Err(err(
                        "write concern must be majority".into(),
                        "Remove w= from the URI or set w=majority.",
                    ));
                }
            }
        }
        if let Some(rp) = &cs.read_preference {
            if !matches!(rp, mongodb::options::ReadPreference::Primary) {
                return Err(err(
                    "read preference must be primary".into(),
                    "Remove readPreference from the URI or set readPreference=primary.",
                ));
            }
        }
        if raw.to_ascii_lowercase().contains("sockettimeoutms=") {
            return Err(err(
                "socketTimeoutMS is not allowed: long copy reads would be cut off".into(),
                "Remove socketTimeoutMS from the URI.",
            ));
        }
        Ok(Self {
            raw: raw.to_string(),
            hosts,
            srv,
        })
    }

    /// The raw string, for the driver only. Never log it.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// Comma-separated `host:port` list (or the SRV name): safe to show anywhere.
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    pub fn is_srv(&self) -> bool {
        self.srv
    }

    /// The URI with the userinfo's password replaced by `****`.
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }

    /// Removes this URI's secrets from text produced by the driver or the server.
    pub fn scrub(&self, text: &str) -> String {
        scrub(text, &self.raw)
    }
}

/// Whether two host lists (as [`ClusterUri::hosts`] gives them) name the same servers, in
/// any order and case.
pub fn same_hosts(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let mut v: Vec<String> = s
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}

/// Replaces the password in a `mongodb://user:pass@hosts/...` string with `****`.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "<redacted>".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, hosts) = authority.split_at(at);
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:****{hosts}{tail}")
        }
        None => uri.to_string(),
    }
}

/// Scrubs every secret of `uri` (the whole URI, its userinfo and password, percent-decoded or
/// not) out of `text`.
pub fn scrub(text: &str, uri: &str) -> String {
    let mut out = text.replace(uri, &redact(uri));
    if let Some((_, rest)) = uri.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some((_, pass)) = userinfo.split_once(':') {
                if !pass.is_empty() {
                    out = out.replace(pass, "****");
                    let decoded = percent_decode(pass);
                    if !decoded.is_empty() {
                        out = out.replace(&decoded, "****");
                    }
                }
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_standard_and_srv() {
        let u = ClusterUri::parse(
            "--cluster0",
            "mongodb://u:p%40ss@h1:27017,h2:27018/?replicaSet=rs0&tls=true&authSource=admin",
        )
        .unwrap();
        assert_eq!(u.hosts(), "h1:27017,h2:27018");
        assert!(!u.is_srv());
        let s = ClusterUri::parse(
            "--cluster1",
            "mongodb+srv://u:secret@cluster0.example.net/?retryWrites=true",
        )
        .unwrap();
        assert_eq!(s.hosts(), "cluster0.example.net");
        assert!(s.is_srv());
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn refusals_name_the_flag_and_hide_the_password() {
        let cases = [
            ("", "empty"),
            ("http://h", "must start with"),
            (
                "mongodb://u:hunter2@h/?readConcernLevel=local",
                "read concern",
            ),
            ("mongodb://u:hunter2@h/?w=1", "write concern"),
            (
                "mongodb://u:hunter2@h/?readPreference=secondary",
                "read preference",
            ),
            (
                "mongodb://u:hunter2@h/?socketTimeoutMS=10",
                "socketTimeoutMS",
            ),
            ("mongodb://u:hunter2@h/?tls=maybe", "invalid"),
            ("mongodb://u:hunter2@/", "invalid"),
        ];
        for (uri, want) in cases {
            let e = ClusterUri::parse("--cluster1", uri)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("--cluster1: "), "{e}");
            assert!(e.contains(want), "{uri}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn host_lists_compare_as_sets() {
        assert!(same_hosts("a:1,B:2", "b:2,a:1"));
        assert!(!same_hosts("a:1,b:2", "a:1"));
        assert!(!same_hosts("a:1", "a:2"));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("mongodb://a:b@h:1/x?y=z"),
            "mongodb://a:****@h:1/x?y=z"
        );
        assert_eq!(redact("mongodb://h:1"), "mongodb://h:1");
        assert_eq!(
            scrub(
                "bad uri mongodb://a:s3cr%21t@h and s3cr!t",
                "mongodb://a:s3cr%21t@h"
            ),
            "bad uri mongodb://a:****@h and ****"
        );
    }
}
