//! What the server says: status lines with their RFC 2449/3206 response codes, capabilities,
//! and the entries of UIDL and LIST listings.
//!
//! Parsing is lenient where real servers differ (case of `+OK`, several spaces between
//! fields, unique-ids longer than RFC 1939's 70 characters) and keeps server bytes exact:
//! a unique-id is the bytes the server sent, not a re-encoded string.

use std::fmt;

/// A message number in the current session (RFC 1939: 1-based, valid for one session only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgNum(pub u32);

impl fmt::Display for MsgNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Extended response codes (RFC 2449 section 8, RFC 3206).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCode {
    /// `[IN-USE]`: the mailbox is locked by another session; try later.
    InUse,
    /// `[LOGIN-DELAY]`: logged in too recently; try later.
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary server problem.
    SysTemp,
    /// `[SYS/PERM]`: a permanent server problem needing an administrator.
    SysPerm,
    /// `[AUTH]`: the credentials were refused.
    Auth,
    /// Any other code, upper-cased.
    Other(String),
}

impl ResponseCode {
    fn parse(code: &str) -> Self {
        let upper = code.to_ascii_uppercase();
        match upper.as_str() {
            "IN-USE" => Self::InUse,
            "LOGIN-DELAY" => Self::LoginDelay,
            "SYS/TEMP" => Self::SysTemp,
            "SYS/PERM" => Self::SysPerm,
            "AUTH" => Self::Auth,
            _ => Self::Other(upper),
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::InUse => "IN-USE",
            Self::LoginDelay => "LOGIN-DELAY",
            Self::SysTemp => "SYS/TEMP",
            Self::SysPerm => "SYS/PERM",
            Self::Auth => "AUTH",
            Self::Other(s) => s,
        };
        f.write_str(s)
    }
}

/// A parsed status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `+OK text`
    Ok { text: String },
    /// `-ERR [CODE] text`
    Err {
        code: Option<ResponseCode>,
        text: String,
    },
    /// `+ data`: a SASL continuation (RFC 5034).
    Continue { data: String },
}

impl Status {
    /// Parses a status line (without its CRLF). Returns `None` for anything that is not a
    /// status line.
    pub fn parse(line: &[u8]) -> Option<Self> {
        let text = printable(line);
        let (head, rest) = match text.find(' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text.as_str(), ""),
        };
        if head.eq_ignore_ascii_case("+OK") {
            Some(Self::Ok {
                text: rest.to_owned(),
            })
        } else if head.eq_ignore_ascii_case("-ERR") {
            let (code, text) = split_code(rest);
            Some(Self::Err {
                code,
                text: text.to_owned(),
            })
        } else if head == "+" {
            Some(Self::Continue {
                data: rest.to_owned(),
            })
        } else {
            None
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }

    pub fn code(&self) -> Option<&ResponseCode> {
        match self {
            Self::Err { code, .. } => code.as_ref(),
            _ => None,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Self::Ok { text } | Self::Err { text, .. } => text,
            Self::Continue { data } => data,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok { text } => write!(f, "+OK {text}"),
            Self::Err {
                code: Some(code),
                text,
            } => write!(f, "-ERR [{code}] {text}"),
            Self::Err { code: None, text } => write!(f, "-ERR {text}"),
            Self::Continue { data } => write!(f, "+ {data}"),
        }
    }
}

fn split_code(rest: &str) -> (Option<ResponseCode>, &str) {
    if let Some(after) = rest.strip_prefix('[')
        && let Some(end) = after.find(']')
    {
        // The code is the first word inside the brackets ("[LOGIN-DELAY 900]" has an argument).
        let inner = &after[..end];
        let code = inner.split(' ').next().unwrap_or(inner);
        return (
            Some(ResponseCode::parse(code)),
            after[end + 1..].trim_start(),
        );
    }
    (None, rest)
}

/// Server bytes made safe for messages and logs: invalid UTF-8 replaced, control characters
/// escaped, so a hostile server cannot forge log lines or terminal escapes.
pub fn printable(bytes: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(bytes);
    if lossy.chars().any(char::is_control) {
        lossy.chars().flat_map(char::escape_debug).collect()
    } else {
        lossy.into_owned()
    }
}

/// The server's capabilities (RFC 2449 CAPA), or the defaults of an RFC 1939 server that
/// does not know CAPA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The capability lines as sent (printable form), for display.
    pub lines: Vec<String>,
    /// Whether the server answered CAPA at all.
    pub known: bool,
    pub stls: bool,
    pub user: bool,
    pub uidl: bool,
    pub top: bool,
    pub pipelining: bool,
    pub resp_codes: bool,
    /// SASL mechanisms, upper-cased.
    pub sasl: Vec<String>,
    /// `LOGIN-DELAY n`: the server refuses a new login within `n` seconds of the last.
    pub login_delay: Option<u64>,
}

