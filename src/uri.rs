//! Connection strings: validation against mongosync's rules and redaction.
//!
//! A connection string carries a password, so nothing in this module ever returns
//! the raw string in an error: messages name the flag and describe the problem, and
//! any text that came from the driver is scrubbed of the userinfo first and withheld
//! altogether if it would still quote part of the password.
//!
//! The string is checked here before the driver sees it: reserved characters and
//! malformed percent-encoding in the user name and password (which make the driver panic
//! and print the rest of the password), and malformed percent-encoding anywhere else. The
//! driver's own parsing then runs under [`guarded`], so a panic inside it can neither
//! escape nor print the string.

use mongodb::options::{ConnectionString, HostInfo};
use std::cell::Cell;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

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

/// The characters the userinfo must percent-encode (the driver refuses them raw).
const USERINFO_RESERVED: [char; 7] = [':', '/', '?', '#', '[', ']', '@'];

const ENCODING_FIX: &str = "Percent-encode the user name and password: '%' is %25, ':' is %3A, \
     '/' is %2F, '?' is %3F, '#' is %23, '[' is %5B, ']' is %5D, '@' is %40";
const URI_FIX: &str =
    "Fix the URI; see https://www.mongodb.com/docs/manual/reference/connection-string/.";
const WITHHELD: &str = "the connection string is invalid (the driver's explanation is not shown \
     because it would quote part of the password)";
const WITHHELD_FIX: &str = "Percent-encode the user name and password: '%' is %25, ':' is %3A, \
     '/' is %2F, '?' is %3F, '#' is %23, '[' is %5B, ']' is %5D, '@' is %40; an '@' in an option \
     value is %40 too. Then check the rest of the URI.";

type Refusal = (String, String);

fn refusal(problem: impl Into<String>, fix: impl Into<String>) -> Refusal {
    (problem.into(), fix.into())
}

impl ClusterUri {
    /// Validates `raw` as the value of `flag` (e.g. `--cluster0`). Never panics, and the error
    /// never quotes the password.
    pub fn parse(flag: &str, raw: &str) -> Result<Self, UriError> {
        // Our own messages are fixed text; the two places that quote the input (the driver's
        // explanation, an option's name) are checked against the password where they do.
        Self::check(raw.trim()).map_err(|(problem, fix)| UriError {
            flag: flag.to_string(),
            problem,
            fix,
        })
    }

