//! One updating progress line on stderr, for the long commands (`plan`, `verify`): shown only
//! when stderr is a terminal, so that piped or logged output never holds carriage returns,
//! and cleared at the end so that the report starts on a clean line.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const EVERY: Duration = Duration::from_millis(100);

pub(super) struct Progress {
    on: bool,
    /// When the line was last drawn (`None`: never, or cleared).
    drawn: Mutex<Option<Instant>>,
}

impl Progress {
    /// A line on stderr if stderr is a terminal; otherwise nothing is ever written.
    pub(super) fn on_terminal() -> Self {
        Self {
            on: std::io::stderr().is_terminal(),
            drawn: Mutex::new(None),
        }
    }

    /// Shows `line` in place of the previous one (at most every [`EVERY`]).
    pub(super) fn show(&self, line: &str) {
        if !self.on {
            return;
        }
        let mut drawn = self.drawn.lock().unwrap_or_else(|p| p.into_inner());
        if drawn.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        *drawn = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// Removes the line.
    pub(super) fn clear(&self) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|p| p.into_inner());
        if self.on && drawn.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}
