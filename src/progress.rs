//! Progress of long commands: a bar on a terminal; when stderr is a file or a CI log, a line
//! every [`LINE_EVERY`] (done/total, percent, ETA) so a redirected run still shows it is alive.
//! The same calls drive both (the subset of indicatif's API the commands use).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a line is printed when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: Option<Arc<Mutex<Lines>>>,
}

struct Lines {
    prefix: String,
    message: String,
    pos: u64,
    len: u64,
    phase_start: Instant,
    last: Instant,
}

impl Progress {
    /// A bar on a terminal, else periodic lines starting with `prefix` (the command name).
    pub fn new(prefix: &str, unit: &str) -> Progress {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            let pb = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
            let template = format!("{{msg}} {{bar:30}} {{pos}}/{{len}} {unit}  eta {{eta}}");
            if let Ok(st) = ProgressStyle::with_template(&template) {
                pb.set_style(st);
            }
            return Progress { bar: Some(pb), lines: None };
        }
        let now = Instant::now();
        let lines = Lines {
            prefix: prefix.to_string(),
            message: String::new(),
            pos: 0,
            len: 0,
            phase_start: now,
            last: now,
        };
        Progress { bar: None, lines: Some(Arc::new(Mutex::new(lines))) }
    }

    /// Shows nothing (`--json` output, tests).
    pub fn hidden() -> Progress {
        Progress { bar: None, lines: None }
    }

    fn with_lines(&self, f: impl FnOnce(&mut Lines)) {
        if let Some(l) = &self.lines {
            f(&mut l.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Starts a new phase of `len` steps described by `message`.
    pub fn start(&self, len: u64, message: impl Into<String>) {
        let message = message.into();
        if let Some(b) = &self.bar {
            b.reset();
            b.set_length(len);
            b.set_message(message.clone());
        }
        self.with_lines(|l| {
            l.message = message;
            l.pos = 0;
            l.len = len;
            l.phase_start = Instant::now();
        });
    }

    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        if let Some(b) = &self.bar {
            b.set_message(message.clone());
        }
        self.with_lines(|l| l.message = message);
    }

    /// `n` more steps done; on a non-terminal, a line when [`LINE_EVERY`] has passed.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        self.with_lines(|l| {
            l.pos += n;
            if l.last.elapsed() >= LINE_EVERY {
                l.last = Instant::now();
                eprintln!("{}: {}", l.prefix, l.line());
            }
        });
    }

    /// Runs `f` (which prints) without the bar drawn over its output.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Lines {
    fn line(&self) -> String {
        let mut s = format!("{} {}/{}", self.message, self.pos, self.len);
        if self.len > 0 {
            s += &format!(" ({:.0} %)", 100.0 * self.pos as f64 / self.len as f64);
        }
        let elapsed = self.phase_start.elapsed().as_secs_f64();
        if self.pos > 0 && self.len > self.pos {
            let eta = elapsed / self.pos as f64 * (self.len - self.pos) as f64;
            s += &format!(", eta {}", human(eta));
        }
        s
    }
}

/// `1h 02m`, `3m 20s`, `12s`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}
