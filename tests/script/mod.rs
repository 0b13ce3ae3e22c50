//! An in-process scripted POP3 server for fault tests.
//!
//! [`ScriptServer::start`] listens on 127.0.0.1 (a free port) and serves one script per
//! accepted connection, in order, on a thread of its own with blocking I/O, so it depends on
//! nothing in the client's async runtime. A script is a list of [`Step`]s: bytes to send, and
//! lines the client must send, exactly.
//!
//! Every line the client sends is checked. These are recorded as failures:
//!
//! - a line that differs from the one expected, or is not terminated by CRLF;
//! - a line sent where the script expects none: during a [`Step::Quiet`], after an
//!   [`Step::ExpectAlone`], before a [`Step::Close`], or after the script's last step and
//!   before the client closes the connection;
//! - no line (or no close) within [`READ_TIMEOUT`], so a hung client fails the test instead
//!   of hanging it;
//! - a connection the scripts do not account for, and a script whose connection never came.
//!
//! After the first failure in a session the server closes that connection. The test then
//! calls [`ScriptServer::finish`], which stops the server and panics with every failure, the
//! step it happened at and the transcript of its session.

#![allow(dead_code)]

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest the server waits for a line from the client, or for it to close the
/// connection after the script has ended.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the client must stay silent after an [`Step::ExpectAlone`] line.
pub const ALONE_FOR: Duration = Duration::from_millis(30);

/// Longest client line accepted (the client's longest is a SASL response of a few hundred
/// bytes).
const MAX_CLIENT_LINE: usize = 64 * 1024;

/// One step of a session's script.
#[derive(Clone)]
pub enum Step {
    /// Send these bytes as they are.
    Send(Vec<u8>),
    /// Answer a RETR: `+OK`, the message dot-stuffed, and the terminating `.` line.
    SendMessage(Vec<u8>),
    /// Answer a RETR with `+OK` and only the first `cut` bytes of the dot-stuffed message
    /// (a body cut short; follow it with [`Step::Close`] or [`Step::Stall`]).
    SendPartial { message: Vec<u8>, cut: usize },
    /// Read the next line the client sent; it must be exactly this (then CRLF).
    Expect(String),
    /// Like [`Step::Expect`], then the client must send nothing more for [`ALONE_FOR`]: it
    /// waits for the answer instead of pipelining the next command.
    ExpectAlone(String),
    /// The client must send nothing for this long.
    Quiet(Duration),
    /// Send nothing for this long but keep the connection open. Ends early if the client
    /// closes the connection; whatever it sends meanwhile is kept for the next step.
    Stall(Duration),
    /// Close the connection now (after checking the client sent nothing unexpected). Ends the
    /// session's script.
    Close,
    /// Read the start of a TLS handshake (the client's ClientHello, after STLS) and close the
    /// connection: a handshake that fails. Ends the session's script.
    RefuseTls,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(bytes) => write!(f, "send {}", summary(bytes)),
            Self::SendMessage(m) => write!(f, "send a message of {} bytes", m.len()),
            Self::SendPartial { message, cut } => write!(
                f,
                "send the first {cut} bytes of a message of {} bytes",
                message.len()
            ),
            Self::Expect(line) => write!(f, "expect {line:?}"),
            Self::ExpectAlone(line) => write!(f, "expect {line:?} and nothing after it"),
            Self::Quiet(d) => write!(f, "expect silence for {d:?}"),
            Self::Stall(d) => write!(f, "stall for {d:?}"),
            Self::Close => f.write_str("close the connection"),
            Self::RefuseTls => f.write_str("expect a TLS handshake and close the connection"),
        }
    }
}

/// Sends `line` and CRLF.
pub fn send(line: &str) -> Step {
    let mut bytes = line.as_bytes().to_vec();
    bytes.extend_from_slice(b"\r\n");
    Step::Send(bytes)
}

/// Sends raw bytes.
pub fn raw(bytes: impl Into<Vec<u8>>) -> Step {
    Step::Send(bytes.into())
}

/// Expects the client to send exactly `line`.
pub fn expect(line: impl Into<String>) -> Step {
    Step::Expect(line.into())
}

/// Expects the client to send exactly `line` and then wait.
pub fn expect_alone(line: impl Into<String>) -> Step {
    Step::ExpectAlone(line.into())
}

