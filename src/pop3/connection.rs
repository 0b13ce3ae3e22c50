//! One POP3 connection: a byte stream plus its read and write buffers.
//!
//! The read buffer has a fixed size; a status or listing line longer than
//! [`MAX_LINE`](super::codec::MAX_LINE) is an error, and message bodies stream through to a
//! sink, so memory stays bounded whatever the server sends. Every read is bounded by the
//! response timeout (an idle timeout: a slow but moving transfer never times out, a stalled
//! one always does). At TRACE level (target `popsync::pop3::wire`) the connection logs a
//! transcript: commands as their redacted `Display` form, status and listing lines made
//! printable, bodies as a byte count.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::trace;

use super::codec::{self, BodyDecoder, LineEnds, ListingLine, MAX_LINE};
use super::command::Command;
use super::error::{Error, ErrorKind, Phase};
use super::response::{Status, printable};

/// Bounds on a multi-line listing.
#[derive(Debug, Clone, Copy)]
pub struct ListingLimit {
    pub lines: usize,
    pub bytes: usize,
}

/// Any byte stream the client can run over: TCP, TLS over TCP, or an in-memory pipe in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

const READ_BUFFER: usize = 64 * 1024;
pub(crate) const WIRE: &str = "popsync::pop3::wire";

pub struct Connection {
    stream: Box<dyn Stream>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Length of the line last returned by `read_line`, consumed on the next read.
    consume: usize,
    out: Vec<u8>,
    response_timeout: Duration,
    broken: bool,
    /// How the server ends its own lines: a server whose status lines end with a bare LF
    /// gets its message bodies read the same way.
    line_ends: LineEnds,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &(self.end - self.start))
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(stream: Box<dyn Stream>, response_timeout: Duration) -> Self {
        Self {
            stream,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            consume: 0,
            out: Vec::with_capacity(1024),
            response_timeout,
            broken: false,
            line_ends: LineEnds::Crlf,
        }
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the connection unusable, e.g. after the caller gave up in the middle of a
    /// pipelined exchange.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Returns the stream for a TLS upgrade. Bytes the server sent after its answer to STLS
    /// are discarded, never read as if they had come over TLS (RFC 2595 section 4; the
    /// STARTTLS command-injection attack). Returns how many bytes were discarded.
    pub fn into_stream(mut self) -> (Box<dyn Stream>, usize) {
        self.consume_line();
        (self.stream, self.end - self.start)
    }

    /// Whether the line last returned by `read_line` ended with CRLF (not a bare LF).
    fn ends_with_crlf(&self) -> bool {
        self.consume >= 2 && self.buf[self.start + self.consume - 2] == b'\r'
    }

    fn consume_line(&mut self) {
        self.start += std::mem::take(&mut self.consume);
    }

    fn fail(&mut self, e: impl Into<Error>) -> Error {
        let e = e.into();
        if e.breaks_connection() {
            self.broken = true;
        }
        e
    }

    async fn fill(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(ErrorKind::Broken.into());
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
        let n = match tokio::time::timeout(self.response_timeout, read).await {
            Err(_) => {
                return Err(self.fail(ErrorKind::Timeout {
                    phase: Phase::Response,
                    after: self.response_timeout,
                }));
            }
            Ok(Err(e)) => return Err(self.fail(ErrorKind::Io(e))),
            Ok(Ok(0)) => return Err(self.fail(ErrorKind::Closed)),
            Ok(Ok(n)) => n,
        };
        self.end += n;
        Ok(())
    }

    /// Reads one line (without CRLF). The slice is valid until the next read.
    pub async fn read_line(&mut self) -> Result<&[u8], Error> {
        self.consume_line();
        loop {
            match codec::find_line(&self.buf[self.start..self.end], MAX_LINE) {
                Ok(Some((_, used))) => {
                    self.consume = used;
                    let (line, _) = codec::find_line(&self.buf[self.start..self.end], MAX_LINE)
                        .ok()
                        .flatten()
                        .expect("line found above");
                    return Ok(line);
                }
                Ok(None) => self.fill().await?,
                Err(e) => return Err(self.fail(ErrorKind::LineTooLong { limit: e.limit })),
            }
        }
    }

    /// Reads a status line. Anything else is a protocol error.
    pub async fn read_status(&mut self) -> Result<Status, Error> {
        let len = self.read_line().await?.len();
        if !self.ends_with_crlf() {
            self.line_ends = LineEnds::BareLf;
        }
        let line = &self.buf[self.start..self.start + len];
        match Status::parse(line) {
            Some(status) => {
                trace!(target: WIRE, "S: {status}");
                Ok(status)
            }
            None => {
                let shown: String = printable(line).chars().take(120).collect();
                Err(self.fail(ErrorKind::Protocol(format!(
                    "expected +OK or -ERR, got {shown:?}"
                ))))
            }
        }
    }

    /// Reads the data lines of a multi-line response up to the terminating `.`, handing
    /// each (dot-unstuffed) line to `each`. At most `limit.lines` lines and `limit.bytes`
    /// bytes are accepted, so a hostile server cannot make the caller hold unbounded data.
    pub async fn read_listing(
        &mut self,
        limit: ListingLimit,
        mut each: impl FnMut(&[u8]),
    ) -> Result<usize, Error> {
        let mut n = 0;
        let mut bytes = 0;
        let wire = tracing::enabled!(target: WIRE, tracing::Level::TRACE);
        loop {
            let line = self.read_line().await?;
            match codec::unstuff_line(line) {
                ListingLine::End => {
                    if wire {
                        trace!(target: WIRE, "S: . ({n} lines)");
                    }
                    return Ok(n);
                }
                ListingLine::Data(data) => {
                    if wire {
                        trace!(target: WIRE, "S: {}", printable(data));
                    }
                    n += 1;
                    bytes += data.len();
                    if n > limit.lines || bytes > limit.bytes {
                        return Err(self.fail(ErrorKind::Protocol(format!(
                            "the server sent a listing of more than {} lines or {} MiB",
                            limit.lines,
                            limit.bytes >> 20
                        ))));
                    }
                    each(data);
                }
            }
        }
    }

    /// Streams a message body up to its terminating `.` line into `sink`, dot-unstuffed.
    /// Returns the number of message octets. A sink error leaves the connection broken (the
    /// rest of the body is still on the wire).
    pub async fn read_body(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u64, Error> {
        self.consume_line();
        let mut decoder = BodyDecoder::with_line_ends(self.line_ends);
        loop {
            if self.start < self.end {
                let decoded = decoder.decode(&self.buf[self.start..self.end], &mut sink);
                match decoded {
                    Ok(n) => self.start += n,
                    Err(e) => {
                        self.broken = true;
                        return Err(ErrorKind::Local(e).into());
                    }
                }
                if decoder.is_done() {
                    trace!(target: WIRE, "S: <message body, {} octets>", decoder.octets());
                    return Ok(decoder.octets());
                }
            }
            self.fill().await?;
        }
    }

    /// Adds a command to the output buffer (sent by [`flush`](Self::flush)).
    pub fn queue(&mut self, command: &Command<'_>) -> Result<(), Error> {
        command
            .encode(&mut self.out)
            .map_err(|_| Error::from(ErrorKind::InvalidArgument))?;
        trace!(target: WIRE, "C: {command}");
        Ok(())
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(ErrorKind::Broken.into());
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        let result = tokio::time::timeout(self.response_timeout, write).await;
        self.out.clear();
        match result {
            Err(_) => Err(self.fail(ErrorKind::Timeout {
                phase: Phase::Send,
                after: self.response_timeout,
            })),
            Ok(Err(e)) => Err(self.fail(ErrorKind::Io(e))),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends one command and reads its status line.
    pub async fn command(&mut self, command: &Command<'_>) -> Result<Status, Error> {
        self.queue(command)?;
        self.flush().await?;
        self.read_status().await
    }

    /// Best-effort orderly shutdown of the stream (TLS close_notify).
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn connection_with(server_bytes: &'static [u8]) -> Connection {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        server.write_all(server_bytes).await.unwrap();
        // keep the server end open for the test's duration
        std::mem::forget(server);
        Connection::new(Box::new(client), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn listings_beyond_their_limits_are_refused() {
        let listing: &[u8] = b"1 a\r\n2 b\r\n3 c\r\n4 d\r\n.\r\n";
        let mut c = connection_with(listing).await;
        let mut seen = 0;
        let n = c
            .read_listing(
                ListingLimit {
                    lines: 4,
                    bytes: 100,
                },
                |_| seen += 1,
            )
            .await
            .unwrap();
        assert_eq!((n, seen), (4, 4));

        let mut c = connection_with(listing).await;
        let err = c
            .read_listing(
                ListingLimit {
                    lines: 3,
                    bytes: 100,
                },
                |_| {},
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("listing of more than 3 lines"),
            "{err}"
        );
        assert!(c.is_broken());

        let mut c = connection_with(listing).await;
        let err = c
            .read_listing(
                ListingLimit {
                    lines: 100,
                    bytes: 10,
                },
                |_| {},
            )
            .await
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Protocol(_)), "{err}");
    }

    #[tokio::test]
    async fn a_status_line_ending_in_bare_lf_switches_bodies_to_bare_lf() {
        let mut c = connection_with(b"+OK\n.x\n..y\n.\n").await;
        assert!(c.read_status().await.unwrap().is_ok());
        let mut body = Vec::new();
        c.read_body(|d| {
            body.extend_from_slice(d);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(body, b"x\n.y\n");
    }
}
