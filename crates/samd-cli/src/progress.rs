//! A progress line on stderr for long runs (`bench`, `corpus build`).
//!
//! On a terminal it redraws one line in place; otherwise (CI logs, pipes) it prints a
//! line at every tenth of the work, so that logs stay short.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Progress over a known number of items.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    total: usize,
    done: usize,
    started: Instant,
    terminal: bool,
    last_tenth: usize,
}

impl Progress {
    /// Starts counting `total` items of work.
    pub fn new(label: &'static str, total: usize) -> Self {
        Self {
            label,
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    /// Marks one more item done; `detail` follows the count (tokens, speed).
    pub fn tick(&mut self, detail: &str) {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = elapsed / self.done as f64 * (self.total - self.done.min(self.total)) as f64;
        let width = 30;
        let filled = width * self.done.min(self.total) / self.total;
        let line = format!(
            "{} [{}{}] {}/{} {detail} (ETA {:.0} s)",
            self.label,
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total,
            eta
        );
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}\x1b[K");
            if self.done >= self.total {
                let _ = writeln!(err);
            }
        } else {
            let tenth = 10 * self.done / self.total;
            if tenth > self.last_tenth || self.done == 1 {
                self.last_tenth = tenth;
                let _ = writeln!(err, "{line}");
            }
        }
    }
}