impl Capabilities {
    /// Builds capabilities from the data lines of a CAPA response.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut caps = Self {
            known: true,
            ..Self::default()
        };
        for raw in lines {
            let line = printable(raw);
            let mut words = line.split_ascii_whitespace();
            let Some(name) = words.next() else { continue };
            match name.to_ascii_uppercase().as_str() {
                "STLS" => caps.stls = true,
                "USER" => caps.user = true,
                "UIDL" => caps.uidl = true,
                "TOP" => caps.top = true,
                "PIPELINING" => caps.pipelining = true,
                "RESP-CODES" => caps.resp_codes = true,
                "SASL" => caps.sasl.extend(words.map(|w| w.to_ascii_uppercase())),
                "LOGIN-DELAY" => caps.login_delay = words.next().and_then(|n| n.parse().ok()),
                _ => {}
            }
            caps.lines.push(line);
        }
        caps
    }

    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

/// One line of a UIDL listing: `msg uid`. The unique-id is kept as the exact bytes sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidlEntry<'a> {
    pub msg: MsgNum,
    pub uid: &'a [u8],
}

impl<'a> UidlEntry<'a> {
    /// Parses `msg SP uid`, tolerating several spaces or tabs and trailing blanks. The uid is
    /// everything after the separator (RFC 1939 allows 0x21..0x7E only; other bytes are kept
    /// as sent so that they are at least compared exactly).
    pub fn parse(line: &'a [u8]) -> Option<Self> {
        let (msg, rest) = split_number(line)?;
        let uid = trim_blanks(rest);
        if uid.is_empty() {
            return None;
        }
        Some(Self { msg, uid })
    }
}

/// A whole UIDL listing, in the server's order. The unique-ids share one buffer: a listing
/// of 100,000 messages takes about 30 bytes a message, with no allocation for each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uidl {
    bytes: Vec<u8>,
    /// Each entry's message number, and where its unique-id ends in `bytes` (it starts
    /// where the one before ends).
    entries: Vec<(MsgNum, u32)>,
}

impl Uidl {
    /// Adds an entry. A listing is limited to 64 MiB before it gets here
    /// (`MAX_LISTING`); more than 4 GiB of unique-ids is refused all the same.
    pub fn push(&mut self, entry: UidlEntry<'_>) -> Result<(), TooLong> {
        let end = self
            .bytes
            .len()
            .checked_add(entry.uid.len())
            .and_then(|end| u32::try_from(end).ok())
            .ok_or(TooLong)?;
        self.bytes.extend_from_slice(entry.uid);
        self.entries.push((entry.msg, end));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = UidlEntry<'_>> {
        self.entries.iter().enumerate().map(|(i, &(msg, end))| {
            let start = match i {
                0 => 0,
                _ => self.entries[i - 1].1 as usize,
            };
            UidlEntry {
                msg,
                uid: &self.bytes[start..end as usize],
            }
        })
    }
}

impl<'a> FromIterator<UidlEntry<'a>> for Uidl {
    /// For tests and tools; panics past 4 GiB of unique-ids.
    fn from_iter<I: IntoIterator<Item = UidlEntry<'a>>>(iter: I) -> Self {
        let mut out = Self::default();
        for e in iter {
            out.push(e).expect("listing under 4 GiB");
        }
        out
    }
}

/// A listing whose unique-ids add up to more than 4 GiB.
#[derive(Debug)]
pub struct TooLong;

/// One line of a LIST listing: `msg size`. Sizes are approximate on many servers (LF vs
/// CRLF counting): use them for limits and progress, never for framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListEntry {
    pub msg: MsgNum,
    pub size: u64,
}

impl ListEntry {
    pub fn parse(line: &[u8]) -> Option<Self> {
        let (msg, rest) = split_number(line)?;
        let rest = trim_blanks(rest);
        let end = rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        let size = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        Some(Self { msg, size })
    }
}