/// Answers a RETR with a whole message (CRLF line endings, as a server sends it).
pub fn message(message: &[u8]) -> Step {
    Step::SendMessage(message.to_vec())
}

/// Answers a RETR with `+OK` and the first `cut` bytes of the stuffed message.
pub fn partial(message: &[u8], cut: usize) -> Step {
    Step::SendPartial {
        message: message.to_vec(),
        cut,
    }
}

/// `+OK` and a multi-line listing (CAPA, UIDL, LIST), dot-stuffed and terminated.
pub fn listing<L: AsRef<[u8]>>(lines: &[L]) -> Step {
    let mut bytes = b"+OK\r\n".to_vec();
    for line in lines {
        let line = line.as_ref();
        if line.first() == Some(&b'.') {
            bytes.push(b'.');
        }
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b".\r\n");
    Step::Send(bytes)
}

pub fn stall(d: Duration) -> Step {
    Step::Stall(d)
}

pub fn quiet(d: Duration) -> Step {
    Step::Quiet(d)
}

pub fn close() -> Step {
    Step::Close
}

pub fn refuse_tls() -> Step {
    Step::RefuseTls
}

/// The same script with every [`Step::Expect`] made an [`Step::ExpectAlone`]: the client must
/// wait for each answer before it sends its next command.
pub fn lockstep(steps: Vec<Step>) -> Vec<Step> {
    steps
        .into_iter()
        .map(|s| match s {
            Step::Expect(line) => Step::ExpectAlone(line),
            other => other,
        })
        .collect()
}

/// The bytes a RETR answer with `message` consists of.
pub fn retr_answer(message: &[u8]) -> Vec<u8> {
    let mut bytes = format!("+OK {} octets\r\n", message.len()).into_bytes();
    bytes.extend_from_slice(&popsync::pop3::codec::stuff(message));
    bytes
}

/// A scripted server running on its own thread.
pub struct ScriptServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Outcome>>,
}

impl fmt::Debug for ScriptServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// What the client sent, per session, line by line (without CRLF).
pub type ClientLines = Vec<Vec<String>>;

impl ScriptServer {
    /// Starts serving `sessions`: the first script to the first connection, and so on.
    pub fn start(sessions: Vec<Vec<Step>>) -> Self {
        Self::start_with(|_| sessions)
    }

    /// Like [`start`](Self::start), for scripts that need the server's port (OAUTHBEARER
    /// names it in its response).
    pub fn start_with(script: impl FnOnce(u16) -> Vec<Vec<Step>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let sessions = script(port);
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("script-server-{port}"))
            .spawn(move || serve(&listener, &sessions, &thread_stop))
            .expect("spawn the script server");
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (the client must be done) and returns what the client sent, or a
    /// description of everything that went differently from the scripts.
    pub fn try_finish(mut self) -> Result<ClientLines, String> {
        self.join()
    }

    /// Stops the server (the client must be done) and panics if anything went differently
    /// from the scripts. Returns what the client sent.
    pub fn finish(self) -> ClientLines {
        self.try_finish()
            .unwrap_or_else(|report| panic!("{report}"))
    }

    fn join(&mut self) -> Result<ClientLines, String> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("finished once");
        let outcome = match thread.join() {
            Ok(o) => o,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if outcome.failures.is_empty() {
            Ok(outcome
                .sessions
                .into_iter()
                .map(|s| s.client_lines)
                .collect())
        } else {
            Err(outcome.report())
        }
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        if std::thread::panicking() {
            // The test already failed; let the thread end on its own.
            self.stop.store(true, Ordering::SeqCst);
            return;
        }
        if let Err(report) = self.join() {
            panic!("{report}");
        }
    }
}

/// Everything that happened, for the report.
#[derive(Debug, Default)]
struct Outcome {
    sessions: Vec<SessionLog>,
    failures: Vec<Failure>,
}

#[derive(Debug, Default)]
struct SessionLog {
    transcript: Vec<String>,
    client_lines: Vec<String>,
}

#[derive(Debug)]
struct Failure {
    /// 1-based session number.
    session: usize,
    /// 1-based step number and the step, if a step was running.
    step: Option<(usize, String)>,
    what: String,
}

