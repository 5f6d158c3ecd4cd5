//! The progress line of long admin jobs: on a terminal only, one line redrawn in place, with
//! messages that must stay (failures) printed above it.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub(super) struct Progress {
    on_terminal: bool,
    started: Instant,
}

impl Progress {
    pub fn start() -> Progress {
        Progress {
            on_terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    /// Ends the progress line; returns the seconds since the start.
    pub fn finish(&self) -> f64 {
        if self.on_terminal {
            eprintln!();
        }
        self.started.elapsed().as_secs_f64()
    }
}

/// Notes above the line; the line itself only on a terminal.
impl crate::jobs::Progress for Progress {
    fn note(&self, line: &str) {
        if self.on_terminal {
            eprint!("\r\x1b[K");
        }
        eprintln!("{line}");
    }

    /// Redraws the progress line: `[done/total] counts MB/s`.
    fn update(&self, done: u64, total: u64, counts: &str, bytes: u64) {
        if !self.on_terminal {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r\x1b[K[{done}/{total}] {counts} {:.1} MB/s",
            bytes as f64 / secs / 1e6
        );
        let _ = std::io::stderr().flush();
    }
}
