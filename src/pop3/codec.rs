//! Sans-I/O POP3 framing.
//!
//! Everything here works on byte slices and never blocks: a function either finds a whole
//! frame in the buffer or says it needs more data. The same bytes give the same result
//! whatever the chunking (the tests feed every chunk size from 1 up).
//!
//! - [`find_line`] finds one CRLF- (or, leniently, LF-) terminated line, refusing lines
//!   longer than a hard limit;
//! - [`unstuff_line`] undoes dot-stuffing on one line of a multi-line listing;
//! - [`BodyDecoder`] streams a multi-line message body: it strips the stuffed dots, passes
//!   every other byte through untouched (8-bit, NUL, invalid UTF-8 and all) and stops at the
//!   terminating `.` line.

use memchr::memchr;

/// Longest status or listing line accepted, terminator included. RFC 2449 allows 512
/// octets for a response; real servers exceed that, so there is head-room, but a server
/// cannot make the client buffer without limit.
pub const MAX_LINE: usize = 8192;

/// A line longer than the limit was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    pub limit: usize,
}

/// Looks for a complete line at the start of `buf`.
///
/// Returns `Ok(Some((line, consumed)))` with the line without its CRLF (or bare LF) and the
/// number of bytes the line took including the terminator, `Ok(None)` if more data is needed,
/// or an error once `limit` bytes have arrived without a terminator.
pub fn find_line(buf: &[u8], limit: usize) -> Result<Option<(&[u8], usize)>, LineTooLong> {
    let window = &buf[..buf.len().min(limit)];
    match memchr(b'\n', window) {
        Some(pos) => {
            let mut line = &buf[..pos];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            Ok(Some((line, pos + 1)))
        }
        None if buf.len() >= limit => Err(LineTooLong { limit }),
        None => Ok(None),
    }
}

/// What a line of a multi-line response is: the terminating `.` or a (dot-unstuffed) data line.
#[derive(Debug, PartialEq, Eq)]
pub enum ListingLine<'a> {
    End,
    Data(&'a [u8]),
}

/// Classifies one line of a multi-line response (RFC 1939 section 3): a lone `.` ends it; a
/// leading dot on any other line is removed.
pub fn unstuff_line(line: &[u8]) -> ListingLine<'_> {
    match line {
        b"." => ListingLine::End,
        [b'.', rest @ ..] => ListingLine::Data(rest),
        _ => ListingLine::Data(line),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// At the first byte of a line.
    LineStart,
    /// Inside a line; looking for its end.
    InLine,
    /// A line started with `.`, which has been consumed.
    Dot,
    /// A line started with `.` followed by CR.
    DotCr,
    /// The terminating line has been consumed.
    Done,
}

/// What ends a line in a multi-line body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnds {
    /// CRLF only (RFC 1939). A bare LF inside a message is data: a `.` after it is neither
    /// stuffing nor the end of the message. What every standard server sends.
    Crlf,
    /// Bare LF too, for a server that ends its own lines with LF alone.
    BareLf,
}

/// Streaming decoder for a multi-line body (the data after `+OK` to RETR or TOP).
///
/// Feed it bytes with [`BodyDecoder::decode`]; it hands message data to a callback in runs as
/// long as possible and reports how many input bytes it consumed, so bytes after the
/// terminator (pipelined responses) stay in the caller's buffer.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: BodyState,
    line_ends: LineEnds,
    /// The last byte consumed (by an earlier call), to see a CR before an LF across chunks.
    prev: u8,
    octets: u64,
}

impl Default for BodyDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyDecoder {
    /// A decoder for a standard server: lines end with CRLF.
    pub fn new() -> Self {
        Self::with_line_ends(LineEnds::Crlf)
    }

    pub fn with_line_ends(line_ends: LineEnds) -> Self {
        Self {
            state: BodyState::LineStart,
            line_ends,
            prev: b'\n',
            octets: 0,
        }
    }

    /// Has the terminating `.` line been seen?
    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Message octets passed to the callback so far (after unstuffing).
    pub fn octets(&self) -> u64 {
        self.octets
    }

