//! Rates measured over a recent window, and the ETAs drawn from them. Pure: the caller passes
//! the clock, so every rule is unit-tested without waiting.
//!
//! An ETA must be honest. It comes from what was measured over the last minute, not from the
//! average since the start (a copy that slowed down, because the destination did, would keep
//! promising the earlier pace), and it is absent until there is enough signal: a window of at
//! least [`MIN_SPAN`] in which the count moved.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back a rate looks.
pub const SPAN: Duration = Duration::from_secs(60);
/// No rate until the samples span this long: the first seconds of a copy (opening cursors,
/// creating collections) say little about its pace.
pub const MIN_SPAN: Duration = Duration::from_secs(10);

/// No rate until the count has moved this many times in the window.
pub const MIN_MOVES: usize = 3;

/// Samples of a growing count, over the last [`SPAN`].
#[derive(Debug, Clone, Default)]
pub struct RateWindow {
    samples: VecDeque<(Instant, i64)>,
}

impl RateWindow {
    /// Records `value` at `at`. A value below the last one (a restart counted from a
    /// checkpoint) starts the window over.
    pub fn sample(&mut self, at: Instant, value: i64) {
        if self
            .samples
            .back()
            .is_some_and(|&(t, v)| value < v || at < t)
        {
            self.samples.clear();
        }
        self.samples.push_back((at, value));
        // Keep one sample at or beyond the span, so the window covers all of it.
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= SPAN {
            self.samples.pop_front();
        }
    }

    /// Whether nothing was sampled since the start or the last [`RateWindow::clear`].
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets every sample (the count stopped moving for a reason: a pause, another phase).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Units per second over the window, once it spans [`MIN_SPAN`] and the count moved.
    #[cfg(test)]
    pub fn per_second(&self) -> Option<f64> {
        let &(t1, v1) = self.samples.back()?;
        self.per_second_at(t1, v1)
    }

    /// The same, with the count read now as the window's end: between samples a lump of
    /// work may have landed, and the rate must not lag behind the count it divides.
    pub fn per_second_at(&self, now: Instant, value: i64) -> Option<f64> {
        let &(t0, v0) = self.samples.front()?;
        let dt = now.checked_duration_since(t0)?;
        // Work lands in lumps (a batch at a time, several in flight): one or two lumps say
        // more about the batch size than about the pace.
        let moves = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter(|(a, b)| b.1 > a.1)
            .count()
            + usize::from(self.samples.back().is_some_and(|b| value > b.1));
        (dt >= MIN_SPAN && value > v0 && moves >= MIN_MOVES)
            .then(|| (value - v0) as f64 / dt.as_secs_f64())
    }
}

/// Seconds to do `remaining` at `per_second`, rounded up; `None` without a rate.
pub fn eta_secs(remaining: i64, per_second: Option<f64>) -> Option<i64> {
    let rate = per_second.filter(|r| *r > 0.0 && r.is_finite())?;
    Some((remaining.max(0) as f64 / rate).ceil() as i64)
}

/// The average rate since `since`, once `min` has passed and something was done: one
/// namespace's pace (it has no window of its own; most are copied in seconds).
pub fn since(since: Instant, now: Instant, done: i64, min: Duration) -> Option<f64> {
    let dt = now.checked_duration_since(since)?;
    (dt >= min && done > 0).then(|| done as f64 / dt.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn no_rate_until_the_window_spans_ten_seconds_and_the_count_moved() {
        let t0 = Instant::now();
        let mut w = RateWindow::default();
        assert_eq!(w.per_second(), None);
        w.sample(t0, 0);
        w.sample(at(t0, 4), 400);
        assert_eq!(w.per_second(), None, "4 s is not enough signal");
        w.sample(at(t0, 7), 400);
        w.sample(at(t0, 10), 1000);
        assert_eq!(w.per_second(), None, "two lumps are not enough signal");
        w.sample(at(t0, 10), 1000);
        assert_eq!(w.per_second_at(at(t0, 10), 1000), None);
        w.sample(at(t0, 12), 1200);
        assert_eq!(w.per_second(), Some(100.0));
        // Read between samples, the count landed since counts too.
        assert_eq!(w.per_second_at(at(t0, 13), 2600), Some(200.0));
        let mut still = RateWindow::default();
        still.sample(t0, 50);
        still.sample(at(t0, 30), 50);
        assert_eq!(
            still.per_second(),
            None,
            "a count that did not move has no rate"
        );
    }

    #[test]
    fn the_rate_follows_the_last_minute_not_the_whole_run() {
        let t0 = Instant::now();
        let mut w = RateWindow::default();
        // Two minutes at 1,000/s, then the destination slows to 100/s.
        let mut v = 0;
        for s in (0..=120).step_by(2) {
            w.sample(at(t0, s), v);
            v += 2000;
        }
        v -= 2000;
        assert!((w.per_second().unwrap() - 1000.0).abs() < 1.0);
        for s in (122..=240).step_by(2) {
            v += 200;
            w.sample(at(t0, s), v);
        }
        let r = w.per_second().unwrap();
        assert!((r - 100.0).abs() < 1.0, "{r}");
        assert_eq!(eta_secs(1000, Some(r)), Some(10));
    }

    #[test]
    fn a_count_that_went_back_starts_over() {
        let t0 = Instant::now();
        let mut w = RateWindow::default();
        w.sample(t0, 5000);
        w.sample(at(t0, 20), 9000);
        w.sample(at(t0, 22), 100);
        assert_eq!(w.per_second(), None);
    }

    #[test]
    fn etas_and_words() {
        assert_eq!(eta_secs(10, None), None);
        assert_eq!(eta_secs(10, Some(0.0)), None);
        assert_eq!(eta_secs(-5, Some(2.0)), Some(0));
        assert_eq!(eta_secs(7, Some(2.0)), Some(4));
        let t0 = Instant::now();
        assert_eq!(since(t0, at(t0, 2), 100, Duration::from_secs(5)), None);
        assert_eq!(
            since(t0, at(t0, 5), 100, Duration::from_secs(5)),
            Some(20.0)
        );
    }
}