    fn check(raw: &str) -> Result<Self, Refusal> {
        if raw.is_empty() {
            return Err(refusal(
                "the connection string is empty",
                "Pass a URI such as mongodb://user:pass@host:27017/?tls=true.",
            ));
        }
        if !(raw.starts_with("mongodb://") || raw.starts_with("mongodb+srv://")) {
            return Err(refusal(
                "the connection string must start with mongodb:// or mongodb+srv://",
                "Check the scheme of the URI.",
            ));
        }
        let parts = Parts::of(raw).ok_or_else(|| {
            refusal(
                "the connection string must start with mongodb:// or mongodb+srv://",
                "Check the scheme of the URI.",
            )
        })?;
        check_encoding(&parts, raw)?;
        let cs = match guarded(|| ConnectionString::parse(raw)) {
            Some(Ok(cs)) => cs,
            Some(Err(e)) => {
                // The driver's message alone, not its error's whole debug form ("Kind: …,
                // labels: {}, source: None, server response: None").
                let message = match &*e.kind {
                    mongodb::error::ErrorKind::InvalidArgument { message, .. } => message.clone(),
                    _ => e.to_string(),
                };
                let text = scrub(&hide_values(&message, &parts), raw);
                return Err(if quotes_secret(&text, raw) {
                    refusal(WITHHELD, WITHHELD_FIX)
                } else {
                    refusal(format!("the connection string is invalid: {text}"), URI_FIX)
                });
            }
            None => {
                return Err(refusal(
                    "the MongoDB driver failed while parsing the connection string",
                    format!("{ENCODING_FIX}; then check the rest of the URI."),
                ))
            }
        };
        let (hosts, srv) = match &cs.host_info {
            HostInfo::HostIdentifiers(h) if h.is_empty() => {
                return Err(refusal(
                    "the connection string names no host",
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
                return Err(refusal(
                    "read concern must be majority",
                    "Remove readConcernLevel from the URI or set it to majority.",
                ));
            }
        }
        if let Some(wc) = &cs.write_concern {
            if let Some(w) = &wc.w {
                if !matches!(w, mongodb::options::Acknowledgment::Majority) {
                    return Err(refusal(
                        "write concern must be majority",
                        "Remove w= from the URI or set w=majority.",
                    ));
                }
            }
        }
        if let Some(rp) = &cs.read_preference {
            if !matches!(rp, mongodb::options::ReadPreference::Primary) {
                return Err(refusal(
                    "read preference must be primary",
                    "Remove readPreference from the URI or set readPreference=primary.",
                ));
            }
        }
        if parts
            .options()
            .any(|(key, _)| key.eq_ignore_ascii_case("socketTimeoutMS"))
        {
            return Err(refusal(
                "socketTimeoutMS is not allowed: long copy reads would be cut off",
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

    /// [`scrub`](Self::scrub), and `None` if the text would still quote three or more
    /// characters of the password: for text about the connection string itself, such as the
    /// driver's account of why it cannot use it.
    pub fn scrub_strict(&self, text: &str) -> Option<String> {
        let out = scrub(text, &self.raw);
        (!quotes_secret(&out, &self.raw)).then_some(out)
    }
}

/// A connection string split the way the driver splits it (before any decoding).
struct Parts<'a> {
    /// Everything before the last `@` of the part before the first `?`.
    userinfo: Option<&'a str>,
    hosts: &'a str,
    db: Option<&'a str>,
    options: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn of(raw: &'a str) -> Option<Self> {
        let (_, rest) = raw.split_once("://")?;
        let (pre, options) = match rest.split_once('?') {
            Some((pre, options)) => (pre, Some(options)),
            None => (rest, None),
        };
        let (userinfo, hosts_db) = match pre.rsplit_once('@') {
            Some((userinfo, hosts_db)) => (Some(userinfo), hosts_db),
            None => (None, pre),
        };
        let (hosts, db) = match hosts_db.split_once('/') {
            Some((hosts, db)) => (hosts, Some(db)),
            None => (hosts_db, None),
        };
        Some(Self {
            userinfo,
            hosts,
            db,
            options,
        })
    }

    /// `(key, value)` of each option, undecoded.
    fn options(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.options
            .filter(|o| !o.is_empty())
            .into_iter()
            .flat_map(|o| o.split('&'))
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
    }
}

/// What is wrong with a percent-encoded text.
enum Encoding {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

fn check_percent(s: &str) -> Result<(), Encoding> {
    let bytes = s.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return Err(Encoding::BadEscape);
            };
            decoded.push((hi << 4) | lo);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    std::str::from_utf8(&decoded)
        .map(|_| ())
        .map_err(|_| Encoding::NotUtf8)
}

/// The problem and fix for a malformed percent-encoding in `what`; never quotes it.
fn encoding_refusal(what: &str, e: Encoding, fix: &str) -> Refusal {
    match e {
        Encoding::BadEscape => refusal(
            format!("{what} contains '%' not followed by two hex digits"),
            format!("{fix}: a '%' that is part of the text itself is %25."),
        ),
        Encoding::NotUtf8 => refusal(
            format!("{what} has percent-encoded bytes (%XX) that do not decode to UTF-8"),
            format!(
                "{fix}: each %XX must be a byte of a character's UTF-8 encoding (e.g. 'é' is \
                 %C3%A9), and a '%' that is part of the text itself is %25."
            ),
        ),
    }
}

/// Our own checks, before the driver sees the string: the driver panics on some malformed
/// userinfo (a `%` followed by a multi-byte character) and prints the rest of the password.
fn check_encoding(parts: &Parts<'_>, raw: &str) -> Result<(), Refusal> {
    if parts.userinfo.is_none() && parts.options.is_some_and(|o| o.contains('@')) {
        // Either a password with a raw '?' (the driver would read the rest as options and
        // quote it in its error) or an option value with a raw '@'.
        return Err(refusal(
            "the connection string has an '@' after its '?' and none before it: either the \
             password contains a '?' that is not percent-encoded, or an option value contains \
             an '@'",
            format!("{ENCODING_FIX}; an '@' in an option value is %40."),
        ));
    }
    if let Some(userinfo) = parts.userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        for (what, text) in [("user name", Some(user)), ("password", password)] {
            let Some(text) = text else { continue };
            if let Some(c) = text.chars().find(|c| USERINFO_RESERVED.contains(c)) {
                return Err(refusal(
                    format!(
                        "the {what} contains '{c}', which must be percent-encoded in a \
                         connection string"
                    ),
                    format!("{ENCODING_FIX}."),
                ));
            }
            check_percent(text).map_err(|e| {
                encoding_refusal(
                    &format!("the {what}"),
                    e,
                    &format!("Percent-encode the {what}"),
                )
            })?;
        }
    }
    check_percent(parts.hosts).map_err(|e| {
        encoding_refusal(
            "the host list",
            e,
            "Host names cannot contain '%'; a Unix socket path must be percent-encoded",
        )
    })?;
    if let Some(db) = parts.db {
        check_percent(db).map_err(|e| {
            encoding_refusal("the database name", e, "Percent-encode the database name")
        })?;
    }
    for (key, value) in parts.options() {
        // Name the option only if its name is a plain word that is not part of what may be
        // the password (with a raw '@' and '?' in it, the driver reads part of it as options).
        let named = !key.is_empty()
            && key.len() <= 64
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !quotes_secret(key, raw);
        let what = if named {
            format!("the value of option {key}")
        } else {
            "an option".to_string()
        };
        check_percent(key)
            .and_then(|()| check_percent(value))
            .map_err(|e| encoding_refusal(&what, e, "Percent-encode the option's value"))?;
    }
    Ok(())
}

thread_local! {
    /// Non-zero while this thread runs inside [`guarded`]: its panics are caught and must
    /// not be printed (the message could quote the connection string).
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

/// Wraps the process's panic hook, once, so that it stays silent for panics raised inside
/// [`guarded`]; every other panic is reported as before.
fn install_quiet_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.try_with(Cell::get).unwrap_or(0) == 0 {
                previous(info);
            }
        }));
    });
}

