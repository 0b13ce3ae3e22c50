//! What a message's headers say, for notifications, the new-mail hook and an mbox `From `
//! line: who it is from and what it is about (decoded with a real MIME parser: RFC 2047
//! words, any charset), and its envelope sender.
//!
//! The header block is captured once, while the message streams to disk (no file is read
//! back), and parsed at most once, when something first asks ([`Head`]).

use std::cell::OnceCell;

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
        Parsed::from_headers(head).summary
    }
}

/// A message's header block as it streamed by, and what it says, parsed on first use.
#[derive(Debug, Default)]
pub struct Head {
    capture: HeaderCapture,
    parsed: OnceCell<Parsed>,
}

impl Head {
    /// Feeds message data (as received).
    pub fn feed(&mut self, data: &[u8]) {
        self.capture.feed(data);
    }

    /// The header block as it arrived (up to and including the blank line that ends it, at
    /// most [`MAX_HEADER_CAPTURE`] bytes).
    pub fn block(&self) -> &[u8] {
        &self.capture.head
    }

    /// Sender and subject.
    pub fn summary(&self) -> MessageSummary {
        self.parsed().summary.clone()
    }

    /// The envelope sender for an mbox `From ` line: Return-Path, else From, else
    /// MAILER-DAEMON; only characters that cannot break the line.
    pub fn sender(&self) -> &str {
        &self.parsed().sender
    }

    /// The Message-ID, without its angle brackets, if the message has a usable one.
    pub fn message_id(&self) -> Option<&str> {
        self.parsed().message_id.as_deref()
    }

    /// The Date header, if it is a date: year, month, day, hour, minute, second, and the
    /// zone's offset east of UTC in minutes.
    pub fn date(&self) -> Option<MessageDate> {
        self.parsed().date
    }
}

/// A message's own date (its Date header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageDate {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// Minutes east of UTC.
    pub offset_minutes: i16,
}

impl MessageDate {
    fn from_parsed(d: &mail_parser::DateTime) -> Option<Self> {
        let valid = (1..=12).contains(&d.month)
            && (1..=31).contains(&d.day)
            && d.hour < 24
            && d.minute < 60
            && d.second < 61
            && (1900..=9999).contains(&d.year)
            && d.tz_hour < 24
            && d.tz_minute < 60;
        let offset = (d.tz_hour as i16) * 60 + d.tz_minute as i16;
        valid.then_some(Self {
            year: d.year,
            month: d.month,
            day: d.day,
            hour: d.hour,
            minute: d.minute,
            second: d.second.min(59),
            offset_minutes: if d.tz_before_gmt { -offset } else { offset },
        })
    }
}

impl Head {
    fn parsed(&self) -> &Parsed {
        self.parsed
            .get_or_init(|| Parsed::from_headers(&self.capture.head))
    }
}

/// What one parse of a header block gives.
#[derive(Debug)]
struct Parsed {
    summary: MessageSummary,
    sender: String,
    message_id: Option<String>,
    date: Option<MessageDate>,
}

impl Parsed {
    fn from_headers(head: &[u8]) -> Self {
        let parsed = mail_parser::MessageParser::default().parse_headers(head);
        let m = parsed.as_ref();
        let from = m
            .and_then(|m| m.from())
            .and_then(|a| a.first())
            .and_then(|a| {
                a.name()
                    .filter(|n| !n.trim().is_empty())
                    .or(a.address())
                    .map(str::to_owned)
            });
        let subject = m
            .and_then(|m| m.subject())
            .map(str::to_owned)
            .filter(|s| !s.trim().is_empty());
        let sender = m.and_then(|m| {
            let rp = m
                .return_address()
                .map(str::to_owned)
                .filter(|a| !a.is_empty() && a != "<>");
            rp.or_else(|| {
                m.from()
                    .and_then(|a| a.first())
                    .and_then(|a| a.address())
                    .map(str::to_owned)
            })
        });
        let message_id = m
            .and_then(|m| m.message_id())
            .map(str::to_owned)
            .filter(|id| {
                !id.is_empty() && id.len() <= 512 && id.chars().all(|c| c.is_ascii_graphic())
            });
        let date = m.and_then(|m| m.date()).and_then(MessageDate::from_parsed);
        Self {
            message_id,
            date,
            summary: MessageSummary {
                from: clean(from.as_deref().unwrap_or("(unknown sender)")),
                subject: clean(subject.as_deref().unwrap_or("(no subject)")),
            },
            sender: match sender {
                Some(a)
                    if !a.is_empty()
                        && a.len() <= 256
                        && a.chars()
                            .all(|c| c.is_ascii_graphic() && c != '<' && c != '>') =>
                {
                    a
                }
                _ => "MAILER-DAEMON".to_owned(),
            },
        }
    }
}

