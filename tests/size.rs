//! The size rules against a real Dovecot: `max-size` with `oversize = "skip"` and
//! `"delete"`, and `headers-only-over` (TOP), into a Maildir and into an mbox. Messages are
//! built to exact sizes, as the server lists them (every line end counted as CRLF), and
//! Dovecot's own log says what was downloaded (`top=`, `retr=`, `del=` at logout).

mod common;

use common::corpus::{self, wire_size};
use common::dovecot::Dovecot;
use common::{
    Home, account_toml, account_toml_to, assert_same_messages, describe, expected_contents,
    maildir_contents,
};

/// The header block of a large message `id`, ending with the blank line.
fn big_head(id: &str) -> Vec<u8> {
    format!(
        "Return-Path: <big-sender@example.org>\n\
         Received: from mx.example.org (mx.example.org [192.0.2.7])\n\
         \tby mail.example.net (Postfix) with ESMTPS id {id}; Tue, 14 Nov 2023 10:00:00 +0000\n\
         From: Big Sender <big-sender@example.org>\n\
         To: user@example.net\n\
         Subject: the whole archive ({id})\n\
         Message-ID: <{id}@example.org>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=us-ascii\n\n"
    )
    .into_bytes()
}

/// A message `id` that the server lists as exactly `wire` bytes: [`big_head`], then body
/// lines that each say they are body.
fn sized(id: &str, wire: usize) -> Vec<u8> {
    let mut m = big_head(id);
    let text = format!("body of {id} ");
    // Lines of 78 bytes on the wire (the line end counted as CRLF), then two that make up
    // the rest.
    let mut lines = Vec::new();
    let mut rest = wire - wire_size(&m);
    assert!(rest > 200);
    while rest > 160 {
        lines.push(78);
        rest -= 78;
    }
    lines.extend([rest / 2, rest - rest / 2]);
    for wire_len in lines {
        m.extend(text.bytes().cycle().take(wire_len - 2));
        m.push(b'\n');
    }
    assert_eq!(wire_size(&m), wire);
    m
}

/// Whether `hay` contains `needle`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What Dovecot logged for each of user1's sessions at logout, as "top=T, retr=R, del=D/M":
/// how many messages it sent for TOP and RETR, how many it deleted of how many.
fn sessions(server: &Dovecot) -> Vec<String> {
    let count = |s: &str, key: &str| -> String {
        let v = &s[s.find(key).unwrap_or_else(|| panic!("{key} in {s}")) + key.len()..];
        v[..v.find([',', ' ']).unwrap_or(v.len())].to_owned()
    };
    server
        .log()
        .lines()
        .filter(|l| l.contains("pop3(user1)") && l.contains("Logged out"))
        .map(|l| {
            let top = count(l, "top=");
            let retr = count(l, "retr=");
            format!(
                "top={}, retr={}, del={}",
                top.split('/').next().unwrap(),
                retr.split('/').next().unwrap(),
                count(l, "del=")
            )
        })
        .collect()
}

/// `popsync status` text for the only account: its messages line.
fn status_messages_line(home: &Home) -> String {
    let out = home.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    common::stdout(&out)
        .lines()
        .find(|l| l.trim_start().starts_with("messages:"))
        .unwrap_or_else(|| panic!("no messages line: {}", describe(&out)))
        .trim()
        .to_owned()
}

/// Small messages (2-4 KB) from the corpus.
fn small(seed: u64, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| corpus::message(seed, i, corpus::Sizes::Small))
        .collect()
}