struct Quiet;

impl Quiet {
    fn enter() -> Self {
        install_quiet_hook();
        QUIET.with(|q| q.set(q.get() + 1));
        Quiet
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        QUIET.with(|q| q.set(q.get().saturating_sub(1)));
    }
}

/// Runs a call into the driver's connection-string handling so that a panic inside it
/// neither escapes nor prints anything (its message could quote the password): `None` if it
/// panicked. Validation comes first ([`ClusterUri::parse`]); this is the second line.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    let _quiet = Quiet::enter();
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// [`guarded`] for a future (such as `ClientOptions::parse`): each poll runs guarded.
pub async fn guarded_async<F: IntoFuture>(fut: F) -> Option<F::Output> {
    let fut = guarded(|| fut.into_future())?;
    GuardedFuture(Box::pin(fut)).await
}

struct GuardedFuture<F>(Pin<Box<F>>);

impl<F: Future> Future for GuardedFuture<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match guarded(|| inner.poll(cx)) {
            Some(Poll::Ready(v)) => Poll::Ready(Some(v)),
            Some(Poll::Pending) => Poll::Pending,
            None => Poll::Ready(None),
        }
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

/// The byte range of everything that may be the password, whatever the writer failed to
/// encode: from the first `:` after the scheme to the last `@` of the string. It contains the
/// password as the driver reads it and as the writer meant it (a superset at worst).
fn secret_span(uri: &str) -> Option<std::ops::Range<usize>> {
    let start = uri.find("://")? + 3;
    let at = start + uri[start..].rfind('@')?;
    let colon = start + uri[start..at].find(':')?;
    (colon + 1 < at).then_some(colon + 1..at)
}