    /// Decodes as much of `input` as possible, calling `out` with message data.
    ///
    /// Returns the number of bytes consumed; once the terminator is consumed, decoding stops
    /// there and [`is_done`](Self::is_done) becomes true. An error from `out` is returned as is.
    pub fn decode<E>(
        &mut self,
        input: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut i = 0;
        // Start of data not yet handed to `out`.
        let mut run = 0;
        let bare_lf = self.line_ends == LineEnds::BareLf;
        let result = loop {
            match self.state {
                BodyState::Done => break Ok(i),
                BodyState::LineStart => {
                    if i == input.len() {
                        break self.emit(&input[run..i], out).map(|()| i);
                    }
                    if input[i] == b'.' {
                        if let Err(e) = self.emit(&input[run..i], out) {
                            break Err(e);
                        }
                        i += 1;
                        run = i;
                        self.state = BodyState::Dot;
                    } else {
                        self.state = BodyState::InLine;
                    }
                }
                BodyState::InLine => match memchr(b'\n', &input[i..]) {
                    Some(pos) => {
                        let lf = i + pos;
                        let before = if lf > 0 { input[lf - 1] } else { self.prev };
                        i = lf + 1;
                        if before == b'\r' || bare_lf {
                            self.state = BodyState::LineStart;
                        }
                    }
                    None => {
                        i = input.len();
                        break self.emit(&input[run..i], out).map(|()| i);
                    }
                },
                BodyState::Dot => {
                    if i == input.len() {
                        break Ok(i);
                    }
                    match input[i] {
                        b'\r' => {
                            i += 1;
                            run = i;
                            self.state = BodyState::DotCr;
                        }
                        // ".\n" ends the body only where a bare LF ends lines.
                        b'\n' if bare_lf => {
                            i += 1;
                            self.state = BodyState::Done;
                        }
                        // A stuffed dot (or a lone leading dot, which RFC 1939 also strips).
                        _ => {
                            run = i;
                            self.state = BodyState::InLine;
                        }
                    }
                }
                BodyState::DotCr => {
                    if i == input.len() {
                        break Ok(i);
                    }
                    if input[i] == b'\n' {
                        i += 1;
                        self.state = BodyState::Done;
                        continue;
                    }
                    // ".\r" and something else: the dot is stripped, the CR is data.
                    if let Err(e) = self.emit(b"\r", out) {
                        break Err(e);
                    }
                    run = i;
                    self.state = BodyState::InLine;
                }
            }
        };
        if i > 0 {
            self.prev = input[i - 1];
        }
        result
    }

    fn emit<E>(
        &mut self,
        data: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if data.is_empty() {
            return Ok(());
        }
        self.octets += data.len() as u64;
        out(data)
    }
}

