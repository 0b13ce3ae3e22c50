//! Spooling a message before it is appended to an mbox or handed to an MDA.
//!
//! An mbox append must be recorded (offset, length, hash) before it is written, so the
//! message has to be complete first; an MDA wants the whole message on its standard input.
//! The message streams into a spool file (bounded memory, whatever its size), converted on
//! the way: CRLF to LF, a `From ` line put in front (built from the envelope sender found in
//! the headers, which are held back until they are complete), and for an mbox every line
//! matching `^>*From ` quoted with one more `>` (mboxrd). The spool's SHA-256 is computed as
//! it is written. The envelope sender comes from the message's [`Head`], which the batch
//! captures as the message streams by (the headers are not parsed a second time here).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::CrlfToLf;
use super::{DeliveryError, Journal, Target};
use crate::summary::{Head, MAX_HEADER_CAPTURE};

/// How a spooled message is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolFormat {
    /// mboxrd: a `From ` line, `>From ` quoting, a blank line after the message.
    Mboxrd,
    /// The message as is (LF line endings), with or without a `From ` line in front.
    Plain { from_line: bool },
    /// The message as it goes over the wire to an IMAP server: as received, every line
    /// ending in CRLF (a bare LF, from a server that sends them, gets its CR).
    Wire,
}

/// A message being spooled.
#[derive(Debug)]
pub struct SpoolWriter {
    path: PathBuf,
    format: SpoolFormat,
    out: BufWriter<File>,
    crlf: CrlfToLf,
    hasher: Sha256,
    written: u64,
    /// Header bytes held back until the envelope sender is known.
    head: Option<Vec<u8>>,
    /// Quoting state: the start of the current line, while it may still be `>*From `.
    line_start: Option<Vec<u8>>,
    last: u8,
    from_line: String,
    now: chrono::DateTime<chrono::Local>,
}

/// A completely spooled message.
#[derive(Debug)]
pub struct Spooled {
    pub path: PathBuf,
    pub len: u64,
    pub sha256: [u8; 32],
    /// The `From ` line put in front (without its LF), if any.
    pub from_line: String,
    /// The envelope sender.
    pub sender: String,
    /// The Message-ID, and the message's own date (see [`Head`]).
    pub message_id: Option<String>,
    pub date: Option<crate::summary::MessageDate>,
}

impl Spooled {
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl SpoolWriter {
    /// Starts spooling into a new file `path` (created 0600).
    pub fn create(path: &Path, format: SpoolFormat) -> io::Result<Self> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(Self {
            path: path.to_owned(),
            format,
            out: BufWriter::with_capacity(128 * 1024, file),
            crlf: CrlfToLf::default(),
            hasher: Sha256::new(),
            written: 0,
            head: Some(Vec::new()),
            line_start: Some(Vec::new()),
            last: b'\n',
            from_line: String::new(),
            now: chrono::Local::now(),
        })
    }

    /// Message data as received (CRLF line endings). `head` has been fed this data already.
    pub fn write(&mut self, data: &[u8], head: &Head) -> io::Result<()> {
        if self.format == SpoolFormat::Wire {
            return self.wire(data);
        }
        let mut converted = Vec::new();
        self.crlf.convert(data, &mut |d| {
            converted.extend_from_slice(d);
            Ok(())
        })?;
        self.accept(&converted, head)
    }

    /// LF data: held while the headers are incomplete, then passed on.
    fn accept(&mut self, data: &[u8], parsed: &Head) -> io::Result<()> {
        if let Some(head) = &mut self.head {
            head.extend_from_slice(data);
            let end = find_header_end(head);
            if end.is_none() && head.len() < MAX_HEADER_CAPTURE {
                return Ok(());
            }
            let head = self.head.take().expect("held");
            self.begin(&head, parsed)?;
            return Ok(());
        }
        self.body(data)
    }

    /// The headers are known: write the `From ` line, then what was held back.
    fn begin(&mut self, head: &[u8], parsed: &Head) -> io::Result<()> {
        let sender = parsed.sender();
        self.from_line = format!("From {sender} {}", self.now.format("%a %b %e %H:%M:%S %Y"));
        let wants_from = match self.format {
            SpoolFormat::Mboxrd => true,
            SpoolFormat::Plain { from_line } => from_line,
            SpoolFormat::Wire => false,
        };
        if wants_from {
            let line = format!("{}\n", self.from_line);
            self.emit(line.as_bytes())?;
        }
        self.body(head)
    }

