//! Who a new message is from and what it is about, for notifications and the new-mail
//! hook: read from the header block captured while the message streamed to disk (no file
//! is read back), decoded with a real MIME parser (RFC 2047 words, any charset).

/// The header block is captured up to this size; longer headers are cut (and parsed as far
/// as they go).
pub const MAX_HEADER_CAPTURE: usize = 64 * 1024;

/// Sender and subject of one new message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    /// The sender's display name, else their address, else `(unknown sender)`.
    pub from: String,
    /// The decoded subject, else `(no subject)`.
    pub subject: String,
}

impl MessageSummary {
    /// Reads sender and subject from a message's header block (CRLF or LF line endings).
    pub fn from_headers(head: &[u8]) -> Self {
        let parsed = mail_parser::MessageParser::default().parse_headers(head);
        let from = parsed
            .as_ref()
            .and_then(|m| m.from())
            .and_then(|a| a.first())
            .and_then(|a| {
                a.name()
                    .filter(|n| !n.trim().is_empty())
                    .or(a.address())
                    .map(str::to_owned)
            });
        let subject = parsed
            .as_ref()
            .and_then(|m| m.subject())
            .map(str::to_owned)
            .filter(|s| !s.trim().is_empty());
        Self {
            from: clean(from.as_deref().unwrap_or("(unknown sender)")),
            subject: clean(subject.as_deref().unwrap_or("(no subject)")),
        }
    }
}

/// One line of text: control characters (a folded header's line breaks, escapes) become
/// spaces, runs of white space one space.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    out.trim_end().chars().take(200).collect()
}

/// Collects a message's header block as it streams by.
#[derive(Debug, Default)]
pub struct HeaderCapture {
    head: Vec<u8>,
    done: bool,
}

impl HeaderCapture {
    /// Feeds message data (as received). Stops collecting at the blank line that ends the
    /// headers, or at [`MAX_HEADER_CAPTURE`].
    pub fn feed(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        let room = MAX_HEADER_CAPTURE - self.head.len();
        let take = &data[..data.len().min(room)];
        let search_from = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(take);
        if let Some(end) = find_blank_line(&self.head[search_from..]) {
            self.head.truncate(search_from + end);
            self.done = true;
        } else if self.head.len() >= MAX_HEADER_CAPTURE {
            self.done = true;
        }
    }

    /// The summary of what was captured.
    pub fn summary(&self) -> MessageSummary {
        MessageSummary::from_headers(&self.head)
    }

    /// The captured header block.
    pub fn into_head(self) -> Vec<u8> {
        self.head
    }
}

/// Position just after the first blank line (`\n\n` or `\r\n\r\n`), if any.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\n', &buf[i..]) {
        let at = i + p;
        let rest = &buf[at + 1..];
        if rest.starts_with(b"\n") {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_words_are_decoded() {
        let s = MessageSummary::from_headers(
            b"From: =?UTF-8?B?5bGx55SwIOWkqumDjg==?= <taro@example.jp>\r\n\
              Subject: =?UTF-8?B?8J+OiSBQYXJ0eSB0aW1lIPCfmoA=?=\r\n\r\nbody",
        );
        assert_eq!(s.from, "山田 太郎");
        assert_eq!(s.subject, "🎉 Party time 🚀");
        let s = MessageSummary::from_headers(
            b"From: alice@example.org\nSubject: =?ISO-8859-1?Q?Caf=E9?= menu\n\tfolded\n\n",
        );
        assert_eq!(
            (s.from.as_str(), s.subject.as_str()),
            ("alice@example.org", "Café menu folded")
        );
    }

    #[test]
    fn missing_and_garbage_headers_give_placeholders() {
        let s = MessageSummary::from_headers(b"X-Nothing: here\r\n\r\n");
        assert_eq!(
            (s.from.as_str(), s.subject.as_str()),
            ("(unknown sender)", "(no subject)")
        );
        let s = MessageSummary::from_headers(b"\xff\xfe\x00garbage");
        assert_eq!(s.from, "(unknown sender)");
    }

    #[test]
    fn the_capture_stops_at_the_blank_line_in_any_chunking() {
        let msg = b"From: a@b\r\nSubject: hi\r\n\r\nFrom: not@this\r\n";
        for chunk in 1..msg.len() {
            let mut c = HeaderCapture::default();
            for piece in msg.chunks(chunk) {
                c.feed(piece);
            }
            assert_eq!(c.head, b"From: a@b\r\nSubject: hi\r\n\r\n", "chunk {chunk}");
            assert_eq!(c.summary().from, "a@b");
        }
    }

    #[test]
    fn the_capture_is_bounded() {
        let mut c = HeaderCapture::default();
        let long = vec![b'x'; 100_000];
        c.feed(b"Subject: ");
        c.feed(&long);
        c.feed(&long);
        assert_eq!(c.head.len(), MAX_HEADER_CAPTURE);
    }
}
