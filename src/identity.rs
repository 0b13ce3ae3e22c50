//! A message's identity by its content, for recognising it when the server's unique-ids
//! change (a mailbox renumbered by a server move, a restore from backup, a lost uidlist).
//!
//! The identity is the SHA-256 (its first 16 bytes) of the message's size on the server
//! and its header block: every header line, `Received:`, `Message-ID:` and `Date:`
//! included, up to the blank line that ends them, with CRLF line endings read as LF (the
//! server sends CRLF; a Maildir or mbox copy has LF). The same message gives the same
//! identity whether it is read from the server (`TOP n 0`, or as it is downloaded) or from
//! the copy popsync stored. Two different messages have the same identity only if their
//! headers are the same byte for byte and their sizes too: the same message delivered
//! twice. Such twins are never matched (see `poll::renumber`).

use sha2::{Digest as _, Sha256};

/// The identity's length in bytes.
pub const LEN: usize = 16;

/// A message's identity.
pub type Identity = [u8; LEN];

/// The identity of a message of `size` octets on the server (as its LIST gives it) whose
/// header block is `head`: as received or as stored, with or without the blank line that
/// ends it, and with anything after that line ignored.
pub fn of(head: &[u8], size: u64) -> Identity {
    let mut hash = Sha256::new();
    hash.update(b"popsync identity 1\0");
    hash.update(size.to_le_bytes());
    let mut rest = head;
    loop {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        hash.update(line);
        hash.update(b"\n");
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    let digest = hash.finalize();
    let mut id = [0u8; LEN];
    id.copy_from_slice(&digest[..LEN]);
    id
}

/// A stored copy read a piece at a time (see [`StoredCopy::read_lf`]).
#[derive(Debug, Default)]
pub struct Reading {
    head: crate::summary::Head,
    len: u64,
    lfs: u64,
    last: Option<u8>,
}

impl Reading {
    /// The next bytes of the copy, as stored (LF line endings).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.head.feed(bytes);
        self.len += bytes.len() as u64;
        self.lfs += memchr::memchr_iter(b'\n', bytes).count() as u64;
        if let Some(&b) = bytes.last() {
            self.last = Some(b);
        }
    }

    pub fn finish(self) -> StoredCopy {
        let wire = self.len + self.lfs;
        let mut sizes = vec![wire];
        if self.last == Some(b'\n') {
            sizes.push(wire - 2);
        }
        StoredCopy {
            head: self.head.block().to_vec(),
            sizes,
        }
    }
}

/// A message's copy as popsync stored it, as far as recognising it needs: its header
/// block, and the sizes it may have had on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCopy {
    pub head: Vec<u8>,
    pub sizes: Vec<u64>,
}

impl StoredCopy {
    /// A copy stored with LF line endings (each was a CRLF on the wire). Its last line end
    /// may be one popsync added (POP3 cannot carry a message without one), so the size
    /// without it is a possibility too. (A message that had bare LFs on the server has a
    /// smaller size there than either, and is simply not recognised.)
    #[cfg(test)]
    pub fn of_lf(stored: &[u8]) -> Self {
        Self::read_lf(stored).expect("reading a slice cannot fail")
    }

    /// The same, read from `r` a piece at a time: a message of any size takes no more
    /// memory than its header block (at most `summary::MAX_HEADER_CAPTURE`, captured as a
    /// download captures it).
    pub fn read_lf(mut r: impl std::io::Read) -> std::io::Result<Self> {
        let mut copy = Reading::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => copy.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(copy.finish())
    }

    /// The identities it may have.
    pub fn identities(&self) -> impl Iterator<Item = Identity> + '_ {
        self.sizes.iter().map(|size| of(&self.head, *size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_headers_read_from_the_server_or_a_stored_copy_are_the_same_identity() {
        let wire = b"Received: from a\r\n\tby b\r\nMessage-ID: <1@x>\r\nSubject: hi\r\n\r\n";
        let stored = b"Received: from a\n\tby b\nMessage-ID: <1@x>\nSubject: hi\n\nbody\n";
        assert_eq!(of(wire, 100), of(stored, 100));
        assert_eq!(of(wire, 100), of(&wire[..wire.len() - 2], 100));
        // A different size, a different header line, a header line more: different.
        assert_ne!(of(wire, 100), of(wire, 101));
        assert_ne!(
            of(wire, 100),
            of(
                b"Received: from a\n\tby c\nMessage-ID: <1@x>\nSubject: hi\n",
                100
            )
        );
        assert_ne!(
            of(wire, 100),
            of(
                b"Received: from a\n\tby b\nMessage-ID: <1@x>\nSubject: hi\nX: y\n",
                100
            )
        );
        // The body is not part of it.
        assert_eq!(
            of(stored, 100),
            of(
                b"Received: from a\n\tby b\nMessage-ID: <1@x>\nSubject: hi\n\nother\n",
                100
            )
        );
    }

    #[test]
    fn a_stored_copy_counts_its_line_ends_as_crlf_and_may_have_had_no_last_one() {
        let copy = StoredCopy::of_lf(b"a: b\n\nbody\n");
        assert_eq!(copy.head, b"a: b\n\n");
        assert_eq!(copy.sizes, [14, 12]);
        assert_eq!(StoredCopy::of_lf(b"a: b\n\nbody").sizes, [12]);
        assert_eq!(StoredCopy::of_lf(b"a: b\n").head, b"a: b\n");
    }
}
