//! Connection strings that made the driver panic and print the password, that leaked parts
//! of it in messages, or that hung forever on an SRV name that does not resolve (issue 15).
//!
//! No MongoDB server is needed: everything here fails (or succeeds) before connecting. The
//! fuzz test is seeded (`URI_FUZZ_SEED`, `URI_FUZZ_CASES` to explore more) and prints the seed
//! and the input of any failure.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use clustersync::mongo::build_client;
use clustersync::uri::ClusterUri;
use mongodb::options::{ClientOptions, ConnectionString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The SRV deadline every test of this file runs with (set once, before any read of it).
const SRV_SECONDS: u64 = 3;

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("CLUSTERSYNC_SRV_RESOLVE_SECONDS", SRV_SECONDS.to_string());
    });
}

/// Text our messages may contain whatever the password is: the percent-encoding hints.
const HINTS: &str = "%25 %3A %2F %3F %23 %5B %5D %40 %C3%A9 %XX";

/// The first run of 3+ characters of `secret` (as written, or percent-decoded) found in
/// `msg` that neither the input's public parts nor our hints contain.
fn leaked(msg: &str, secret: &str, public: &[&str]) -> Option<String> {
    let decoded = percent_decode(secret);
    for s in [secret, decoded.as_str()] {
        let chars: Vec<char> = s.chars().collect();
        for i in 0..chars.len() {
            for j in i + 3..=chars.len() {
                let run: String = chars[i..j].iter().collect();
                if !msg.contains(&run) {
                    break;
                }
                if !public.iter().any(|p| p.contains(&run)) && !HINTS.contains(&run) {
                    return Some(run);
                }
            }
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses without letting a panic end the test: `Err(())` if it panicked.
fn parse(raw: &str) -> Result<Result<ClusterUri, String>, ()> {
    catch_unwind(AssertUnwindSafe(|| {
        ClusterUri::parse("--cluster0", raw).map_err(|e| e.to_string())
    }))
    .map_err(|_| ())
}

#[test]
fn a_percent_before_a_multibyte_character_is_refused_without_panic_or_leak() {
    // (uri, password, what the message must name)
    let cases = [
        (
            "mongodb://u:pw%a€secret@127.0.0.1:27017/?directConnection=true",
            "pw%a€secret",
            "%25",
        ),
        ("mongodb://u:pw%€secret@h:27017/", "pw%€secret", "%25"),
        ("mongodb://u:%€€secret@h:27017/", "%€€secret", "%25"),
        (
            "mongodb+srv://u:pw%a€secret@cluster0.example.net/",
            "pw%a€secret",
            "%25",
        ),
        ("mongodb://u:pw%zzsecret@h:27017/", "pw%zzsecret", "%25"),
        ("mongodb://u:secret%@h:27017/", "secret%", "%25"),
        (
            "mongodb://u:pw%ff%fesecret@h:27017/",
            "pw%ff%fesecret",
            "UTF-8",
        ),
        ("mongodb://u:pw/secret@h:27017/", "pw/secret", "%2F"),
        ("mongodb://u:pw?secret@h:27017/", "pw?secret", "%3F"),
        ("mongodb://u:pw?secret=x@h:27017/", "pw?secret=x", "%3F"),
        ("mongodb://u:pw@secret@h:27017/", "pw@secret", "%40"),
        // The driver reads "W0rd@h:27017/" as an option and quotes it: not shown.
        ("mongodb://u:p@ss?W0rd@h:27017/", "p@ss?W0rd", "%3F"),
    ];
    for (uri, password, want) in cases {
        let Ok(result) = parse(uri) else {
            panic!("parsing panicked: {uri}");
        };
        let e = match result {
            Ok(_) => panic!("accepted: {uri}"),
            Err(e) => e,
        };
        assert!(e.starts_with("--cluster0: "), "{e}");
        assert!(e.contains(want), "{uri}: {e}");
        assert!(e.contains("password"), "{uri}: {e}");
        let (before, after) = uri.split_once(password).unwrap();
        if let Some(run) = leaked(&e, password, &[before, after]) {
            panic!("{uri}: the message quotes {run:?}: {e}");
        }
    }
    // The user name is checked the same way.
    let e = parse("mongodb://u%a€secret:pw@h:27017/")
        .unwrap()
        .unwrap_err();
    assert!(e.contains("user name") && e.contains("%25"), "{e}");
    assert!(!e.contains("secret"), "{e}");
}

#[test]
fn malformed_percent_encoding_elsewhere_is_refused_by_name() {
    for (uri, want) in [
        ("mongodb://u:pw@h:27017/db%zz", "database name"),
        ("mongodb://u:pw@h:27017/?appName=a%zz", "option appName"),
        ("mongodb://u:pw@h:27017/?appName=a%ff", "option appName"),
        ("mongodb://u:pw@h%zz:27017/", "host"),
    ] {
        let e = parse(uri)
            .unwrap_or_else(|()| panic!("parsing panicked: {uri}"))
            .unwrap_err();
        assert!(e.contains(want) && e.contains('%'), "{uri}: {e}");
    }
    // Well-formed strings still pass, with any percent-encoded character.
    for uri in [
        "mongodb://u:p%40ss%E2%82%AC@h1:27017,h2:27018/?replicaSet=rs0",
        "mongodb://us%C3%A9r:€uro@h:27017/admin?appName=a%40b",
        "mongodb://u:pw@h:27017/?appName=100%25",
        "mongodb+srv://u:secret@cluster0.example.net/?authSource=admin",
    ] {
        assert!(parse(uri).unwrap().is_ok(), "{uri}");
    }
}

#[test]
fn the_commands_exit_2_without_printing_the_password() {
    let bin = env!("CARGO_BIN_EXE_clustersync");
    let bad = "mongodb://u:pw%a€secret@127.0.0.1:27017/?directConnection=true";
    let good = "mongodb://127.0.0.1:1/?directConnection=true";
    for args in [
        vec!["check", "--cluster0", bad, "--cluster1", good],
        vec!["verify", "--cluster0", bad, "--cluster1", good],
        vec![
            "engine",
            "--cluster0",
            bad,
            "--cluster1",
            good,
            "--port",
            "0",
        ],
    ] {
        let (code, out) = run(bin, &args, &[], Duration::from_secs(60));
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(
            out.contains("--cluster0") && out.contains("%25"),
            "{args:?}: {out}"
        );
        assert!(
            !out.contains("secret") && !out.contains("panicked"),
            "{args:?}: {out}"
        );
    }
}

#[test]
fn check_and_verify_give_up_on_an_unresolvable_srv_name() {
    let bin = env!("CARGO_BIN_EXE_clustersync");
    let srv = "mongodb+srv://u:secret@nonexistent.invalid/";
    let good = "mongodb://127.0.0.1:1/?directConnection=true";
    for args in [
        vec!["check", "--cluster0", srv, "--cluster1", good],
        vec!["verify", "--cluster0", srv, "--cluster1", good],
    ] {
        let started = Instant::now();
        let (code, out) = run(
            bin,
            &args,
            &[("CLUSTERSYNC_SRV_RESOLVE_SECONDS", "3")],
            Duration::from_secs(60),
        );
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(started.elapsed() < Duration::from_secs(30), "{args:?}");
        assert!(
            out.contains("cannot resolve the SRV record _mongodb._tcp.nonexistent.invalid"),
            "{args:?}: {out}"
        );
        assert!(!out.contains("secret"), "{args:?}: {out}");
    }
}

/// Runs the binary with a time limit: its exit code (`None` if it had to be killed) and its
/// stdout and stderr.
fn run(bin: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start clustersync");
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut out);
    (code, out)
}

#[tokio::test]
async fn build_client_gives_up_on_an_unresolvable_srv_name_within_the_deadline() {
    init();
    let uri = ClusterUri::parse("--cluster0", "mongodb+srv://u:secret@nonexistent.invalid/")
        .expect("a well-formed SRV string");
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(SRV_SECONDS + 30),
        build_client("--cluster0", &uri),
    )
    .await
    .expect("build_client retried past its deadline");
    let elapsed = started.elapsed();
    let e = result.expect_err("an unresolvable name must fail").0;
    assert!(
        elapsed < Duration::from_secs(SRV_SECONDS + 5),
        "took {elapsed:?}: {e}"
    );
    assert!(
        e.starts_with(
            "--cluster0: cannot resolve the SRV record _mongodb._tcp.nonexistent.invalid: "
        ),
        "{e}"
    );
    assert!(e.contains("use a mongodb:// connection string"), "{e}");
    assert!(!e.contains("secret"), "{e}");
}

// ---- fuzzing ------------------------------------------------------------------------------

/// Characters that no message of ours or the driver's contains as text of its own: every
/// 3-character run of a generated password holds one, or is a %-sequence, so a run found in
/// a message came from the input.
const RARE: &[char] = &[
    '~',
    '!',
    '*',
    '^',
    '|',
    '`',
    '<',
    '>',
    '{',
    '}',
    '\\',
    'ǂ',
    'Ω',
    'ж',
    '中',
    '😀',
    'ß',
    'ñ',
    '€',
    '\u{301}',
    '\u{10FFFF}',
];
const RESERVED: &[char] = &[':', '/', '?', '#', '[', ']', '@'];
const HEX: &[u8] = b"0123456789abcdefABCDEF";

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn alnum(rng: &mut StdRng) -> char {
    let set = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    pick(rng, set) as char
}

fn any_char(rng: &mut StdRng) -> char {
    loop {
        let c = match rng.random_range(0..4) {
            0 => rng.random_range(0x20u32..0x7f),
            1 => rng.random_range(0x80u32..0x800),
            2 => rng.random_range(0x800u32..0x10000),
            _ => rng.random_range(0x10000u32..0x110000),
        };
        if let Some(c) = char::from_u32(c) {
            return c;
        }
    }
}

/// A password: rare characters between chunks of at most three characters, each chunk
/// plain text, a reserved character, or a %-sequence (valid, truncated, before a multi-byte
/// character, or decoding to bytes that are not UTF-8).
fn password(rng: &mut StdRng) -> String {
    let mut p = String::new();
    for _ in 0..rng.random_range(1..8) {
        p.push(pick(rng, RARE));
        match rng.random_range(0..10) {
            0..=2 => {
                for _ in 0..rng.random_range(1..3) {
                    p.push(alnum(rng));
                }
            }
            3 => p.push(pick(rng, RESERVED)),
            4 => {
                p.push('%');
                p.push(pick(rng, HEX) as char);
                p.push(pick(rng, HEX) as char);
            }
            5 => {
                p.push('%');
                p.push(pick(rng, HEX) as char);
                p.push(any_char(rng));
            }
            6 => {
                p.push('%');
                p.push(any_char(rng));
            }
            7 => p.push('%'),
            8 => p.push_str(pick(
                rng,
                &["%FF", "%C3", "%E2%82", "%80", "%00", "%e2%82%ac"],
            )),
            _ => p.push(any_char(rng)),
        }
    }
    if rng.random_bool(0.3) {
        p.push(pick(rng, RARE));
    }
    p
}

const USERS: &[&str] = &[
    "u",
    "sync-user",
    "us%40er",
    "",
    "%C3%BC",
    "a%zz",
    "u%a€",
    "u/x",
];
const HOSTS: &[&str] = &[
    "127.0.0.1:27017",
    "h1:27017,h2:27018",
    "cluster0.example.net",
    "localhost",
    "[::1]:27017",
    "[::1",
    "h:0",
    "h:99999",
    "h:",
    "",
    ",",
    "%2Ftmp%2Fmongodb-27017.sock",
    "%2Ftmp%2F%zz.sock",
    "H%zz",
];
const PATHS: &[&str] = &["", "/", "/admin", "/db%zz", "/a b", "/a$b", "/%ff"];
const OPTIONS: &[&str] = &[
    "directConnection=true",
    "tls=true",
    "tls=maybe",
    "replicaSet=rs0",
    "authSource=admin",
    "authSource=",
    "w=majority",
    "w=1",
    "w=-1",
    "readPreference=secondary",
    "readPreference=primary",
    "readPreferenceTags=dc:ny",
    "maxStalenessSeconds=-1",
    "socketTimeoutMS=10",
    "appName=x%zz",
    "appName=a@b",
    "appName=%E2%82%AC",
    "srvMaxHosts=2",
    "srvServiceName=custom",
    "authMechanism=SCRAM-SHA-256",
    "authMechanism=MONGODB-X509",
    "authMechanism=BOGUS",
    "authMechanismProperties=X",
    "authMechanismProperties=SERVICE_NAME:mongodb",
    "zlibCompressionLevel=10",
    "compressors=zstd,zlib,snappy",
    "loadBalanced=true",
    "uuidRepresentation=foo",
    "heartbeatFrequencyMS=1",
    "serverSelectionTimeoutMS=99999999999999999999",
    "tlsInsecure=true",
    "tlsAllowInvalidCertificates=true",
    "tlsCAFile=%2Fnonexistent%2Fca.pem",
    "tlsCertificateKeyFilePassword=pw",
    "foo=bar",
    "=",
    "",
    "novalue",
];

/// A structured connection string and the password planted in it (if any), with the parts
/// around the password.
fn structured(rng: &mut StdRng) -> (String, Option<String>) {
    let scheme = pick(
        rng,
        &[
            "mongodb://",
            "mongodb://",
            "mongodb+srv://",
            "mongodb+srv://",
            "MONGODB://",
            "mongodb:/",
            "http://",
        ],
    );
    let mut uri = scheme.to_string();
    let mut secret = None;
    if rng.random_bool(0.9) {
        uri.push_str(pick(rng, USERS));
        if rng.random_bool(0.9) {
            let p = password(rng);
            uri.push(':');
            uri.push_str(&p);
            secret = Some(p);
        }
        uri.push('@');
    }
    uri.push_str(pick(rng, HOSTS));
    uri.push_str(pick(rng, PATHS));
    if rng.random_bool(0.7) {
        uri.push('?');
        let n = rng.random_range(1..4);
        let opts: Vec<&str> = (0..n).map(|_| pick(rng, OPTIONS)).collect();
        uri.push_str(&opts.join("&"));
    }
    (uri, secret)
}

/// Anything: a scheme (usually) and random characters weighted towards the delimiters.
fn random(rng: &mut StdRng) -> String {
    let mut s = String::new();
    match rng.random_range(0..5) {
        0 => {}
        1 | 2 => s.push_str("mongodb://"),
        _ => s.push_str("mongodb+srv://"),
    }
    for _ in 0..rng.random_range(0..48) {
        let c = match rng.random_range(0..6) {
            0 => pick(rng, b":/?#[]@%&=,.") as char,
            1 => pick(rng, HEX) as char,
            2 => alnum(rng),
            3 => pick(rng, RARE),
            _ => any_char(rng),
        };
        s.push(c);
    }
    s
}

#[test]
fn fuzzed_connection_strings_never_panic_nor_leak_the_password() {
    init();
    let seed: u64 = std::env::var("URI_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x15_15_15);
    let cases: usize = std::env::var("URI_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40_000);
    let mut rng = StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut accepted, mut refused, mut clients, mut withheld) = (0usize, 0usize, 0usize, 0usize);
    let started = Instant::now();
    for case in 0..cases {
        let (uri, secret) = if case % 2 == 0 {
            structured(&mut rng)
        } else {
            (random(&mut rng), None)
        };
        let ctx = format!("seed {seed}, case {case}: {uri:?}");
        let parsed = match parse(&uri) {
            Ok(p) => p,
            Err(()) => panic!("ClusterUri::parse panicked: {ctx}"),
        };
        match parsed {
            Err(msg) => {
                refused += 1;
                withheld += usize::from(msg.contains("not shown"));
                if let Some(p) = &secret {
                    // The password's first occurrence after the userinfo's ':' is where it
                    // was planted (the user names hold no rare characters).
                    let at = uri.find(p.as_str()).expect("planted");
                    let public = [&uri[..at], &uri[at + p.len()..]];
                    if let Some(run) = leaked(&msg, p, &public) {
                        panic!("the message quotes {run:?} of the password: {ctx}\n{msg}");
                    }
                }
            }
            Ok(cu) => {
                accepted += 1;
                // What we accept (trimmed), the driver must parse without panicking.
                let cs = catch_unwind(AssertUnwindSafe(|| ConnectionString::parse(cu.expose())))
                    .unwrap_or_else(|_| panic!("the driver panicked on an accepted string: {ctx}"));
                let cs = cs.unwrap_or_else(|e| panic!("driver refused {ctx}: {e}"));
                if cu.is_srv() {
                    continue; // resolving would need DNS
                }
                let opts = catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(async { ClientOptions::parse(cs).await })
                }))
                .unwrap_or_else(|_| panic!("ClientOptions::parse panicked: {ctx}"));
                if opts.is_ok() && clients < 40 {
                    clients += 1;
                    let built = catch_unwind(AssertUnwindSafe(|| {
                        runtime.block_on(build_client("--cluster0", &cu))
                    }))
                    .unwrap_or_else(|_| panic!("build_client panicked: {ctx}"));
                    if let (Err(e), Some(p)) = (built, &secret) {
                        let at = uri.find(p.as_str()).unwrap();
                        let public = [&uri[..at], &uri[at + p.len()..]];
                        assert!(leaked(&e.0, p, &public).is_none(), "{ctx}: {}", e.0);
                    }
                }
            }
        }
    }
    eprintln!(
        "{cases} cases (seed {seed}): {accepted} accepted, {refused} refused ({withheld} with the \
         driver's explanation withheld), {clients} clients built, in {:?}",
        started.elapsed()
    );
    assert!(
        accepted > cases / 50,
        "the generator hardly produces valid strings"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "too slow");
}
