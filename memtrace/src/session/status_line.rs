//! The status line `record` keeps on stderr while it records, when stderr is a terminal:
//! elapsed time, events per second, outstanding bytes, lost events. Nothing at all when
//! stderr is not a terminal (a log file, a pipe), so that what is saved stays clean.
use std::{
    io::{self, IsTerminal, Write},
    time::{Duration, Instant},
};

/// How often the line is redrawn.
pub const REFRESH: Duration = Duration::from_secs(1);

pub struct StatusLine {
    enabled: bool,
    started: Instant,
    last: (Instant, u64),
    shown: bool,
}

impl StatusLine {
    pub fn new(started: Instant) -> Self {
        Self { enabled: io::stderr().is_terminal(), started, last: (started, 0), shown: false }
    }

    /// Redraws the line; `events` is the count of events taken in since the start.
    pub fn show(&mut self, events: u64, outstanding_bytes: u64, lost: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let (then, events_then) = self.last;
        let rate = (events - events_then) as f64 / now.duration_since(then).as_secs_f64().max(1e-3);
        self.last = (now, events);
        let line = format!(
            "memtrace: {:.0} s, {:.0} events/s, {outstanding_bytes} bytes outstanding, {lost} events lost",
            now.duration_since(self.started).as_secs_f64(),
            rate,
        );
        // \r and "erase line": the line is rewritten in place.
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
        self.shown = true;
    }

    /// Erases the line before anything else is printed.
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}