/// Replaces the password in a `mongodb://user:pass@hosts/...` string with `****`.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "<redacted>".into();
    };
    match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:****{}", &rest[at..])
        }
        None => uri.to_string(),
    }
}

/// Scrubs every secret of `uri` (the whole URI, its userinfo and password, percent-decoded or
/// not) out of `text`.
pub fn scrub(text: &str, uri: &str) -> String {
    let mut out = text.replace(uri, &redact(uri));
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(span) = secret_span(uri) {
        secrets.push(&uri[span]);
    }
    if let Some(parts) = Parts::of(uri) {
        if let Some((_, pass)) = parts.userinfo.and_then(|u| u.split_once(':')) {
            secrets.push(pass);
        }
    }
    if let Some((_, rest)) = uri.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            if let Some((_, pass)) = authority[..at].split_once(':') {
                secrets.push(pass);
            }
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    for pass in secrets {
        if !pass.is_empty() {
            out = out.replace(pass, "****");
            let decoded = percent_decode(pass);
            if !decoded.is_empty() {
                out = out.replace(&decoded, "****");
            }
        }
    }
    out
}

/// Replaces in the driver's `text` every option value and the user name of the URI (three
/// characters or more, as written or percent-decoded, in any ASCII case: the driver lowercases
/// some) by the option's name in angle brackets: status fields, Events and logs show hosts
/// only, and an option value may be anything the user put there.
fn hide_values(text: &str, parts: &Parts<'_>) -> String {
    let user = parts
        .userinfo
        .map(|u| u.split_once(':').map_or(u, |(user, _)| user));
    let mut values: Vec<(String, String)> = parts
        .options()
        .map(|(k, v)| (format!("<{k}>"), v))
        .chain(user.map(|u| ("<user>".to_string(), u)))
        .flat_map(|(name, v)| [(name.clone(), v.to_string()), (name, percent_decode(v))])
        .filter(|(_, v)| v.len() >= 3)
        .collect();
    // Longest first, so that a value containing another is hidden whole.
    values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for (name, value) in values {
        out = replace_ascii_case_insensitive(&out, &value, &name);
    }
    out
}