#[test]
fn messages_over_max_size_stay_on_the_server_are_reported_and_are_not_downloaded_later_either() {
    let server = Dovecot::start();
    let smalls = small(60, 3);
    // At the limit exactly still comes; one byte over does not.
    let at_limit = sized("at-limit", 20_000);
    let over = sized("one-over", 20_001);
    let huge = sized("huge", 300_000);
    let mut on_server = smalls.clone();
    on_server.extend([at_limit.clone(), over, huge]);
    server.add_messages("user1", &on_server);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "max-size = \"20KB\"\nretention = \"delete\"",
    ));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let so = common::stdout(&out);
    assert!(
        so.starts_with("home: 4 new messages (")
            && so.ends_with(", 4 deleted from the server, 2 over max-size left on the server\n"),
        "{}",
        describe(&out)
    );
    assert!(
        common::stderr(&out).contains(
            "home: 2 message(s) over max-size stay on the server, not downloaded (the largest 300 KB)"
        ),
        "{}",
        describe(&out)
    );
    let mut delivered = smalls;
    delivered.push(at_limit);
    assert_same_messages(&maildir_contents(&md), &expected_contents(&delivered));
    assert_eq!(
        server.message_count("user1"),
        2,
        "the two too big stay, even with retention = \"delete\""
    );
    // One session: six new messages are no portion, so nobody asks again for more.
    assert_eq!(
        sessions(&server),
        ["top=0, retr=4, del=4/6"],
        "only the four small enough were downloaded"
    );
    // status counts them as known, not as downloaded.
    assert_eq!(
        status_messages_line(&home),
        "messages:      6 known, 4 downloaded in the last day, 4 in all"
    );
    let status = common::stdout(&home.run(&["status"]));
    assert!(
        status.contains(
            "  size rules:    2 over max-size left on the server, 0 delivered as headers only\n"
        ),
        "{status}"
    );
    let json = common::stdout(&home.run(&["status", "--json"]));
    assert!(json.contains("\"oversize_on_server\": 2"), "{json}");

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(common::stdout(&out), "home: no new messages\n");
    assert!(
        !common::stderr(&out).contains("over max-size"),
        "reported once, when first seen: {}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&delivered));
    assert_eq!(server.message_count("user1"), 2);
    assert_eq!(sessions(&server)[1..], ["top=0, retr=0, del=0/2"]);
    assert_eq!(
        status_messages_line(&home),
        "messages:      6 known, 4 downloaded in the last day, 4 in all"
    );
}

#[test]
fn oversize_delete_removes_messages_over_max_size_from_the_server_without_downloading_them() {
    let server = Dovecot::start();
    let smalls = small(61, 4);
    let over = sized("over", 50_001);
    let huge = sized("huge", 2_000_000);
    let mut on_server = smalls.clone();
    on_server.insert(1, over);
    on_server.push(huge);
    server.add_messages("user1", &on_server);
    let home = Home::new();
    let md = home.maildir("home");
    // retention keeps what is downloaded: only the oversize messages go.
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "max-size = \"50KB\"\noversize = \"delete\"",
    ));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let so = common::stdout(&out);
    assert!(
        so.starts_with("home: 4 new messages (") && so.ends_with(", 2 deleted from the server\n"),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&smalls));
    assert_eq!(server.message_count("user1"), 4);
    assert_eq!(sessions(&server), ["top=0, retr=4, del=2/6"]);

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(common::stdout(&out), "home: no new messages\n");
    assert_eq!(server.message_count("user1"), 4);
    assert_same_messages(&maildir_contents(&md), &expected_contents(&smalls));
    assert_eq!(sessions(&server)[1..], ["top=0, retr=0, del=0/4"]);
}

#[test]
fn raising_max_size_lets_a_message_skipped_before_arrive_on_the_next_fetch() {
    let server = Dovecot::start();
    let smalls = small(63, 2);
    let big = sized("big", 300_000);
    let mut on_server = smalls.clone();
    on_server.push(big);
    server.add_messages("user1", &on_server);
    let home = Home::new();
    let md = home.maildir("home");
    let config = |max: &str| {
        account_toml(
            "home",
            &server,
            "user1",
            &md,
            &format!("max-size = {max:?}\nretention = \"delete\""),
        )
    };
    home.write_config(&config("100KB"));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(&maildir_contents(&md), &expected_contents(&smalls));
    assert_eq!(server.message_count("user1"), 1);

    home.write_config(&config("1MB"));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).starts_with("home: 1 new message (")
            && common::stdout(&out).ends_with(", 1 deleted from the server\n"),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&on_server));
    assert_eq!(server.message_count("user1"), 0);
    assert_eq!(
        sessions(&server),
        ["top=0, retr=2, del=2/3", "top=0, retr=1, del=1/1"]
    );
}

