//! JSON-lines logs, one object per line, in one of two shapes, to standard output or to a file
//! that `SIGUSR1` rotates (mongosync's documented log rotation, and what logrotate's
//! `postrotate` sends).
//!
//! - [`LogFormat::Mongosync`]: mongosync's keys (`level`, `time`, `message`, `mongosyncID`,
//!   `pid`, the event's fields; values over 1,024 characters truncated), in `mongosync.log`, so
//!   that log alerts and MongoDB's log tooling written for mongosync read it. The default when
//!   the binary is invoked as `mongosync`.
//! - [`LogFormat::Clustersync`]: `tracing`'s JSON (`timestamp`, `level`, `fields.message`,
//!   `target`, the current span), in `clustersync.log`.
//!
//! With `--logPath`, the active file is `<dir>/<stem>.log`. A rotation (on `SIGUSR1`, and at
//! the first line of each new UTC day, so that weeks of logs cannot fill the disk) renames it
//! `<stem>-YYYY-MM-DDTHH-MM-SS.mmm.log` and opens a new one; if the file was already moved
//! away (logrotate's `create`/`nocopytruncate` mode), it only opens a new one. The seven
//! newest rotated files are kept.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Rotated files kept beside the active one.
const KEEP_ROTATED: usize = 7;
/// mongosync truncates logged values longer than this (since 1.7).
const MAX_FIELD_CHARS: usize = 1024;

/// The shape of each log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `tracing`'s JSON, in `clustersync.log`.
    #[default]
    Clustersync,
    /// mongosync's keys, in `mongosync.log`.
    Mongosync,
}

impl LogFormat {
    fn stem(self) -> &'static str {
        match self {
            LogFormat::Clustersync => "clustersync",
            LogFormat::Mongosync => "mongosync",
        }
    }
}

/// What the log needs to know about the process writing it.
#[derive(Debug, Clone)]
pub struct LogSettings<'a> {
    /// The level for clustersync's own events (`RUST_LOG` overrides).
    pub level: &'a str,
    /// The directory of the log files; standard output when `None`.
    pub dir: Option<&'a Path>,
    /// The shape of each line.
    pub format: LogFormat,
    /// `mongosyncID` in mongosync's shape.
    pub engine_id: &'a str,
}

/// Keeps the log running; [`Logs::rotate`] is what `SIGUSR1` calls.
pub struct Logs {
    file: Option<Arc<LogFile>>,
    _guard: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Logs {
    /// Rotates the log file; nothing to do when logging to standard output.
    pub fn rotate(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.rotate(),
            None => Ok(()),
        }
    }

    /// The active log file, when there is one.
    pub fn path(&self) -> Option<PathBuf> {
        self.file.as_ref().map(|f| f.active())
    }
}

/// Installs the global subscriber for a subcommand that logs to standard output only.
pub fn init_stdout(level: &str) -> anyhow::Result<Logs> {
    init(LogSettings {
        level,
        dir: None,
        format: LogFormat::Clustersync,
        engine_id: "",
    })
}

/// Installs the global subscriber. Other crates log warnings and above unless `RUST_LOG`
/// says otherwise.
pub fn init(settings: LogSettings<'_>) -> anyhow::Result<Logs> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(format!("warn,clustersync={}", settings.level)),
    };
    let (file, writer, guard) = match settings.dir {
        Some(dir) => {
            let file = Arc::new(LogFile::open(dir, settings.format.stem()).map_err(|e| {
                anyhow::anyhow!("--logPath {}: cannot open the log file: {e}", dir.display())
            })?);
            let (writer, guard) = tracing_appender::non_blocking(FileWriter(file.clone()));
            (Some(file), BoxMakeWriter::new(writer), Some(guard))
        }
        // Standard output is written in place: nothing is lost when a process ends at once.
        None => (None, BoxMakeWriter::new(io::stdout), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match settings.format {
        LogFormat::Clustersync => builder
            .json()
            .with_current_span(true)
            .with_target(true)
            .try_init(),
        LogFormat::Mongosync => builder
            .event_format(MongosyncFormat {
                id: settings.engine_id.to_string(),
                pid: std::process::id(),
            })
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(Logs {
        file,
        _guard: guard,
    })
}

/// The active file and the day it was opened, behind one lock: the writer thread writes
/// through it, and a rotation swaps it.
struct LogFile {
    dir: PathBuf,
    stem: &'static str,
    inner: Mutex<Active>,
}

struct Active {
    file: File,
    day: String,
}

fn lock(m: &Mutex<Active>) -> MutexGuard<'_, Active> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// UTC time with exactly three decimals (`2026-12-02T16:05:27.350Z`): log parsers and the
/// rotated files' names want a fixed width.
fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

impl LogFile {
    fn open(dir: &Path, stem: &'static str) -> io::Result<LogFile> {
        std::fs::create_dir_all(dir)?;
        let me = LogFile {
            dir: dir.to_path_buf(),
            stem,
            inner: Mutex::new(Active {
                file: append(&dir.join(format!("{stem}.log")))?,
                day: now_rfc3339().chars().take(10).collect(),
            }),
        };
        Ok(me)
    }

    fn active(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.stem))
    }

    fn rotate(&self) -> io::Result<()> {
        let mut a = lock(&self.inner);
        self.rotate_locked(&mut a)
    }

    fn rotate_locked(&self, a: &mut Active) -> io::Result<()> {
        let _ = a.file.flush();
        let path = self.active();
        // Renamed only while the path is still the file this process writes: after
        // logrotate moved it, the path is gone or another file.
        if same_file(&path, &a.file) {
            let stamp = now_rfc3339()
                .replace(':', "-")
                .trim_end_matches('Z')
                .to_string();
            let mut target = self.dir.join(format!("{}-{stamp}.log", self.stem));
            let mut n = 1;
            while target.exists() {
                target = self.dir.join(format!("{}-{stamp}.{n}.log", self.stem));
                n += 1;
            }
            std::fs::rename(&path, &target)?;
        }
        a.file = append(&path)?;
        a.day = now_rfc3339().chars().take(10).collect();
        self.prune();
        Ok(())
    }

    /// Keeps the newest [`KEEP_ROTATED`] rotated files (their names sort by time).
    fn prune(&self) {
        let prefix = format!("{}-", self.stem);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut rotated: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".log"))
            })
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(KEEP_ROTATED);
        for old in &rotated[..excess] {
            let _ = std::fs::remove_file(old);
        }
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(unix)]
fn same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(path: &Path, _file: &File) -> bool {
    path.exists()
}