/// The longest sender or subject shown, in characters; longer ones end in "…".
pub const MAX_SHOWN: usize = 80;

/// One line of text fit for a popup: control characters (a folded header's line breaks,
/// escapes) become spaces, runs of white space one space; invisible format characters (bidi
/// overrides that make text read backwards, zero-width characters) are removed, but for the
/// joiner inside an emoji sequence; at most [`MAX_SHOWN`] characters, the last an ellipsis
/// when it was longer.
fn clean(s: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    let mut space = false;
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\u{200D}' {
            let joins_emoji = out.last().is_some_and(|&p| is_emoji(p))
                && chars.get(i + 1).is_some_and(|&n| is_emoji(n));
            if joins_emoji {
                out.push(c);
            }
            continue;
        }
        if is_invisible(c) {
            continue;
        }
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
    while out.last() == Some(&' ') {
        out.pop();
    }
    if out.len() > MAX_SHOWN {
        out.truncate(MAX_SHOWN - 1);
        while out.last().is_some_and(|c| *c == ' ' || *c == '\u{200D}') {
            out.pop();
        }
        out.push('…');
    }
    out.into_iter().collect()
}

/// Format characters that show nothing but can change how the text around them reads:
/// bidi marks, embeddings, overrides and isolates; zero-width spaces and joiners; the word
/// joiner and invisible operators; the byte order mark; interlinear annotation marks.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Characters that take part in emoji sequences (pictographs, symbols, the variation
/// selector and skin tones).
fn is_emoji(c: char) -> bool {
    matches!(c, '\u{2600}'..='\u{27BF}' | '\u{FE0F}' | '\u{1F000}'..='\u{1FAFF}')
}

/// Collects a message's header block as it streams by.
#[derive(Debug, Default)]
struct HeaderCapture {
    head: Vec<u8>,
    done: bool,
}

impl HeaderCapture {
    /// Feeds message data (as received). Stops collecting at the blank line that ends the
    /// headers, or at [`MAX_HEADER_CAPTURE`].
    fn feed(&mut self, data: &[u8]) {
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
            let mut h = Head::default();
            for piece in msg.chunks(chunk) {
                h.feed(piece);
            }
            assert_eq!(
                h.capture.head, b"From: a@b\r\nSubject: hi\r\n\r\n",
                "chunk {chunk}"
            );
            assert_eq!(h.summary().from, "a@b");
            assert_eq!(h.sender(), "a@b");
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

    #[test]
    fn the_envelope_sender_falls_back_to_from_then_mailer_daemon() {
        let sender = |head: &[u8]| Parsed::from_headers(head).sender;
        assert_eq!(
            sender(b"Return-Path: <rp@example.org>\nFrom: Bob <bob@example.net>\n\n"),
            "rp@example.org"
        );
        assert_eq!(
            sender(b"From: Bob <bob@example.net>\n\n"),
            "bob@example.net"
        );
        assert_eq!(
            sender(b"Return-Path: <>\nFrom: bob@example.net\n\n"),
            "bob@example.net"
        );
        assert_eq!(sender(b"Subject: none\n\n"), "MAILER-DAEMON");
        assert_eq!(sender(b"From: \"x\" <evil sender@x>\n\n"), "MAILER-DAEMON");
    }

    #[test]
    fn long_text_ends_in_an_ellipsis_and_invisible_format_characters_go() {
        let long = "word ".repeat(40);
        let s = MessageSummary::from_headers(format!("Subject: {long}\r\n\r\n").as_bytes());
        assert_eq!(s.subject.chars().count(), MAX_SHOWN, "{:?}", s.subject);
        assert!(s.subject.ends_with("word…"), "{:?}", s.subject);
        let exactly = "x".repeat(MAX_SHOWN);
        assert_eq!(clean(&exactly), exactly, "at the limit nothing is cut");
        // "invoice\u{202E}fdp.exe" would read "invoiceexe.pdf".
        assert_eq!(clean("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(
            clean("a\u{200B}b\u{2066}c\u{2069}\u{FEFF}d\u{200F}"),
            "abcd"
        );
        // The joiner that makes one family of three emoji stays; a stray one goes.
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(clean(family), family);
        assert_eq!(clean("a\u{200D}b"), "ab");
    }
}
