//! One IMAP connection: a byte stream, a fixed read buffer, and the reading of responses
//! with their literals (RFC 3501 section 7, RFC 9051 section 7).
//!
//! A response is read as its text, with each literal the server sends either kept in the
//! text (a short one, as the mailbox name of a STATUS answer) or streamed to a
//! [`LiteralSink`] a piece at a time (a message body of a FETCH answer), so memory stays
//! bounded whatever the server sends. Every read and write is bounded by the response
//! timeout (an idle limit). At TRACE level (target `popsync::imap::wire`) the connection
//! logs a transcript: commands as the caller shows them (secrets left out), responses made
//! printable, literals and message data as byte counts.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::trace;

use crate::pop3::connection::Stream;
use crate::pop3::error::{ErrorKind, Phase};

use super::Error;

pub(crate) const WIRE: &str = "popsync::imap::wire";
const READ_BUFFER: usize = 64 * 1024;
/// The longest line of a response (between literals).
const MAX_LINE: usize = 64 * 1024;
/// Literals up to this size that no sink wants are kept in the response's text...
const MAX_TEXT_LITERAL: u64 = 16 * 1024;
/// ...as long as the whole text stays within this.
const MAX_RESPONSE: usize = 256 * 1024;
/// Writes are gathered up to this much before they go out.
const WRITE_BUFFER: usize = 128 * 1024;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    No,
    Bad,
}

/// One response from the server.
#[derive(Debug)]
pub enum Response {
    /// `* ...`: the text after `* `.
    Untagged(Vec<u8>),
    /// `+ ...`: the server waits for more of a command.
    Continue(String),
    /// `TAG OK|NO|BAD [CODE] text`.
    Tagged(Tagged),
}

/// The end of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub tag: String,
    pub state: State,
    /// The response code, without brackets (`APPENDUID 3 42`, `OVERQUOTA`).
    pub code: Option<String>,
    pub text: String,
}

impl Tagged {
    /// The code's first word, upper case.
    pub fn code_name(&self) -> Option<String> {
        self.code
            .as_deref()
            .and_then(|c| c.split_whitespace().next())
            .map(str::to_ascii_uppercase)
    }
}

