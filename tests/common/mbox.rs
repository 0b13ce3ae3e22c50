//! Reading an mbox back, three ways: a strict mboxrd reader written here, Python's `mailbox`
//! module and procmail's `formail -s` (both independent of popsync), so a test can check
//! that every reader sees the same messages.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One message read from an mbox: its `From ` line (without the newline) and its content
/// with the mboxrd quoting undone and the separating blank line removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub from_line: String,
    pub content: Vec<u8>,
}

/// Undoes mboxrd quoting: one `>` less on every line matching `^>+From `.
pub fn unquote(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if quotes > 0 && line[quotes..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Parses an mboxrd file strictly: it must be empty or start with `From `; every `From ` line
/// after the first must follow a blank line; the file must end with a blank line. Panics
/// with the offset of anything else.
pub fn parse(data: &[u8]) -> Vec<Entry> {
    if data.is_empty() {
        return Vec::new();
    }
    assert!(
        data.starts_with(b"From "),
        "the mbox does not start with a From line: {:?}",
        String::from_utf8_lossy(&data[..data.len().min(80)])
    );
    // Offsets of every line that starts with "From ".
    let mut starts = vec![0];
    let mut i = 0;
    while let Some(p) = memchr_nl(&data[i..]) {
        let next = i + p + 1;
        if data[next..].starts_with(b"From ") {
            assert!(
                next >= 2 && data[next - 2] == b'\n',
                "a From line at offset {next} does not follow a blank line (torn or interleaved append)"
            );
            starts.push(next);
        }
        i = next;
        if i >= data.len() {
            break;
        }
    }
    assert!(
        data.ends_with(b"\n\n"),
        "the mbox does not end with a blank line (torn append?): ...{:?}",
        String::from_utf8_lossy(&data[data.len().saturating_sub(80)..])
    );
    starts.push(data.len());
    starts
        .windows(2)
        .map(|w| {
            let raw = &data[w[0]..w[1] - 1]; // without the separating blank line
            let nl = memchr_nl(raw).expect("a From line ends");
            Entry {
                from_line: String::from_utf8_lossy(&raw[..nl]).into_owned(),
                content: unquote(&raw[nl + 1..]),
            }
        })
        .collect()
}

fn memchr_nl(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

/// The messages in an mbox as a multiset of contents (strict parse).
pub fn contents(path: &Path) -> BTreeMap<Vec<u8>, usize> {
    let data = std::fs::read(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for e in parse(&data) {
        *out.entry(e.content).or_insert(0) += 1;
    }
    out
}

/// The messages as Python's `mailbox.mbox` reads them (the `From ` line is not part of a
/// message there; the quoting is undone here, as Python leaves it).
pub fn python_contents(path: &Path) -> Vec<Vec<u8>> {
    let script = r#"
import mailbox, sys
box = mailbox.mbox(sys.argv[1], create=False)
out = sys.stdout.buffer
for key in box.iterkeys():
    data = box.get_bytes(key)
    out.write(b"%d\n" % len(data))
    out.write(data)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python's mailbox module could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    length_prefixed(&out.stdout)
        .into_iter()
        .map(|m| unquote(&m))
        .collect()
}

/// The messages as `formail -s` splits the mbox: each with its `From ` line and trailing
/// blank line, which are taken off here, and the quoting undone.
pub fn formail_contents(path: &Path) -> Vec<Vec<u8>> {
    let input = std::fs::File::open(path).unwrap();
    let out = Command::new("formail")
        .args([
            "-s",
            "sh",
            "-c",
            "f=$(mktemp); cat > \"$f\"; wc -c < \"$f\" | tr -d ' '; cat \"$f\"; rm -f \"$f\"",
        ])
        .stdin(input)
        .output()
        .expect("formail runs");
    assert!(
        out.status.success(),
        "formail -s could not split {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    length_prefixed(&out.stdout)
        .into_iter()
        .map(|m| {
            assert!(
                m.starts_with(b"From "),
                "formail gave a message without From line"
            );
            assert!(
                m.ends_with(b"\n\n"),
                "formail gave a message without the blank line"
            );
            let nl = memchr_nl(&m).unwrap();
            unquote(&m[nl + 1..m.len() - 1])
        })
        .collect()
}

/// Splits `LEN\nBYTES` records.
fn length_prefixed(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let nl = memchr_nl(data).expect("a length line");
        let len: usize = std::str::from_utf8(&data[..nl])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        out.push(data[nl + 1..nl + 1 + len].to_vec());
        data = &data[nl + 1 + len..];
    }
    out
}

/// A multiset of a list of messages.
pub fn multiset(messages: Vec<Vec<u8>>) -> BTreeMap<Vec<u8>, usize> {
    let mut out = BTreeMap::new();
    for m in messages {
        *out.entry(m).or_insert(0) += 1;
    }
    out
}