/// Dot-stuffs a message for sending in a multi-line response and appends the terminator, as
/// a standard server does: a line is what follows CRLF. The inverse of [`BodyDecoder`]; used
/// by tests and test servers.
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 5);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n' && prev == b'\r';
        prev = b;
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes `input` fed in chunks of `chunk` bytes, the way a socket might deliver it,
    /// keeping unconsumed bytes like the connection's buffer does.
    fn decode_chunked(input: &[u8], chunk: usize) -> (Vec<u8>, usize) {
        let mut dec = BodyDecoder::new();
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut consumed_total = 0;
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            let n = dec
                .decode(&buf, &mut |d: &[u8]| {
                    out.extend_from_slice(d);
                    Ok::<(), ()>(())
                })
                .unwrap();
            consumed_total += n;
            buf.drain(..n);
            if dec.is_done() {
                break;
            }
        }
        assert!(
            dec.is_done(),
            "terminator not found with chunk size {chunk}"
        );
        assert_eq!(dec.octets(), out.len() as u64);
        (out, consumed_total)
    }

    const SCRIPT: &[u8] = b"Subject: dots\r\n\r\n..\r\n...\r\n..hidden\r\nFrom me\r\n\
                            .\r\r\n\xff\xfe\x00 binary\r\nlast\r\n.\r\n+OK next response\r\n";

    #[test]
    fn body_decodes_the_same_in_every_chunk_size() {
        let expected: &[u8] = b"Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\nFrom me\r\n\
                                \r\r\n\xff\xfe\x00 binary\r\nlast\r\n";
        let body_len = SCRIPT.len() - b"+OK next response\r\n".len();
        for chunk in 1..=SCRIPT.len() + 1 {
            let (out, consumed) = decode_chunked(SCRIPT, chunk);
            assert_eq!(out, expected, "chunk size {chunk}");
            assert_eq!(consumed, body_len, "chunk size {chunk}");
        }
    }

    #[test]
    fn empty_body_is_just_the_terminator() {
        for chunk in 1..=3 {
            assert_eq!(decode_chunked(b".\r\n", chunk).0, b"");
        }
    }

    #[test]
    fn a_server_ending_lines_with_bare_lf_is_understood() {
        for chunk in 1..=9 {
            let mut dec = BodyDecoder::with_line_ends(LineEnds::BareLf);
            let mut out = Vec::new();
            let mut n = 0;
            for piece in b"a\n..b\n.\n".chunks(chunk) {
                n += dec
                    .decode(piece, &mut |d: &[u8]| {
                        out.extend_from_slice(d);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
            }
            assert!(dec.is_done());
            assert_eq!((out.as_slice(), n), (&b"a\n.b\n"[..], 8));
        }
    }

    #[test]
    fn a_dot_after_a_bare_lf_inside_a_message_is_data_not_the_end() {
        // A CRLF server stuffs only lines that follow CRLF; this message has a bare LF
        // followed by ".\r\n" in its body, which must not end it.
        let wire: &[u8] = b"first part\n.\r\nsecond part\n..x\r\n..\r\n.\r\n";
        for chunk in 1..=wire.len() {
            let (out, consumed) = decode_chunked(wire, chunk);
            assert_eq!(
                out, b"first part\n.\r\nsecond part\n..x\r\n.\r\n",
                "chunk {chunk}"
            );
            assert_eq!(consumed, wire.len());
        }
    }

    #[test]
    fn decoder_stops_exactly_at_the_terminator() {
        let mut dec = BodyDecoder::new();
        let n = dec
            .decode(b"x\r\n.\r\n.\r\n", &mut |_: &[u8]| Ok::<(), ()>(()))
            .unwrap();
        assert_eq!(n, 6);
        assert!(dec.is_done());
    }

    #[test]
    fn sink_errors_are_passed_back() {
        let mut dec = BodyDecoder::new();
        let r = dec.decode(b"data\r\n", &mut |_: &[u8]| Err("disk full"));
        assert_eq!(r, Err("disk full"));
    }

    #[test]
    fn find_line_strips_crlf_and_reports_consumed() {
        assert_eq!(
            find_line(b"+OK hi\r\nrest", 100),
            Ok(Some((&b"+OK hi"[..], 8)))
        );
        assert_eq!(
            find_line(b"+OK hi\nrest", 100),
            Ok(Some((&b"+OK hi"[..], 7)))
        );
        assert_eq!(find_line(b"+OK partial", 100), Ok(None));
    }

    #[test]
    fn find_line_refuses_overlong_lines() {
        let long = vec![b'a'; 200];
        assert_eq!(find_line(&long, 100), Err(LineTooLong { limit: 100 }));
        // A terminator just past the limit does not count.
        let mut l = vec![b'a'; 100];
        l.extend_from_slice(b"\r\n");
        assert_eq!(find_line(&l, 100), Err(LineTooLong { limit: 100 }));
        // A line that fits exactly, terminator included, does.
        let mut l = vec![b'a'; 98];
        l.extend_from_slice(b"\r\n");
        assert!(matches!(find_line(&l, 100), Ok(Some((_, 100)))));
    }

    #[test]
    fn listing_lines_are_unstuffed() {
        assert_eq!(unstuff_line(b"."), ListingLine::End);
        assert_eq!(unstuff_line(b"..x"), ListingLine::Data(b".x"));
        assert_eq!(unstuff_line(b"1 abc"), ListingLine::Data(b"1 abc"));
    }

    fn crlf_message() -> impl Strategy<Value = Vec<u8>> {
        // Lines of arbitrary bytes (no CR/LF inside), biased towards dots and "From ".
        let line = prop_oneof![
            proptest::collection::vec(
                any::<u8>().prop_filter("no line ends", |b| *b != b'\n' && *b != b'\r'),
                0..40
            ),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            Just(b".x".to_vec()),
            Just(b"From x".to_vec()),
        ];
        proptest::collection::vec(line, 0..30).prop_map(|lines| {
            let mut m = Vec::new();
            for l in lines {
                m.extend_from_slice(&l);
                m.extend_from_slice(b"\r\n");
            }
            m
        })
    }

    proptest! {
        #[test]
        fn stuffing_then_decoding_gives_back_the_message(msg in crlf_message(), chunk in 1usize..64) {
            let wire = stuff(&msg);
            let (out, consumed) = decode_chunked(&wire, chunk);
            prop_assert_eq!(out, msg);
            prop_assert_eq!(consumed, wire.len());
        }

        #[test]
        fn decoder_never_panics_and_never_invents_bytes(input in proptest::collection::vec(any::<u8>(), 0..300), chunk in 1usize..32) {
            let mut dec = BodyDecoder::new();
            let mut out = 0usize;
            for piece in input.chunks(chunk) {
                let n = dec.decode(piece, &mut |d: &[u8]| { out += d.len(); Ok::<(), ()>(()) }).unwrap();
                prop_assert!(n <= piece.len());
                if dec.is_done() { break; }
                prop_assert_eq!(n, piece.len());
            }
            prop_assert!(out <= input.len());
        }
    }
}