/// Parses the single-line answer to STAT: `+OK count size`.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let mut words = text.split_ascii_whitespace();
    let count = words.next()?.parse().ok()?;
    let size = words.next()?.parse().ok()?;
    Some((count, size))
}

fn split_number(line: &[u8]) -> Option<(MsgNum, &[u8])> {
    let line = trim_blanks(line);
    let end = line.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || !matches!(line[end], b' ' | b'\t') {
        return None;
    }
    let n: u32 = std::str::from_utf8(&line[..end]).ok()?.parse().ok()?;
    if n == 0 {
        return None;
    }
    Some((MsgNum(n), &line[end..]))
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_with_and_without_codes() {
        assert_eq!(
            Status::parse(b"+OK Dovecot ready."),
            Some(Status::Ok {
                text: "Dovecot ready.".into()
            })
        );
        assert_eq!(
            Status::parse(b"-ERR [AUTH] Authentication failed."),
            Some(Status::Err {
                code: Some(ResponseCode::Auth),
                text: "Authentication failed.".into()
            })
        );
        assert_eq!(
            Status::parse(b"-ERR [LOGIN-DELAY 900] wait")
                .unwrap()
                .code(),
            Some(&ResponseCode::LoginDelay)
        );
        assert_eq!(
            Status::parse(b"-err [in-use] locked").unwrap().code(),
            Some(&ResponseCode::InUse)
        );
        assert_eq!(
            Status::parse(b"+ ").unwrap(),
            Status::Continue { data: "".into() }
        );
        assert_eq!(Status::parse(b"+OK").unwrap().text(), "");
        assert_eq!(Status::parse(b"HELLO there"), None);
        assert_eq!(Status::parse(b"+OKAY"), None);
    }

    #[test]
    fn hostile_status_text_is_made_printable() {
        let s = Status::parse(b"-ERR \x1b[31mred\xff").unwrap();
        assert_eq!(s.text(), "\\u{1b}[31mred\u{fffd}");
    }

    #[test]
    fn uidl_entries_are_parsed_leniently_and_kept_exact() {
        assert_eq!(
            UidlEntry::parse(b"1 whqtswO00WBw418f9t5JxYwZ"),
            Some(UidlEntry {
                msg: MsgNum(1),
                uid: b"whqtswO00WBw418f9t5JxYwZ"
            })
        );
        assert_eq!(UidlEntry::parse(b"12    abc  ").unwrap().uid, b"abc");
        assert_eq!(UidlEntry::parse(b"3\t../../x").unwrap().uid, b"../../x");
        let long = [b'x'; 200];
        let mut line = b"4 ".to_vec();
        line.extend_from_slice(&long);
        assert_eq!(UidlEntry::parse(&line).unwrap().uid, long.as_slice());
        assert_eq!(UidlEntry::parse(b"x abc"), None);
        assert_eq!(UidlEntry::parse(b"0 abc"), None);
        assert_eq!(UidlEntry::parse(b"5"), None);
        assert_eq!(UidlEntry::parse(b"5 "), None);
    }

    #[test]
    fn list_entries() {
        assert_eq!(
            ListEntry::parse(b"2 4096"),
            Some(ListEntry {
                msg: MsgNum(2),
                size: 4096
            })
        );
        assert_eq!(ListEntry::parse(b"2  4096 extra").unwrap().size, 4096);
        assert_eq!(ListEntry::parse(b"2 big"), None);
        assert_eq!(parse_stat("2 320"), Some((2, 320)));
        assert_eq!(parse_stat("nope"), None);
    }

    #[test]
    fn capabilities() {
        let lines: Vec<&[u8]> = vec![
            b"TOP",
            b"UIDL",
            b"RESP-CODES",
            b"PIPELINING",
            b"STLS",
            b"user",
            b"SASL PLAIN login",
            b"LOGIN-DELAY 900",
        ];
        let caps = Capabilities::from_lines(lines);
        assert_eq!(caps.login_delay, Some(900));
        assert!(caps.known && caps.stls && caps.user && caps.uidl && caps.pipelining);
        assert!(caps.has_sasl("PLAIN") && caps.has_sasl("LOGIN") && !caps.has_sasl("XOAUTH2"));
    }
}
