//! A progress line on the terminal for long fetches, and a log writer that keeps log lines
//! from being garbled by it.
//!
//! The line is drawn on stderr only when stderr is a terminal, and only once a download has
//! run for half a second (short fetches stay quiet). It is redrawn at most ten times a second.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::poll::Progress;

/// Whether the progress line is currently drawn (so log output clears it first).
static DRAWN: Mutex<bool> = Mutex::new(false);

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

fn clear_line() {
    let mut drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner());
    if *drawn {
        let _ = std::io::stderr().write_all(b"\r\x1b[K");
        *drawn = false;
    }
}

/// Clears the progress line; used around printing summary lines.
pub fn clear() {
    clear_line();
}

/// A `tracing` writer to stderr that clears the progress line before each log line.
#[derive(Debug, Clone, Copy)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = std::io::Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        clear_line();
        std::io::stderr()
    }
}

#[derive(Debug, Default)]
struct State {
    messages_total: usize,
    messages_done: usize,
    bytes_total: u64,
    bytes_done: u64,
    accounts: Vec<String>,
    started: Option<Instant>,
    last_draw: Option<Instant>,
}

/// Progress shown on the terminal.
#[derive(Debug)]
pub struct TerminalProgress {
    enabled: bool,
    /// Whether to say when waiting for another popsync (off with --quiet).
    announce: bool,
    state: Mutex<State>,
}

impl TerminalProgress {
    /// `announce`: say when waiting; `bar`: draw the progress line (if stderr is a terminal).
    pub fn new(announce: bool, bar: bool) -> Self {
        Self {
            announce,
            enabled: bar && stderr_is_terminal(),
            state: Mutex::new(State::default()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        if !self.enabled {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        let now = Instant::now();
        let started = *s.started.get_or_insert(now);
        if now - started < Duration::from_millis(500) {
            return;
        }
        if s.last_draw
            .is_some_and(|t| now - t < Duration::from_millis(100))
            && s.messages_done < s.messages_total
        {
            return;
        }
        s.last_draw = Some(now);
        let secs = (now - started).as_secs_f64().max(0.001);
        let who = match s.accounts.as_slice() {
            [one] => one.clone(),
            many => format!("{} accounts", many.len()),
        };
        let line = format!(
            "fetching {who}: {}/{} messages, {} of {}, {}/s",
            s.messages_done,
            s.messages_total,
            human_bytes(s.bytes_done),
            human_bytes(s.bytes_total.max(s.bytes_done)),
            human_bytes((s.bytes_done as f64 / secs) as u64)
        );
        let mut drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write!(std::io::stderr(), "\r\x1b[K{line}");
        *drawn = true;
    }
}

impl Progress for TerminalProgress {
    fn waiting_for_lock(&self, account: &str, holder: Option<&str>) {
        if !self.announce {
            return;
        }
        clear_line();
        let who = holder
            .map(|h| format!(" (process {h})"))
            .unwrap_or_default();
        eprintln!(
            "popsync: {account}: another popsync is fetching this account{who}; waiting for it to finish"
        );
    }

    fn downloading(&self, account: &str, messages: usize, bytes: u64) {
        self.update(|s| {
            s.messages_total += messages;
            s.bytes_total = s.bytes_total.saturating_add(bytes);
            if !s.accounts.iter().any(|a| a == account) {
                s.accounts.push(account.to_owned());
            }
        });
    }

    fn bytes(&self, _account: &str, n: u64) {
        self.update(|s| s.bytes_done += n);
    }

    fn message(&self, _account: &str) {
        self.update(|s| s.messages_done += 1);
    }
}

/// "4.1 MB", "812 KB", "120 B" (decimal units, as mail clients show sizes).
pub fn human_bytes(n: u64) -> String {
    crate::notify::human_size(n)
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn byte_counts_read_like_a_mail_client() {
        assert_eq!(human_bytes(120), "120 B");
        assert_eq!(human_bytes(4_100_000), "4.1 MB");
        assert_eq!(human_bytes(812_000), "812 KB");
        assert_eq!(human_bytes(52_428_800), "52 MB");
    }
}