    /// Body data, quoted for mboxrd where needed.
    fn body(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.format != SpoolFormat::Mboxrd {
            return self.emit(data);
        }
        while !data.is_empty() {
            if let Some(start) = &mut self.line_start {
                // Collect the line's start until it is clearly (not) a `>*From ` line.
                let take = data
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |p| p + 1);
                let mut i = 0;
                let mut decided = None;
                while i < take {
                    start.push(data[i]);
                    i += 1;
                    match classify(start) {
                        Some(q) => {
                            decided = Some(q);
                            break;
                        }
                        None => continue,
                    }
                }
                data = &data[i..];
                // Without a decision, more data is needed.
                if let Some(quote) = decided {
                    let start = self.line_start.take().expect("collecting");
                    if quote {
                        self.emit(b">")?;
                    }
                    self.emit(&start)?;
                    if start.last() == Some(&b'\n') {
                        self.line_start = Some(Vec::new());
                    }
                }
            } else {
                match memchr::memchr(b'\n', data) {
                    Some(p) => {
                        self.emit(&data[..=p])?;
                        data = &data[p + 1..];
                        self.line_start = Some(Vec::new());
                    }
                    None => {
                        self.emit(data)?;
                        data = &[];
                    }
                }
            }
        }
        Ok(())
    }

    /// Data for the wire: as it is, a CR put before any LF that lacks one.
    fn wire(&mut self, mut data: &[u8]) -> io::Result<()> {
        while let Some(p) = memchr::memchr(b'\n', data) {
            let before_cr = if p == 0 {
                self.last == b'\r'
            } else {
                data[p - 1] == b'\r'
            };
            if before_cr {
                self.emit(&data[..=p])?;
            } else {
                self.emit(&data[..p])?;
                self.emit(b"\r\n")?;
            }
            data = &data[p + 1..];
        }
        self.emit(data)
    }

    fn emit(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.hasher.update(data);
        self.written += data.len() as u64;
        self.last = data[data.len() - 1];
        self.out.write_all(data)
    }

    /// Ends the message: headers never completed are written out, a missing final newline
    /// added, and for mboxrd the blank line that separates messages.
    pub fn finish(mut self, parsed: &Head) -> io::Result<Spooled> {
        if self.format == SpoolFormat::Wire {
            self.out.flush()?;
            return Ok(Spooled {
                path: self.path,
                len: self.written,
                sha256: self.hasher.finalize().into(),
                from_line: String::new(),
                sender: parsed.sender().to_owned(),
                message_id: parsed.message_id().map(str::to_owned),
                date: parsed.date(),
            });
        }
        let mut tail = Vec::new();
        self.crlf.finish(&mut |d| {
            tail.extend_from_slice(d);
            Ok(())
        })?;
        self.accept(&tail, parsed)?;
        if let Some(head) = self.head.take() {
            self.begin(&head, parsed)?;
        }
        if let Some(start) = self.line_start.take()
            && !start.is_empty()
        {
            // A last line too short to decide on: it is not `>*From ` (no space yet).
            self.emit(&start)?;
        }
        if self.last != b'\n' {
            self.emit(b"\n")?;
        }
        if self.format == SpoolFormat::Mboxrd {
            self.emit(b"\n")?;
        }
        self.out.flush()?;
        let sender = self
            .from_line
            .strip_prefix("From ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or("MAILER-DAEMON")
            .to_owned();
        Ok(Spooled {
            path: self.path,
            len: self.written,
            sha256: self.hasher.finalize().into(),
            from_line: self.from_line,
            sender,
            message_id: parsed.message_id().map(str::to_owned),
            date: parsed.date(),
        })
    }

    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a spooling target does with a batch once its messages have arrived whole: append
/// them to an mbox, hand them to an MDA. It removes the spool files when it is done.
pub trait Handover: std::fmt::Debug {
    fn deliver(
        &mut self,
        arrived: Vec<(usize, Spooled)>,
        journal: &mut Journal<'_>,
    ) -> Result<(), DeliveryError>;
}

/// A [`Target`] that spools each message of a batch as it arrives, then hands the batch
/// over: for targets that need a message whole (its length and hash known) before it goes
/// on.
#[derive(Debug)]
pub struct SpoolingTarget<H> {
    spool: SpoolBatch,
    handover: H,
}

impl<H: Handover> SpoolingTarget<H> {
    /// Spools into `dir`, in `format`, for `handover`.
    pub fn new(dir: PathBuf, format: SpoolFormat, handover: H) -> Self {
        Self {
            spool: SpoolBatch::new(dir, format),
            handover,
        }
    }
}

impl<H: Handover> Target for SpoolingTarget<H> {
    fn begin_batch(&mut self, journal: &mut Journal<'_>) -> Result<(), DeliveryError> {
        self.spool.begin(journal.len(), journal.now());
        Ok(())
    }

    fn start(&mut self, index: usize) -> io::Result<()> {
        self.spool.start(index)
    }

    fn write(&mut self, data: &[u8], head: &Head) -> io::Result<()> {
        self.spool.write(data, head)
    }

    fn finish(&mut self, head: &Head) -> io::Result<()> {
        self.spool.finish(head)
    }

    fn abandon(&mut self) {
        self.spool.abandon();
    }

    fn deliver(&mut self, journal: &mut Journal<'_>) -> Result<(), DeliveryError> {
        let arrived = self.spool.take_arrived();
        self.handover.deliver(arrived, journal)
    }

    fn discard(&mut self, _index: usize) {
        // The hand-over removes every spool file of the batch, delivered or not.
    }
}

/// The messages of one batch, each spooled as it arrives. Spool files are named by the
/// process, the batch's time and the message's index, never by anything the server sent.
#[derive(Debug)]
struct SpoolBatch {
    dir: PathBuf,
    format: SpoolFormat,
    names: Vec<String>,
    current: Option<(usize, SpoolWriter)>,
    arrived: Vec<(usize, Spooled)>,
}

impl SpoolBatch {
    /// Spools into `dir`, in `format`.
    fn new(dir: PathBuf, format: SpoolFormat) -> Self {
        Self {
            dir,
            format,
            names: Vec::new(),
            current: None,
            arrived: Vec::new(),
        }
    }

    /// A new batch of `count` messages, at `now` (unix seconds).
    fn begin(&mut self, count: usize, now: i64) {
        self.names = (0..count)
            .map(|i| format!("{}-{now}-{i}", std::process::id()))
            .collect();
        self.arrived.clear();
    }

    /// Message `index` starts arriving.
    fn start(&mut self, index: usize) -> io::Result<()> {
        let path = self.dir.join(&self.names[index]);
        self.current = Some((index, SpoolWriter::create(&path, self.format)?));
        Ok(())
    }

    /// Bytes of the current message, as received.
    fn write(&mut self, data: &[u8], head: &Head) -> io::Result<()> {
        match &mut self.current {
            Some((_, w)) => w.write(data, head),
            None => Err(io::Error::other("data outside a message")),
        }
    }

    /// The current message arrived whole.
    fn finish(&mut self, head: &Head) -> io::Result<()> {
        let (index, writer) = self
            .current
            .take()
            .ok_or_else(|| io::Error::other("no message to finish"))?;
        self.arrived.push((index, writer.finish(head)?));
        Ok(())
    }

    /// The current message did not arrive whole: its spool file goes.
    fn abandon(&mut self) {
        if let Some((_, writer)) = self.current.take() {
            writer.discard();
        }
    }

    /// The messages that arrived whole, by index; the caller removes their spool files.
    fn take_arrived(&mut self) -> Vec<(usize, Spooled)> {
        std::mem::take(&mut self.arrived)
    }
}

/// Whether a line starting with `start` must be quoted (`Some(true)`), must not
/// (`Some(false)`), or cannot be told yet (`None`).
fn classify(start: &[u8]) -> Option<bool> {
    let gts = start.iter().take_while(|&&b| b == b'>').count();
    let rest = &start[gts..];
    const FROM: &[u8] = b"From ";
    if rest.len() >= FROM.len() {
        return Some(rest.starts_with(FROM));
    }
    if FROM.starts_with(rest) && start.last() != Some(&b'\n') {
        None
    } else {
        Some(false)
    }
}

/// Where the header block ends (just after the blank line), in LF data.
fn find_header_end(head: &[u8]) -> Option<usize> {
    if head.starts_with(b"\n") {
        return Some(1);
    }
    memchr::memmem::find(head, b"\n\n").map(|p| p + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(format: SpoolFormat, message: &[u8], chunk: usize) -> (Vec<u8>, Spooled) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut w = SpoolWriter::create(&path, format).unwrap();
        let mut head = Head::default();
        for piece in message.chunks(chunk.max(1)) {
            head.feed(piece);
            w.write(piece, &head).unwrap();
        }
        let s = w.finish(&head).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, s.len);
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(digest, s.sha256);
        (bytes, s)
    }

    const MSG: &[u8] = b"Return-Path: <bounce@example.org>\r\nFrom: Alice <alice@example.org>\r\nSubject: x\r\n\r\nFrom the top\r\n>From quoted\r\n>>From twice\r\nFrom\r\nFro\r\n>\r\nnot From here\r\n.\r\nlast";

    #[test]
    fn mboxrd_quotes_from_lines_in_every_chunking() {
        let (whole, s) = spool(SpoolFormat::Mboxrd, MSG, MSG.len());
        assert_eq!(s.sender, "bounce@example.org");
        let text = String::from_utf8(whole.clone()).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        assert!(first.starts_with("From bounce@example.org "), "{first}");
        assert_eq!(
            rest,
            "Return-Path: <bounce@example.org>\nFrom: Alice <alice@example.org>\nSubject: x\n\n>From the top\n>>From quoted\n>>>From twice\nFrom\nFro\n>\nnot From here\n.\nlast\n\n"
        );
        for chunk in 1..MSG.len() {
            let (bytes, _) = spool(SpoolFormat::Mboxrd, MSG, chunk);
            // The date in the From line may differ by a second: compare after it.
            let after = |b: &[u8]| b[b.iter().position(|&c| c == b'\n').unwrap()..].to_vec();
            assert_eq!(after(&bytes), after(&whole), "chunk {chunk}");
        }
    }

    #[test]
    fn plain_spools_keep_the_message_as_it_is() {
        let (bytes, _) = spool(SpoolFormat::Plain { from_line: false }, MSG, 7);
        assert!(bytes.starts_with(b"Return-Path:"));
        assert!(bytes.ends_with(b"\nlast\n"));
        assert!(
            bytes.windows(14).any(|w| w == b"\nFrom the top\n"),
            "not quoted"
        );
        let (bytes, _) = spool(SpoolFormat::Plain { from_line: true }, MSG, 7);
        assert!(bytes.starts_with(b"From bounce@example.org "));
    }

    #[test]
    fn wire_spools_keep_the_bytes_with_crlf_line_ends() {
        for chunk in 1..MSG.len() {
            let (bytes, s) = spool(SpoolFormat::Wire, MSG, chunk);
            assert_eq!(bytes, MSG, "chunk {chunk}");
            assert_eq!(s.len, MSG.len() as u64);
        }
        let (bytes, _) = spool(SpoolFormat::Wire, b"A: b\nC: d\r\n\nbody\n", 1);
        assert_eq!(bytes, b"A: b\r\nC: d\r\n\r\nbody\r\n");
        let (_, s) = spool(
            SpoolFormat::Wire,
            b"Message-ID: <a.1@example.org>\r\nDate: Tue, 1 Dec 2026 10:11:12 -0130\r\n\r\nx\r\n",
            5,
        );
        assert_eq!(s.message_id.as_deref(), Some("a.1@example.org"));
        let date = s.date.unwrap();
        assert_eq!((date.year, date.month, date.day), (2026, 12, 1));
        assert_eq!(date.offset_minutes, -90);
    }

    #[test]
    fn a_message_without_a_blank_line_or_body_is_spooled_whole() {
        let (bytes, _) = spool(SpoolFormat::Mboxrd, b"Subject: only headers\r\n", 3);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\nSubject: only headers\n\n"), "{text:?}");
    }
}
