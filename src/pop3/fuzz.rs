//! Entry points for fuzzing: what a hostile or broken server can put in front of popsync.
//!
//! Each takes arbitrary bytes, must not panic whatever they are, and checks what must hold
//! for them. `scripts/fuzz` runs them under libFuzzer (`fuzz/`); the test suite replays
//! every input in `fuzz/corpus/` through them on the stable compiler, so what the fuzzer
//! found once stays tested.

use super::codec::{BodyDecoder, LineEnds, MAX_LINE, find_line, stuff, unstuff_line};
use super::response::{Capabilities, ListEntry, Status, UidlEntry, parse_stat, printable};
use super::tls::{CertificateInfo, format_fingerprint, parse_fingerprint};

/// The framing: a message body decoded whole and in chunks of every size the input picks
/// gives the same message and consumes the same bytes; lines are found within their limit;
/// and a message dot-stuffed the way a server does it comes back as it was.
///
/// The first byte picks the chunk size and the line ends, the rest is what the server sent.
pub fn codec(data: &[u8]) {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(pick & 0x3f);
    let line_ends = if pick & 0x40 == 0 {
        LineEnds::Crlf
    } else {
        LineEnds::BareLf
    };
    let whole = decode(input, input.len().max(1), line_ends);
    let chunked = decode(input, chunk, line_ends);
    assert_eq!(whole, chunked, "chunks of {chunk} decode differently");
    assert!(whole.1 <= input.len());

    // Lines: never longer than the limit, never past the first LF.
    let limit = 1 + usize::from(pick) * 8;
    let mut rest = input;
    while let Ok(Some((line, used))) = find_line(rest, limit.min(MAX_LINE)) {
        assert!(used <= limit && line.len() < used && used <= rest.len());
        assert!(!line.contains(&b'\n'));
        let _ = unstuff_line(line);
        rest = &rest[used..];
    }

    // What a standard server sends comes back exactly (with a final CRLF added if the
    // message lacked one).
    let stuffed = stuff(input);
    let (back, used, done) = decode(&stuffed, chunk, LineEnds::Crlf);
    assert!(
        done && used == stuffed.len(),
        "the terminator is found, at the end"
    );
    let mut want = input.to_vec();
    if !want.is_empty() && !want.ends_with(b"\r\n") {
        want.extend_from_slice(b"\r\n");
    }
    assert_eq!(back, want, "dot-stuffing is undone exactly once");
}

/// Decodes `input` delivered in chunks of `chunk` bytes, keeping what was not consumed as
/// the connection's buffer does. Returns the message, the bytes consumed and whether the
/// terminator was seen.
fn decode(input: &[u8], chunk: usize, line_ends: LineEnds) -> (Vec<u8>, usize, bool) {
    let mut decoder = BodyDecoder::with_line_ends(line_ends);
    let mut out = Vec::new();
    let mut buffered: Vec<u8> = Vec::new();
    let mut consumed = 0;
    for piece in input.chunks(chunk) {
        buffered.extend_from_slice(piece);
        let n = decoder
            .decode(&buffered, &mut |d: &[u8]| {
                out.extend_from_slice(d);
                Ok::<(), ()>(())
            })
            .expect("the sink never fails");
        buffered.drain(..n);
        consumed += n;
        if decoder.is_done() {
            break;
        }
    }
    assert_eq!(decoder.octets(), out.len() as u64);
    (out, consumed, decoder.is_done())
}

/// The response parsers: status lines and their response codes, CAPA, UIDL, LIST and STAT
/// lines. Whatever the server says, nothing panics, what is shown of it is printable, and
/// a unique-id is kept as the exact bytes sent.
pub fn responses(data: &[u8]) {
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    for line in &lines {
        if let Some(status) = Status::parse(line) {
            let shown = status.to_string();
            assert!(!shown.contains(['\r', '\n']), "{shown:?}");
            let _ = (status.code(), status.text(), status.is_ok());
        }
        if let Some(entry) = UidlEntry::parse(line) {
            assert!(!entry.uid.is_empty());
            assert!(
                line.windows(entry.uid.len()).any(|w| w == entry.uid),
                "the unique-id is bytes of the line"
            );
        }
        let _ = ListEntry::parse(line);
        let _ = parse_stat(&String::from_utf8_lossy(line));
        assert!(!printable(line).chars().any(char::is_control));
    }
    let caps = Capabilities::from_lines(lines.iter().copied());
    let _ = caps.has_sasl("PLAIN");
}

/// The certificate reader (what `popsync check` shows) and the fingerprint parser: any DER
/// is read without panicking, and a fingerprint that parses formats back to itself.
pub fn certificate(data: &[u8]) {
    let info = CertificateInfo::from_der(data);
    assert!(info.sha256.starts_with("sha256:"));
    if let Ok(pin) = parse_fingerprint(&String::from_utf8_lossy(data)) {
        assert_eq!(parse_fingerprint(&format_fingerprint(&pin)), Ok(pin));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_take_empty_and_simple_inputs() {
        for data in [
            &b""[..],
            b"\x00",
            b"\x05Subject: x\r\n\r\n..dot\r\n.\r\n+OK next",
            b"+OK [IN-USE] busy\n1 abc\n2 3000\nSASL PLAIN XOAUTH2\n",
            b"sha256:AB:CD",
        ] {
            codec(data);
            responses(data);
            certificate(data);
        }
    }
}