/// What popsync delivers for a message over `headers-only-over` listed as 50,000 bytes:
/// its header block (with the blank line), then the note.
fn headers_and_note(id: &str) -> Vec<u8> {
    let mut want = big_head(id);
    want.extend_from_slice(
        b"[popsync: the body of this message (50 KB) was not downloaded because it is larger than\n\
          headers-only-over; the whole message stays on the server.]\n",
    );
    want
}

#[test]
fn a_message_over_headers_only_over_arrives_as_its_headers_and_a_note_and_stays_on_the_server() {
    let server = Dovecot::start();
    let smalls = small(62, 3);
    let big = sized("big", 50_000);
    let mut on_server = smalls.clone();
    on_server.insert(1, big);
    server.add_messages("user1", &on_server);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "headers-only-over = \"20KB\"\nretention = \"delete\"",
    ));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let so = common::stdout(&out);
    assert!(
        so.starts_with("home: 4 new messages (") && so.ends_with(", 3 deleted from the server\n"),
        "{}",
        describe(&out)
    );
    let got = maildir_contents(&md);
    let mut want = expected_contents(&smalls);
    want.insert(headers_and_note("big"), 1);
    assert_same_messages(&got, &want);
    let stub = got
        .keys()
        .find(|m| m.starts_with(b"Return-Path: <big-sender@example.org>"))
        .unwrap();
    assert!(stub.starts_with(&big_head("big")));
    assert!(!contains(stub, b"body of big"), "no body line");
    assert_eq!(
        server.message_count("user1"),
        1,
        "the small ones are deleted, the one delivered as headers only is not"
    );
    assert_eq!(
        sessions(&server),
        ["top=1, retr=3, del=3/4"],
        "the big one came by TOP, the others by RETR"
    );

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(common::stdout(&out), "home: no new messages\n");
    assert_same_messages(&maildir_contents(&md), &want);
    assert_eq!(server.message_count("user1"), 1, "never deleted");
    assert_eq!(sessions(&server)[1..], ["top=0, retr=0, del=0/1"]);
}

#[test]
fn headers_only_into_an_mbox_gives_the_headers_and_the_note_as_one_mbox_message() {
    let server = Dovecot::start();
    let short = b"Return-Path: <alice@example.org>\nFrom: Alice <alice@example.org>\nSubject: short\n\nFrom here on it is short.\n".to_vec();
    let big = sized("big", 50_000);
    server.add_messages("user1", &[short.clone(), big]);
    let home = Home::new();
    let mbox = home.path().join("Mail").join("inbox");
    home.write_config(&account_toml_to(
        "home",
        &server,
        "user1",
        &format!("mbox = {:?}", mbox.display().to_string()),
        "headers-only-over = \"20KB\"",
    ));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).starts_with("home: 2 new messages ("),
        "{}",
        describe(&out)
    );
    let data = std::fs::read(&mbox).unwrap();
    let entries = common::mbox::parse(&data);
    assert_eq!(entries.len(), 2, "{}", String::from_utf8_lossy(&data));
    let mut got: Vec<(String, Vec<u8>)> = entries
        .into_iter()
        .map(|e| {
            // "From SENDER DATE": the date is the time of delivery.
            let sender = e.from_line.split(' ').nth(1).unwrap().to_owned();
            (sender, e.content)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("alice@example.org".to_owned(), short),
            ("big-sender@example.org".to_owned(), headers_and_note("big")),
        ]
    );
    // The body line starting with "From " was quoted in the file.
    assert!(
        contains(&data, b"\n>From here on it is short.\n"),
        "{}",
        String::from_utf8_lossy(&data)
    );
    assert!(!contains(&data, b"body of big"));
    assert_eq!(sessions(&server), ["top=1, retr=1, del=0/2"]);
    assert_eq!(server.message_count("user1"), 2);
}