impl Outcome {
    fn report(&self) -> String {
        let mut out = format!(
            "the scripted POP3 server saw {} problem(s):\n",
            self.failures.len()
        );
        for f in &self.failures {
            match &f.step {
                Some((n, step)) => out.push_str(&format!(
                    "  session {}, step {n} ({step}): {}\n",
                    f.session, f.what
                )),
                None => out.push_str(&format!("  session {}: {}\n", f.session, f.what)),
            }
        }
        let mut shown: Vec<usize> = self.failures.iter().map(|f| f.session).collect();
        shown.dedup();
        for n in shown {
            let Some(log) = self.sessions.get(n - 1) else {
                continue;
            };
            if log.transcript.is_empty() {
                continue;
            }
            const LAST: usize = 60;
            out.push_str(&format!("transcript of session {n}"));
            if log.transcript.len() > LAST {
                out.push_str(&format!(" (last {LAST} entries)"));
            }
            out.push_str(":\n");
            for line in &log.transcript[log.transcript.len().saturating_sub(LAST)..] {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

fn serve(listener: &TcpListener, sessions: &[Vec<Step>], stop: &AtomicBool) -> Outcome {
    let mut outcome = Outcome::default();
    for (i, steps) in sessions.iter().enumerate() {
        let number = i + 1;
        let mut log = SessionLog::default();
        match accept(listener, stop) {
            Some(stream) => {
                let failure = run_session(stream, steps, &mut log);
                if let Some((step, what)) = failure {
                    outcome.failures.push(Failure {
                        session: number,
                        step,
                        what,
                    });
                }
            }
            None => outcome.failures.push(Failure {
                session: number,
                step: None,
                what: format!(
                    "the client never connected (it made {} of {} scripted connections)",
                    i,
                    sessions.len()
                ),
            }),
        }
        outcome.sessions.push(log);
    }
    // Any further connection is one the scripts do not account for.
    let mut extra = sessions.len();
    while let Some(stream) = accept(listener, stop) {
        extra += 1;
        drop(stream);
        outcome.failures.push(Failure {
            session: extra,
            step: None,
            what: format!(
                "an unexpected connection: the scripts describe only {} session(s)",
                sessions.len()
            ),
        });
    }
    outcome
}

/// The next connection, or `None` once the server is told to stop and none is waiting.
fn accept(listener: &TcpListener, stop: &AtomicBool) -> Option<TcpStream> {
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                let _ = stream.set_nodelay(true);
                stream
                    .set_write_timeout(Some(READ_TIMEOUT))
                    .expect("write timeout");
                return Some(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // `stopping` was read before this accept, so any connection made before the
                // stop was asked for has been accepted by now.
                if stopping {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// The step (1-based number and description) a failure happened at, and what went wrong.
type StepFailure = (Option<(usize, String)>, String);

/// Runs one script on one connection. Returns the first failure, after which the script
/// stops and the connection is closed.
fn run_session(stream: TcpStream, steps: &[Step], log: &mut SessionLog) -> Option<StepFailure> {
    let mut peer = Peer {
        stream,
        buf: Vec::new(),
        closed: false,
    };
    for (i, step) in steps.iter().enumerate() {
        let at = Some((i + 1, format!("{step:?}")));
        let result = match step {
            Step::Send(bytes) => {
                peer.send(bytes, log);
                Ok(())
            }
            Step::SendMessage(m) => {
                peer.send(&retr_answer(m), log);
                Ok(())
            }
            Step::SendPartial { message, cut } => {
                let stuffed = popsync::pop3::codec::stuff(message);
                let cut = (*cut).min(stuffed.len());
                let mut bytes = b"+OK\r\n".to_vec();
                bytes.extend_from_slice(&stuffed[..cut]);
                peer.send(&bytes, log);
                Ok(())
            }
            Step::Expect(line) => peer.expect(line, log),
            Step::ExpectAlone(line) => peer
                .expect(line, log)
                .and_then(|()| peer.quiet(ALONE_FOR, log)),
            Step::Quiet(d) => peer.quiet(*d, log),
            Step::Stall(d) => {
                peer.stall(*d, log);
                Ok(())
            }
            Step::Close => {
                let result = peer.close(log);
                return result.err().map(|what| (at, what));
            }
            Step::RefuseTls => {
                let result = peer.refuse_tls(log);
                return result.err().map(|what| (at, what));
            }
        };
        if let Err(what) = result {
            log.transcript
                .push("-- the server closes the connection after this failure".into());
            let _ = peer.stream.shutdown(Shutdown::Both);
            return Some((at, what));
        }
    }
    peer.expect_close(log).err().map(|what| {
        (
            Some((steps.len() + 1, "the end of the script".into())),
            what,
        )
    })
}

/// One connection's read side: a buffer of what the client sent and not yet matched.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

enum Fill {
    Data,
    Closed,
    Timeout,
}

impl Peer {
    /// Reads whatever arrives within `wait` into the buffer.
    fn fill(&mut self, wait: Duration) -> Result<Fill, String> {
        if self.closed {
            return Ok(Fill::Closed);
        }
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    Ok(Fill::Closed)
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(Fill::Data)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(Fill::Timeout)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    self.closed = true;
                    Ok(Fill::Closed)
                }
                Err(e) => Err(format!("reading from the client failed: {e}")),
            };
        }
    }

    /// Takes one complete line (terminator included) from the buffer.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        Some(self.buf.drain(..=end).collect())
    }

    /// The next line from the client, terminator included.
    fn read_line(&mut self, limit: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.take_line() {
                return Ok(line);
            }
            if self.buf.len() > MAX_CLIENT_LINE {
                return Err(format!(
                    "the client sent more than {MAX_CLIENT_LINE} bytes without a line break"
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let pending = if self.buf.is_empty() {
                String::new()
            } else {
                format!(" (after sending {} without CRLF)", printable(&self.buf))
            };
            if left.is_zero() {
                return Err(format!(
                    "timed out after {limit:?} waiting for a line from the client{pending}"
                ));
            }
            match self.fill(left)? {
                Fill::Data | Fill::Timeout => {}
                Fill::Closed => {
                    return Err(format!("the client closed the connection{pending}"));
                }
            }
        }
    }

    fn send(&mut self, bytes: &[u8], log: &mut SessionLog) {
        let result = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
        log.transcript.extend(transcript_lines(bytes));
        if let Err(e) = result {
            // The client is gone; a later step that needs it will say so.
            log.transcript.push(format!("-- sending failed: {e}"));
        }
    }

    fn expect(&mut self, expected: &str, log: &mut SessionLog) -> Result<(), String> {
        let line = self
            .read_line(READ_TIMEOUT)
            .map_err(|e| format!("expected {expected:?}, but {e}"))?;
        let text = line_text(&line);
        log.transcript.push(format!("C: {}", printable(text)));
        log.client_lines
            .push(String::from_utf8_lossy(text).into_owned());
        if !line.ends_with(b"\r\n") {
            return Err(format!(
                "expected {expected:?}, got {} ending in a bare LF instead of CRLF",
                printable(text)
            ));
        }
        if text != expected.as_bytes() {
            return Err(format!("expected {expected:?}, got {}", printable(text)));
        }
        Ok(())
    }

    /// The client must send nothing for `d`.
    fn quiet(&mut self, d: Duration, log: &mut SessionLog) -> Result<(), String> {
        if self.buf.is_empty() {
            match self.fill(d)? {
                Fill::Timeout | Fill::Closed => return Ok(()),
                Fill::Data => {}
            }
        }
        // Give the rest of a line a moment to arrive, for a readable report.
        if !self.buf.contains(&b'\n') {
            let _ = self.fill(Duration::from_millis(50));
        }
        let sent = self.unexpected_lines();
        log.transcript.push(format!("C: {sent}"));
        Err(format!(
            "the client sent {sent} without waiting for the server's answer"
        ))
    }

    fn stall(&mut self, d: Duration, log: &mut SessionLog) {
        let start = Instant::now();
        let deadline = start + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log.transcript
                    .push(format!("-- stalled for {:?}", start.elapsed()));
                return;
            }
            match self.fill(left) {
                Ok(Fill::Data | Fill::Timeout) => {}
                Ok(Fill::Closed) | Err(_) => {
                    log.transcript.push(format!(
                        "-- stalled for {:?}, until the client closed the connection",
                        start.elapsed()
                    ));
                    return;
                }
            }
        }
    }

    fn close(&mut self, log: &mut SessionLog) -> Result<(), String> {
        // Collect what has arrived, without waiting: it must have been expected.
        let _ = self.stream.set_nonblocking(true);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        log.transcript
            .push("-- the server closes the connection".into());
        if self.buf.is_empty() {
            return Ok(());
        }
        let sent = self.unexpected_lines();
        log.transcript.push(format!("C: {sent}"));
        Err(format!(
            "before the server closed the connection, the client sent {sent}, which the script does not expect"
        ))
    }

    fn refuse_tls(&mut self, log: &mut SessionLog) -> Result<(), String> {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.buf.len() < 3 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "timed out after {READ_TIMEOUT:?} waiting for a TLS handshake"
                ));
            }
            if let Fill::Closed = self.fill(left)? {
                return Err(format!(
                    "the client closed the connection instead of starting TLS{}",
                    if self.buf.is_empty() {
                        String::new()
                    } else {
                        format!(" (after sending {})", printable(&self.buf))
                    }
                ));
            }
        }
        // A TLS record: content type 22 (handshake), protocol version 3.x.
        if !self.buf.starts_with(&[0x16, 0x03]) {
            let sent = self.unexpected_lines();
            log.transcript.push(format!("C: {sent}"));
            return Err(format!("expected a TLS handshake, got {sent}"));
        }
        log.transcript.push(format!(
            "C: <a TLS handshake record, {} bytes so far>",
            self.buf.len()
        ));
        self.buf.clear();
        let _ = self.stream.shutdown(Shutdown::Both);
        log.transcript
            .push("-- the server closes the connection instead of completing TLS".into());
        Ok(())
    }

    /// After the last step: the client must close the connection and send nothing more.
    fn expect_close(&mut self, log: &mut SessionLog) -> Result<(), String> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if !self.buf.is_empty() {
                // Collect the rest for the report, briefly.
                let until = Instant::now() + Duration::from_millis(100);
                while !self.closed && Instant::now() < until {
                    if let Ok(Fill::Timeout) | Err(_) = self.fill(Duration::from_millis(20)) {
                        break;
                    }
                }
                let sent = self.unexpected_lines();
                log.transcript.push(format!("C: {sent}"));
                return Err(format!(
                    "after the script's last step the client sent {sent}"
                ));
            }
            if self.closed {
                log.transcript
                    .push("-- the client closed the connection".into());
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the client did not close the connection within {READ_TIMEOUT:?} after the script's last step"
                ));
            }
            self.fill(left)?;
        }
    }

    /// Everything in the buffer, as lines for a report; empties the buffer.
    fn unexpected_lines(&mut self) -> String {
        let mut lines = Vec::new();
        while let Some(line) = self.take_line() {
            lines.push(printable(line_text(&line)));
        }
        if !self.buf.is_empty() {
            lines.push(format!("{} (no line break)", printable(&self.buf)));
            self.buf.clear();
        }
        const SHOWN: usize = 8;
        let mut text = lines
            .iter()
            .take(SHOWN)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if lines.len() > SHOWN {
            text.push_str(&format!(" and {} more line(s)", lines.len() - SHOWN));
        }
        text
    }
}

/// A line without its CRLF (or bare LF).
fn line_text(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Bytes as a quoted, escaped string, shortened if long.
fn printable(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let shown = &bytes[..bytes.len().min(MAX)];
    let mut s = format!("{:?}", String::from_utf8_lossy(shown));
    if bytes.len() > MAX {
        s.push_str(&format!(" ... ({} bytes)", bytes.len()));
    }
    s
}

/// A send as transcript entries: its first few lines, then its size if there is more.
fn transcript_lines(bytes: &[u8]) -> Vec<String> {
    const SHOWN: usize = 6;
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() && out.len() < SHOWN {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        out.push(format!("S: {}", printable(line_text(&rest[..end]))));
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        out.push(format!("S: ... ({} bytes in all)", bytes.len()));
    }
    out
}

/// What a send consisted of, for a step's description: its first line and its size.
fn summary(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes, |end| &bytes[..=end]);
    if first.len() == bytes.len() {
        printable(line_text(bytes))
    } else {
        format!(
            "{} and more ({} bytes in all)",
            printable(line_text(first)),
            bytes.len()
        )
    }
}
