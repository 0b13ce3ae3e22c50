//! Delivery into an IMAP mailbox, against the real Dovecot's IMAP service (beside its POP3
//! in the same test Dovecot): user1's POP3 mailbox is fetched into user2's IMAP mailbox,
//! and what arrived is read back by the tests' own IMAP client, byte for byte.

mod common;

use common::dovecot::{Dovecot, ImapOptions, Options, PASSWORD, imap_capability_without};
use common::imap::{Imap, Stored, as_wire};
use common::{Home, corpus, describe, stdout};

fn server(imap: ImapOptions) -> Dovecot {
    Dovecot::start_with(Options {
        plaintext_auth: true,
        imap: Some(imap),
        ..Options::default()
    })
}

/// An account fetching user1 by POP3 into user2's IMAP mailbox `mailbox`, over implicit TLS
/// (the test CA trusted with ca-file).
fn config(server: &Dovecot, mailbox: &str, extra: &str) -> String {
    format!(
        "[[imap]]\nname = \"dest\"\nhost = \"127.0.0.1\"\nport = {imaps}\nca-file = {ca:?}\nusername = \"user2\"\npassword = {PASSWORD:?}\nmailbox = {mailbox:?}\n\n\
         [[account]]\nname = \"home\"\nhost = \"127.0.0.1\"\nport = {pop3s}\nca-file = {ca:?}\nusername = \"user1\"\npassword = {PASSWORD:?}\nimap-destination = \"dest\"\n{extra}\n",
        imaps = server.imaps_port,
        pop3s = server.tls_port,
        ca = server.ca_file.display().to_string(),
    )
}

/// The multiset of message bytes in user2's `mailbox`, after checking that none is marked
/// seen.
fn contents(
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

fn wanted(messages: &[Vec<u8>]) -> std::collections::BTreeMap<Vec<u8>, usize> {
    let mut out = std::collections::BTreeMap::new();
    for m in messages {
        *out.entry(as_wire(m)).or_insert(0) += 1;
    }
    out
}

fn assert_same(
    got: &std::collections::BTreeMap<Vec<u8>, usize>,
    want: &std::collections::BTreeMap<Vec<u8>, usize>,
) {
    common::assert_same_messages(got, want);
}

#[test]
fn three_hundred_varied_messages_arrive_byte_for_byte_unseen_with_their_own_dates() {
    let server = server(ImapOptions::default());
    // Two in three get a Date header, in zones east and west of UTC.
    let messages: Vec<Vec<u8>> = corpus::varied(17, 300, Some(3 << 20))
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if i % 3 == 2 {
                return m;
            }
            let zone = chrono::FixedOffset::east_opt((i as i32 % 27 - 13) * 1800).unwrap();
            let date = chrono::DateTime::from_timestamp(1_600_000_000 + i as i64 * 86_317, 0)
                .unwrap()
                .with_timezone(&zone);
            let mut with = format!("Date: {}\r\n", date.to_rfc2822()).into_bytes();
            with.extend_from_slice(&m);
            with
        })
        .collect();
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&config(&server, "INBOX", "retention = \"delete\""));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).starts_with("home: 300 new messages ("),
        "{}",
        describe(&out)
    );
    let (stored, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&messages));
    // Each message's internal date is its own Date header's, where it has one.
    let mut dated = 0;
    for m in &stored {
        let head_end = m
            .body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(m.body.len());
        let head = String::from_utf8_lossy(&m.body[..head_end]);
        if let Some(date) = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Date: "))
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d.trim()).ok())
        {
            // The same instant (a Maildir keeps no zone: Dovecot shows +0000).
            let internal =
                chrono::DateTime::parse_from_str(&m.internal_date, "%d-%b-%Y %H:%M:%S %z").unwrap();
            assert_eq!(internal.timestamp(), date.timestamp(), "uid {}", m.uid);
            dated += 1;
        }
    }
    assert_eq!(dated, 200, "messages with a readable date");
    // Delivered means deletable: the POP3 mailbox is empty.
    assert_eq!(server.message_count("user1"), 0);

    // A second fetch appends nothing.
    server.add_messages("user1", &messages[..3]);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (_, got) = contents(&server, "INBOX");
    let mut want = wanted(&messages);
    for m in &messages[..3] {
        *want.get_mut(&as_wire(m)).unwrap() += 1;
    }
    assert_same(&got, &want);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("no new messages"),
        "{}",
        describe(&out)
    );
    let (_, again) = contents(&server, "INBOX");
    assert_eq!(again, got);
}

#[test]
fn without_uidplus_multiappend_or_literal_plus_every_message_still_arrives_once() {
    let server = server(ImapOptions {
        capability: Some(imap_capability_without(&[
            "UIDPLUS",
            "MULTIAPPEND",
            "LITERAL+",
        ])),
        ..ImapOptions::default()
    });
    let messages = corpus::varied(23, 80, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&config(&server, "INBOX", ""));
    let out = home.run(&["fetch", "-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(
            "one APPEND per message, each message waiting for the server's go-ahead; the server tells no UIDs (no UIDPLUS)"
        ),
        "{}",
        describe(&out)
    );
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&messages));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (_, again) = contents(&server, "INBOX");
    assert_eq!(again, got);
}