/// `text` with every ASCII-case-insensitive occurrence of `what` replaced by `with`.
fn replace_ascii_case_insensitive(text: &str, what: &str, with: &str) -> String {
    let (hay, needle) = (text.to_ascii_lowercase(), what.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    // ASCII lowercasing keeps every byte where it was, so the offsets hold in `text`.
    for (at, _) in hay.match_indices(&needle) {
        if at < last {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str(with);
        last = at + needle.len();
    }
    out.push_str(&text[last..]);
    out
}

/// Whether `text` quotes three or more consecutive characters of what may be `uri`'s
/// password (as written or percent-decoded) that do not also appear in the rest of `uri`.
pub fn quotes_secret(text: &str, uri: &str) -> bool {
    let Some(span) = secret_span(uri) else {
        return false;
    };
    let (before, after) = (&uri[..span.start], &uri[span.end..]);
    let public = |s: &str| before.contains(s) || after.contains(s);
    let raw = &uri[span];
    [raw.to_string(), percent_decode(raw)].iter().any(|secret| {
        let ends: Vec<usize> = secret
            .char_indices()
            .map(|(i, _)| i)
            .chain([secret.len()])
            .collect();
        // From each start, the longest run found in the text: if it is 3+ characters and
        // not public, the text quotes the password (a shorter public run cannot excuse it).
        (0..ends.len()).any(|i| {
            let mut longest = None;
            for j in i + 3..ends.len() {
                let s = &secret[ends[i]..ends[j]];
                if text.contains(s) {
                    longest = Some(s);
                } else {
                    break;
                }
            }
            longest.is_some_and(|s| !public(s))
        })
    })
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Byte-wise: slicing the str here would panic inside a multi-byte character.
        if let (b'%', Some(&hi), Some(&lo)) = (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            if let (Some(hi), Some(lo)) = (hex_value(hi), hex_value(lo)) {
                out.push((hi << 4) | lo);
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

    /// From the new-user trial: the driver's explanation quoted option values (it lowercases
    /// some), which then reached a ClusterSync's status and Events.
    #[test]
    fn refusals_quote_no_option_value_or_user_name() {
        for (uri, value) in [
            (
                "mongodb://alice:pw@h1/?readPreference=Pw-LEAK-l12",
                "pw-leak-l12",
            ),
            (
                "mongodb://alice:pw@h1/?authMechanism=Pw-LEAK-n14",
                "pw-leak-n14",
            ),
            ("mongodb://h1/?authMechanism=Pw%2DLEAK%2Dn15", "pw-leak-n15"),
        ] {
            let e = ClusterUri::parse("--cluster0", uri)
                .unwrap_err()
                .to_string();
            assert!(!e.to_ascii_lowercase().contains(value), "{e}");
            assert!(e.contains("--cluster0"), "{e}");
        }
        assert_eq!(
            replace_ascii_case_insensitive("'ab-C' and AB-c", "ab-c", "<x>"),
            "'<x>' and <x>"
        );
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
    fn malformed_userinfo_is_refused_before_the_driver_sees_it() {
        for (uri, want) in [
            (
                "mongodb://u:pw%a\u{20ac}secret@h:1/",
                "'%' not followed by two hex digits",
            ),
            (
                "mongodb://u:pw%\u{20ac}secret@h:1/",
                "'%' not followed by two hex digits",
            ),
            (
                "mongodb://u:secret%4@h:1/",
                "'%' not followed by two hex digits",
            ),
            ("mongodb://u:pw%ffsecret@h:1/", "UTF-8"),
            ("mongodb://u:pw:secret@h:1/", "contains ':'"),
            ("mongodb://u:pw?secret@h:1/", "'@' after its '?'"),
            ("mongodb://u%zzsecret:pw@h:1/", "the user name"),
        ] {
            let e = ClusterUri::parse("--cluster0", uri).unwrap_err();
            assert!(e.problem.contains(want), "{uri}: {e}");
            assert!(e.fix.contains("%25"), "{uri}: {e}");
            assert!(!e.to_string().contains("secret"), "{uri}: {e}");
        }
    }

    #[test]
    fn a_panic_inside_guarded_is_caught() {
        assert_eq!(guarded(|| 7), Some(7));
        let r: Option<()> = guarded(|| panic!("mongodb://u:hunter2@h"));
        assert_eq!(r, None);
        // Panics outside `guarded` still unwind (and are still reported by the hook).
        assert!(std::panic::catch_unwind(|| panic!("outside")).is_err());
    }

    #[test]
    fn secrets_are_found_whatever_was_left_unencoded() {
        let uri = "mongodb://u:pa?ss@word@h:1/?appName=x";
        assert!(quotes_secret("option is not a pair: ss@word@h", uri));
        assert!(quotes_secret("bad word", uri));
        // Runs that are also in the public parts, and short ones, are not secrets.
        assert!(!quotes_secret(
            "appName is bad",
            "mongodb://u:appName@h/?appName=x"
        ));
        assert!(!quotes_secret("pa", uri));
        assert!(!quotes_secret("anything", "mongodb://h:1/?appName=x"));
        // Decoded too.
        assert!(quotes_secret("p@ss", "mongodb://u:p%40ss@h:1/"));
        // Percent-decoding never panics inside a multi-byte character.
        assert_eq!(percent_decode("%a\u{20ac}%4"), "%a\u{20ac}%4");
        assert_eq!(percent_decode("%+1%41"), "%+1A");
        assert_eq!(
            scrub("x pw%a\u{20ac}y", "mongodb://u:pw%a\u{20ac}y@h"),
            "x ****"
        );
        assert_eq!(
            redact("mongodb://u:p/s?x@h:1/?a=b"),
            "mongodb://u:****@h:1/?a=b"
        );
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
