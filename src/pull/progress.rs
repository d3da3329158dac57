//! What a pull tells the person or the journal watching it, on stderr.
//!
//! On a terminal: one line redrawn in place, applications fetched of `TotalResults` with a
//! bar, the rate and the time left. Anywhere else (systemd's journal, a pipe, a file): a few
//! plain log lines, at the start, at each quarter and when the copy starts over, so the
//! journal of a timer that runs twice a day stays short. Written by hand: a bar is twenty
//! lines, and a crate for it would bring a terminal library along.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    mode: Mode,
    started: Instant,
    /// The last quarter logged in `Lines` mode.
    quarter: u64,
    /// Something is drawn on the current terminal line.
    drawn: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bar,
    Lines,
    Quiet,
}

impl Progress {
    /// A bar when stderr is a terminal (and not the journal), else log lines; `quiet`: nothing.
    pub fn new(quiet: bool) -> Self {
        let terminal =
            std::io::stderr().is_terminal() && std::env::var_os("JOURNAL_STREAM").is_none();
        let mode = match (quiet, terminal) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Bar,
            (false, false) => Mode::Lines,
        };
        Self { mode, started: Instant::now(), quarter: 0, drawn: false }
    }

    pub fn start(&mut self, url: &str) {
        self.line(&format!("pulling from {url}"));
    }

    /// `done` applications of `total` are in.
    pub fn fetched(&mut self, done: u64, total: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => {
                let quarter = (done * 4).checked_div(total).unwrap_or(4);
                if quarter > self.quarter || done == total {
                    self.quarter = quarter.max(self.quarter);
                    log::info!("pull: {done} of {total} applications ({rate:.0}/s)");
                }
            }
            Mode::Bar => {
                const WIDTH: u64 = 30;
                let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH);
                let eta = if rate > 0.0 && total > done {
                    format!("{:.0} s", (total - done) as f64 / rate)
                } else {
                    "0 s".to_owned()
                };
                let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '.' }).collect();
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2Kapplications [{bar}] {done}/{total}  {rate:.0}/s  ETA {eta}"
                );
                let _ = err.flush();
                self.drawn = true;
            }
        }
    }

    pub fn restart(&mut self, reason: &str, round: u32, rounds: u32) {
        self.quarter = 0;
        self.line(&format!(
            "the upstream moved ({reason}); starting over, copy {round} of {rounds}"
        ));
    }

    /// A message on a line of its own (after the bar, if one is drawn).
    pub fn line(&mut self, text: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => log::info!("pull: {text}"),
            Mode::Bar => {
                self.finish();
                let _ = writeln!(std::io::stderr().lock(), "aims-api: {text}");
            }
        }
    }

    /// Ends the bar's line, so what follows starts on a new one.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr().lock());
            self.drawn = false;
        }
    }
}
