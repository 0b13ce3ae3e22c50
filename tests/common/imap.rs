//! A plain IMAP client of the tests' own, to look into the test Dovecot's IMAP mailboxes
//! independently of popsync: every message's UID, flags, internal date and raw bytes
//! (`UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])`). Plaintext LOGIN on loopback, so
//! the Dovecot must be started with `plaintext_auth`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use super::dovecot::{Dovecot, PASSWORD};

/// One message as the server holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub uid: u32,
    pub flags: String,
    pub internal_date: String,
    pub body: Vec<u8>,
}

/// An untagged response: its text (literals marked `<literal>`) and its literals.
pub type Untagged = (String, Vec<Vec<u8>>);

pub struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

impl Imap {
    pub fn login(server: &Dovecot, user: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", server.imap_port)).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut imap = Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            tag: 0,
        };
        let greeting = imap.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        imap.ok(&format!("LOGIN {user} \"{PASSWORD}\""));
        imap
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the IMAP server closed the connection");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    /// Sends a command; returns its untagged responses (literals inline) and tagged line.
    pub fn command(&mut self, command: &str) -> (Vec<Untagged>, String) {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        write!(self.writer, "{tag} {command}\r\n").unwrap();
        let mut untagged = Vec::new();
        loop {
            let mut text = self.line();
            if let Some(rest) = text.strip_prefix(&format!("{tag} ")) {
                return (untagged, rest.to_owned());
            }
            let mut literals = Vec::new();
            while let Some(n) = literal_len(&text) {
                let mut data = vec![0; n];
                self.reader.read_exact(&mut data).unwrap();
                literals.push(data);
                text.push_str(" <literal> ");
                let more = self.line();
                text.push_str(&more);
            }
            untagged.push((text, literals));
        }
    }

    /// A command that must succeed.
    pub fn ok(&mut self, command: &str) -> Vec<Untagged> {
        let (untagged, tagged) = self.command(command);
        assert!(tagged.starts_with("OK"), "{command}: {tagged}");
        untagged
    }

    /// Every message of `mailbox`, by UID.
    pub fn messages(&mut self, mailbox: &str) -> Vec<Stored> {
        self.ok(&format!("EXAMINE \"{mailbox}\""));
        let untagged = self.ok("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])");
        let mut out = Vec::new();
        for (text, literals) in untagged {
            if !text.contains(" FETCH ") || literals.is_empty() {
                continue;
            }
            let uid = after(&text, "UID ").parse().unwrap();
            let flags = text
                .split_once("FLAGS (")
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(f, _)| f.to_owned())
                .unwrap();
            let internal_date = text
                .split_once("INTERNALDATE \"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(d, _)| d.to_owned())
                .unwrap();
            out.push(Stored {
                uid,
                flags,
                internal_date,
                body: literals.into_iter().next().unwrap(),
            });
        }
        self.ok("CLOSE");
        out.sort_by_key(|m| m.uid);
        out
    }
}

fn after<'a>(text: &'a str, key: &str) -> &'a str {
    let rest = &text[text.find(key).unwrap() + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    &rest[..end]
}

fn literal_len(line: &str) -> Option<usize> {
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].parse().ok()
}

/// What a message the server stored as `original` is on the wire: what POP3 hands out
/// (a final line end added if missing), with every line ending in CRLF.
pub fn as_wire(original: &[u8]) -> Vec<u8> {
    let lf = super::corpus::as_delivered(original);
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 40);
    for &b in &lf {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// An account fetching user1 by POP3 into user2's IMAP mailbox `mailbox`, over implicit TLS
/// (the test CA trusted with ca-file).
pub fn config(server: &Dovecot, mailbox: &str, extra: &str) -> String {
    format!(
        "[[imap]]\nname = \"dest\"\ntimeout = \"3s\"\nhost = \"127.0.0.1\"\nport = {imaps}\nca-file = {ca:?}\nusername = \"user2\"\npassword = {PASSWORD:?}\nmailbox = {mailbox:?}\n\n\
         [[account]]\nname = \"home\"\nhost = \"127.0.0.1\"\nport = {pop3s}\nca-file = {ca:?}\nusername = \"user1\"\npassword = {PASSWORD:?}\nimap-destination = \"dest\"\n{extra}\n",
        imaps = server.imaps_port,
        pop3s = server.tls_port,
        ca = server.ca_file.display().to_string(),
    )
}

/// The multiset of message bytes in user2's `mailbox`, after checking that none is marked
/// seen.
pub fn contents(
    server: &Dovecot,
    mailbox: &str,
) -> (Vec<Stored>, std::collections::BTreeMap<Vec<u8>, usize>) {
    let stored = Imap::login(server, "user2").messages(mailbox);
    let mut multiset = std::collections::BTreeMap::new();
    for m in &stored {
        assert!(
            !m.flags.contains("\\Seen"),
            "uid {} is marked seen: {}",
            m.uid,
            m.flags
        );
        *multiset.entry(m.body.clone()).or_insert(0) += 1;
    }
    (stored, multiset)
}

pub fn wanted(messages: &[Vec<u8>]) -> std::collections::BTreeMap<Vec<u8>, usize> {
    let mut out = std::collections::BTreeMap::new();
    for m in messages {
        *out.entry(as_wire(m)).or_insert(0) += 1;
    }
    out
}

pub fn assert_same(
    got: &std::collections::BTreeMap<Vec<u8>, usize>,
    want: &std::collections::BTreeMap<Vec<u8>, usize>,
) {
    super::assert_same_messages(got, want);
}

/// Every one of `messages` is in the destination (`there`, as [`contents`] gives it) or
/// still on user1's POP3 server: nothing the destination lacks was deleted.
pub fn assert_none_lost(
    server: &Dovecot,
    messages: &[Vec<u8>],
    there: &std::collections::BTreeMap<Vec<u8>, usize>,
) {
    let on_server: std::collections::BTreeSet<Vec<u8>> =
        super::maildir_contents(&server.maildir("user1"))
            .keys()
            .map(|m| as_wire(m))
            .collect();
    for m in messages {
        let m = as_wire(m);
        assert!(
            there.contains_key(&m) || on_server.contains(&m),
            "deleted from the POP3 server but not in the destination: {:?}",
            String::from_utf8_lossy(&m[..m.len().min(60)])
        );
    }
}