impl std::fmt::Display for Tagged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Ok => "OK",
            State::No => "NO",
            State::Bad => "BAD",
        };
        write!(f, "{state}")?;
        if let Some(code) = &self.code {
            write!(f, " [{code}]")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// Where a literal the server sends can go instead of into the response's text.
pub trait LiteralSink {
    /// Whether it takes the literal of `len` bytes that follows `before` (the response's
    /// text so far).
    fn wants(&mut self, before: &[u8], len: u64) -> bool;
    /// A piece of the literal.
    fn data(&mut self, piece: &[u8]);
    /// The literal ended.
    fn end(&mut self);
}

/// A sink that wants nothing.
#[derive(Debug)]
pub struct NoSink;

impl LiteralSink for NoSink {
    fn wants(&mut self, _: &[u8], _: u64) -> bool {
        false
    }
    fn data(&mut self, _: &[u8]) {}
    fn end(&mut self) {}
}

pub struct Wire {
    stream: Box<dyn Stream>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    timeout: Duration,
    broken: bool,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("buffered", &(self.end - self.start))
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Wire {
    pub fn new(stream: Box<dyn Stream>, timeout: Duration) -> Self {
        Self {
            stream,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::with_capacity(4096),
            timeout,
            broken: false,
        }
    }

    /// The stream, for a TLS upgrade; returns how many bytes the server had sent beyond
    /// its answer (discarded: never read as if they had come over TLS).
    pub fn into_stream(self) -> (Box<dyn Stream>, usize) {
        (self.stream, self.end - self.start)
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the connection unusable (a command left half sent).
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    fn fail(&mut self, kind: ErrorKind) -> Error {
        self.broken = true;
        Error::Transport(kind.into())
    }

    async fn fill(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Transport(ErrorKind::Broken.into()));
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let read = self.stream.read(&mut self.buf[self.end..]);
        match tokio::time::timeout(self.timeout, read).await {
            Err(_) => Err(self.fail(ErrorKind::Timeout {
                phase: Phase::Response,
                after: self.timeout,
            })),
            Ok(Err(e)) => Err(self.fail(ErrorKind::Io(e))),
            Ok(Ok(0)) => Err(self.fail(ErrorKind::Closed)),
            Ok(Ok(n)) => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Appends one line (without its CRLF, or bare LF) to `into`.
    async fn line(&mut self, into: &mut Vec<u8>) -> Result<(), Error> {
        let mut taken = 0usize;
        loop {
            let available = &self.buf[self.start..self.end];
            if let Some(p) = memchr::memchr(b'\n', available) {
                let line = &available[..p];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                into.extend_from_slice(line);
                self.start += p + 1;
                return Ok(());
            }
            taken += available.len();
            if taken > MAX_LINE {
                return Err(self.fail(ErrorKind::LineTooLong { limit: MAX_LINE }));
            }
            into.extend_from_slice(available);
            self.start = self.end;
            self.fill().await?;
        }
    }

    /// Reads `len` bytes of a literal, a piece at a time, into `sink`.
    async fn literal(&mut self, mut len: u64, sink: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        while len > 0 {
            if self.start == self.end {
                self.fill().await?;
            }
            let n = (self.end - self.start).min(usize::try_from(len).unwrap_or(usize::MAX));
            sink(&self.buf[self.start..self.start + n]);
            self.start += n;
            len -= n as u64;
        }
        Ok(())
    }

    /// Reads one whole response, its literals kept in its text or given to `sink`.
    pub async fn response(&mut self, sink: &mut dyn LiteralSink) -> Result<Response, Error> {
        let mut text = Vec::new();
        loop {
            let from = text.len();
            self.line(&mut text).await?;
            let Some((len, marker)) = literal_at_end(&text[from..]) else {
                break;
            };
            if sink.wants(&text[..from + marker], len) {
                trace!(target: WIRE, "S: ({len} bytes of message data)");
                let result = self.literal(len, &mut |piece| sink.data(piece)).await;
                sink.end();
                result?;
            } else if len <= MAX_TEXT_LITERAL && text.len() + len as usize <= MAX_RESPONSE {
                text.extend_from_slice(b"\r\n");
                let mut kept = Vec::with_capacity(len as usize);
                self.literal(len, &mut |piece| kept.extend_from_slice(piece))
                    .await?;
                text.extend_from_slice(&kept);
            } else {
                trace!(target: WIRE, "S: ({len} bytes not wanted, skipped)");
                self.literal(len, &mut |_| {}).await?;
            }
            if text.len() > MAX_RESPONSE {
                return Err(self.fail(ErrorKind::LineTooLong {
                    limit: MAX_RESPONSE,
                }));
            }
        }
        trace!(target: WIRE, "S: {}", printable(&text));
        parse_response(&text).ok_or_else(|| {
            self.broken = true;
            Error::Protocol(format!("unreadable response {:?}", printable(&text)))
        })
    }

    /// Queues bytes to send; they go out once enough are gathered, or at [`Self::flush`].
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.out.extend_from_slice(data);
        if self.out.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Transport(ErrorKind::Broken.into()));
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let write = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        let result = tokio::time::timeout(self.timeout, write).await;
        self.out = out;
        self.out.clear();
        match result {
            Err(_) => Err(self.fail(ErrorKind::Timeout {
                phase: Phase::Send,
                after: self.timeout,
            })),
            Ok(Err(e)) => Err(self.fail(ErrorKind::Io(e))),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Closes the connection's sending side (after LOGOUT), within the timeout.
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

/// The length of the literal a line announces at its end (`{123}`), if it does, and where
/// the announcement starts.
fn literal_at_end(line: &[u8]) -> Option<(u64, usize)> {
    let inner = line.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', inner)?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, open))
}

fn parse_response(text: &[u8]) -> Option<Response> {
    if let Some(rest) = text.strip_prefix(b"* ") {
        return Some(Response::Untagged(rest.to_vec()));
    }
    if text == b"+" {
        return Some(Response::Continue(String::new()));
    }
    if let Some(rest) = text.strip_prefix(b"+ ") {
        return Some(Response::Continue(
            String::from_utf8_lossy(rest).into_owned(),
        ));
    }
    let text = String::from_utf8_lossy(text);
    let (tag, rest) = text.split_once(' ')?;
    let (state, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let state = match state.to_ascii_uppercase().as_str() {
        "OK" => State::Ok,
        "NO" => State::No,
        "BAD" => State::Bad,
        _ => return None,
    };
    let (code, text) = split_code(rest);
    Some(Response::Tagged(Tagged {
        tag: tag.to_owned(),
        state,
        code,
        text,
    }))
}

/// A response text's `[CODE ...]`, if it starts with one, and the text after it.
pub fn split_code(rest: &str) -> (Option<String>, String) {
    match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, text)) => (Some(code.to_owned()), text.trim_start().to_owned()),
        None => (None, rest.to_owned()),
    }
}

/// Bytes made printable for logs and messages, at most 300 characters.
pub fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .take(300)
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_told_apart() {
        match parse_response(b"a7 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)") {
            Some(Response::Tagged(t)) => {
                assert_eq!(t.tag, "a7");
                assert_eq!(t.state, State::No);
                assert_eq!(t.code_name().as_deref(), Some("OVERQUOTA"));
                assert_eq!(t.text, "Quota exceeded (mailbox for user is full)");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse_response(b"+ go ahead"), Some(Response::Continue(t)) if t == "go ahead")
        );
        assert!(matches!(parse_response(b"+"), Some(Response::Continue(_))));
        assert!(
            matches!(parse_response(b"* 3 EXISTS"), Some(Response::Untagged(t)) if t == b"3 EXISTS")
        );
        assert!(parse_response(b"a1 MAYBE").is_none());
        assert!(parse_response(b"").is_none());
    }

    #[test]
    fn literals_are_found_at_line_ends_only() {
        assert_eq!(literal_at_end(b"* 1 FETCH (BODY[] {42}"), Some((42, 18)));
        assert_eq!(literal_at_end(b"* STATUS {5+}"), Some((5, 9)));
        assert_eq!(literal_at_end(b"* OK {x}"), None);
        assert_eq!(literal_at_end(b"* OK {}"), None);
        assert_eq!(literal_at_end(b"* OK {12} more"), None);
        assert_eq!(literal_at_end(b"* OK {99999999999999999999}"), None);
    }
}