/// What the logging thread writes through.
struct FileWriter(Arc<LogFile>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut a = lock(&self.0.inner);
        let today: String = now_rfc3339().chars().take(10).collect();
        if today != a.day {
            // A failed daily rotation must not lose the line: keep writing the old file.
            let _ = self.0.rotate_locked(&mut a);
        }
        a.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.0.inner).file.flush()
    }
}

/// mongosync's line: `{"level":"info","mongosyncID":…,"pid":…,"time":…,"message":…,<fields>}`.
struct MongosyncFormat {
    id: String,
    pid: u32,
}

impl<S, N> FormatEvent<S, N> for MongosyncFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        if !self.id.is_empty() {
            line.insert("mongosyncID".into(), Value::String(self.id.clone()));
        }
        line.insert("pid".into(), Value::from(self.pid));
        line.insert("time".into(), Value::String(now_rfc3339()));
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let message = fields
            .0
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        line.insert("message".into(), message);
        line.insert(
            "componentName".into(),
            Value::String(event.metadata().target().to_string()),
        );
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values, long strings truncated as mongosync does.
struct Fields(Map<String, Value>);

fn truncated(s: String) -> Value {
    if s.chars().count() <= MAX_FIELD_CHARS {
        return Value::String(s);
    }
    let mut t: String = s.chars().take(MAX_FIELD_CHARS).collect();
    t.push_str("...");
    Value::String(t)
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), truncated(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), truncated(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_renames_the_active_file_or_reopens_after_logrotate_moved_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path(), "mongosync").unwrap();
        let mut w = FileWriter(Arc::new(log));
        w.write_all(b"first\n").unwrap();
        w.0.rotate().unwrap();
        w.write_all(b"second\n").unwrap();
        w.flush().unwrap();
        let active = dir.path().join("mongosync.log");
        assert_eq!(std::fs::read_to_string(&active).unwrap(), "second\n");
        let rotated: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("mongosync-"))
            .collect();
        assert_eq!(rotated.len(), 1, "{rotated:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&rotated[0])).unwrap(),
            "first\n"
        );
        // logrotate moved the file away, then sent SIGUSR1: a new file, nothing renamed.
        std::fs::rename(&active, dir.path().join("moved-by-logrotate")).unwrap();
        w.0.rotate().unwrap();
        w.write_all(b"third\n").unwrap();
        w.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&active).unwrap(), "third\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved-by-logrotate")).unwrap(),
            "second\n"
        );
    }

    #[test]
    fn only_the_newest_rotated_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path(), "clustersync").unwrap();
        for i in 0..(KEEP_ROTATED + 3) {
            std::fs::write(
                dir.path()
                    .join(format!("clustersync-2026-01-{:02}T00-00-00.000.log", i + 1)),
                "x",
            )
            .unwrap();
        }
        log.prune();
        let left = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .starts_with("clustersync-")
            })
            .count();
        assert_eq!(left, KEEP_ROTATED);
        assert!(!dir
            .path()
            .join("clustersync-2026-01-01T00-00-00.000.log")
            .exists());
    }

    #[test]
    fn times_have_a_fixed_width() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-12-02T16:05:27.350Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    }

    #[test]
    fn long_values_are_truncated_as_mongosync_does() {
        let Value::String(s) = truncated("y".repeat(2000)) else {
            panic!()
        };
        assert_eq!(s.chars().count(), MAX_FIELD_CHARS + 3);
    }
}
