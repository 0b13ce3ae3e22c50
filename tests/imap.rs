//! Delivery into an IMAP mailbox, against the real Dovecot's IMAP service (beside its POP3
//! in the same test Dovecot): user1's POP3 mailbox is fetched into user2's IMAP mailbox,
//! and what arrived is read back by the tests' own IMAP client, byte for byte.

mod common;

use common::dovecot::{Dovecot, ImapOptions, Options, PASSWORD, imap_capability_without};
use common::imap::{Imap, as_wire, assert_none_lost, assert_same, config, contents, wanted};
use common::{Home, corpus, describe, stdout};

fn server(imap: ImapOptions) -> Dovecot {
    Dovecot::start_with(Options {
        plaintext_auth: true,
        imap: Some(imap),
        ..Options::default()
    })
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

    // Three of them arrive on the POP3 server again (as new mail, under new unique-ids):
    // appended again; then a fetch with nothing new appends nothing.
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

/// popsync killed at each step of the append protocol, then run again: every message is in
/// the destination exactly once — with UIDPLUS, MULTIAPPEND and LITERAL+, and without them
/// (where recovery always has to search).
#[test]
fn killed_at_each_step_of_the_append_protocol_every_message_arrives_exactly_once() {
    let points = [
        "pending-committed:2",
        "imap-appending:2",
        "imap-appended:2",
        "imap-uid-recorded:2",
        "delivered-committed:2",
    ];
    for hidden in [&[][..], &["UIDPLUS", "MULTIAPPEND", "LITERAL+"][..]] {
        let server = server(ImapOptions {
            capability: Some(imap_capability_without(hidden)),
            ..ImapOptions::default()
        });
        // Three batches; a few messages twice over, byte for byte.
        let mut messages = corpus::varied(29, 150, None);
        messages.extend_from_within(70..73);
        server.add_messages("user1", &messages);
        let mut admin = Imap::login(&server, "user2");
        for (n, point) in points.iter().enumerate() {
            let mailbox = format!("k{n}");
            eprintln!("killed at {point}, the server hiding {hidden:?}");
            admin.ok(&format!("CREATE {mailbox}"));
            let home = Home::new();
            home.write_config(&config(&server, &mailbox, ""));
            common::kill_at(&home, point);
            let out = home.run(&["fetch", "-v"]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{point}, hiding {hidden:?}: {}",
                describe(&out)
            );
            let (_, got) = contents(&server, &mailbox);
            assert_same(&got, &wanted(&messages));
            // And a recovery killed half-way is recovered in its turn.
            if *point == "imap-appending:2" {
                let mailbox = format!("r{n}");
                admin.ok(&format!("CREATE {mailbox}"));
                let home = Home::new();
                home.write_config(&config(&server, &mailbox, ""));
                common::kill_at(&home, point);
                common::kill_at(&home, "recovery-located");
                let out = home.run(&["fetch"]);
                assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
                assert!(
                    stdout(&out).contains(" recovered from an interrupted run"),
                    "{}",
                    describe(&out)
                );
                let (_, got) = contents(&server, &mailbox);
                assert_same(&got, &wanted(&messages));
            }
        }
    }
}

/// Killed at random instants, over and over: still every message exactly once.
#[test]
fn killed_at_random_instants_every_message_arrives_exactly_once() {
    let server = server(ImapOptions::default());
    let messages = corpus::varied(31, 400, Some(1 << 20));
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&config(&server, "INBOX", "retention = \"delete\""));
    let mut rng = corpus::Rng::new(7);
    let mut cut_off = 0;
    for _ in 0..6 {
        let delay = std::time::Duration::from_millis(30 + rng.below(400));
        cut_off += usize::from(common::fetch_killed_after(&home, delay));
    }
    assert!(cut_off > 0, "no run was killed before it finished");
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&messages));
    assert_eq!(server.message_count("user1"), 0);
}

/// A full destination refuses: what fits goes in (a batch refused whole is appended one
/// message at a time), the error says the mailbox is full, exits 75, and nothing that is not
/// in the destination is deleted from the POP3 server; once there is room, the rest arrives.
#[test]
fn a_full_destination_refuses_clearly_and_nothing_it_lacks_is_deleted() {
    let server = server(ImapOptions {
        quota: Some("300K".into()),
        ..ImapOptions::default()
    });
    let messages = corpus::varied(37, 120, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&config(&server, "INBOX", "retention = \"delete\""));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(err.contains("OVERQUOTA"), "{}", describe(&out));
    assert!(err.contains("the mailbox is full"), "{}", describe(&out));
    let (stored, got) = contents(&server, "INBOX");
    assert!(
        !stored.is_empty(),
        "what fitted went in: {}",
        describe(&out)
    );
    assert_none_lost(&server, &messages, &got);
    for (m, n) in &got {
        assert_eq!(*n, 1, "{:?} twice", String::from_utf8_lossy(&m[..60]));
    }

    // Room made (what the mailbox holds moved aside, as a user would file it away), over
    // and over: the rest arrives, every message once.
    let mut held = stored.len();
    let mut received = got;
    let mut admin = Imap::login(&server, "user2");
    for _ in 0..messages.len() {
        if held > 0 {
            admin.ok("SELECT INBOX");
            admin.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)");
            admin.ok("EXPUNGE");
        }
        let out = home.run(&["fetch"]);
        let (stored, got) = contents(&server, "INBOX");
        held = stored.len();
        for (m, n) in got {
            *received.entry(m).or_insert(0) += n;
        }
        match out.status.code() {
            Some(0) => break,
            Some(75) => continue,
            _ => panic!("{}", describe(&out)),
        }
    }
    assert_same(&received, &wanted(&messages));
    assert_eq!(server.message_count("user1"), 0);
}

/// A mailbox that does not exist is a configuration problem, told before anything is
/// downloaded.
#[test]
fn a_missing_mailbox_is_told_before_anything_is_downloaded() {
    let server = server(ImapOptions::default());
    server.add_messages("user1", &corpus::varied(3, 5, None));
    let home = Home::new();
    home.write_config(&config(&server, "Nowhere", "retention = \"delete\""));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("the IMAP mailbox \"Nowhere\" of \"dest\" does not exist"),
        "{}",
        describe(&out)
    );
    assert_eq!(server.message_count("user1"), 5);
    let out = home.run(&["status"]);
    assert!(
        stdout(&out).contains("messages:      0 known, 0 downloaded"),
        "{}",
        describe(&out)
    );
}

/// A destination that cannot be reached: 75, nothing downloaded, nothing deleted.
#[test]
fn an_unreachable_destination_is_temporary_and_loses_nothing() {
    let server = server(ImapOptions::default());
    let messages = corpus::varied(5, 10, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text = config(&server, "INBOX", "retention = \"delete\"").replace(
        &format!("port = {}\n", server.imaps_port),
        &format!("port = {port}\n"),
    );
    home.write_config(&text);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("IMAP destination \"dest\""),
        "{}",
        describe(&out)
    );
    assert_eq!(server.message_count("user1"), 10);
    // Reachable again: everything arrives once.
    home.write_config(&config(&server, "INBOX", "retention = \"delete\""));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&messages));
    assert_eq!(server.message_count("user1"), 0);
}

/// An IMAP destination's password in the system keyring (`popsync password set --imap`),
/// and `popsync check` logging in there and finding the mailbox.
#[test]
fn an_imap_destination_password_lives_in_the_keyring_and_check_logs_in_there() {
    use std::io::Write as _;
    let server = server(ImapOptions::default());
    let messages = corpus::varied(47, 4, None);
    server.add_messages("user1", &messages);
    let bus = common::dbus::Bus::start();
    let keyring = common::keyring::Keyring::start(&bus);
    let home = Home::new();
    home.write_config(&config(&server, "INBOX", "").replacen(
        &format!("password = {PASSWORD:?}\nmailbox"),
        "password-keyring = true\nmailbox",
        1,
    ));
    let run = |args: &[&str], input: &str| {
        let mut child = home
            .command(args)
            .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&["fetch", "--no-progress"], "");
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(
            "no password stored for IMAP destination \"dest\"; store one with `popsync password set --imap dest`"
        ),
        "{}",
        describe(&out)
    );
    let out = run(&["password", "set", "--imap", "nope"], "x\n");
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("no [[imap]] section is named \"nope\""),
        "{}",
        describe(&out)
    );
    let out = run(
        &["password", "set", "--imap", "dest"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(keyring.lookup("imap=dest").as_deref(), Some(PASSWORD));

    let out = run(&["check"], "");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains(
            "the IMAP mailbox \"INBOX\" of dest (user2 at 127.0.0.1): there, and popsync can log in (the server offers UIDPLUS, MULTIAPPEND, LITERAL+)"
        ),
        "{}",
        describe(&out)
    );
    let out = run(&["fetch"], "");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&messages));
    keyring.stop();
}

/// Even at trace level, with the protocol transcript, the destination's password appears
/// nowhere, and what is logged of the IMAP session is marked with the account.
#[test]
fn the_destination_password_never_appears_even_in_the_transcript() {
    let server = server(ImapOptions::default());
    server.add_messages("user1", &corpus::varied(53, 3, None));
    let home = Home::new();
    // The section logs in with LOGIN, the account by SASL PLAIN.
    home.write_config(&config(&server, "INBOX", "").replacen(
        "mailbox = ",
        "auth = \"user\"\nmailbox = ",
        1,
    ));
    let out = home
        .command(&["fetch", "-vvv"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let all = format!("{}{}", stdout(&out), common::stderr(&out));
    assert!(
        all.lines()
            .any(|l| l.contains("home:") && l.contains("C: p1 LOGIN <redacted>")),
        "{all}"
    );
    assert!(
        all.contains("home: logged in to IMAP destination dest"),
        "{all}"
    );
    assert!(!all.contains(PASSWORD), "the password leaked:\n{all}");
    let (_, got) = contents(&server, "INBOX");
    assert_eq!(got.values().sum::<usize>(), 3);
}

/// Forwards 127.0.0.1:port to `upstream`, and cuts every connection once the client has sent
/// `limit` bytes through it (a destination lost in the middle of an append).
fn cutting_proxy(upstream: u16, limit: usize) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
            std::thread::spawn(move || {
                let mut sent = 0;
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = client.read(&mut buf) {
                    if n == 0 || server.write_all(&buf[..n.min(limit - sent)]).is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= limit {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Both);
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// The destination lost in the middle of an append: 75, and the next run finds out from the
/// destination what got there; every message ends up there exactly once, and nothing the
/// destination lacked was deleted from the POP3 server.
#[test]
fn a_destination_lost_mid_append_is_temporary_and_nothing_is_lost_or_doubled() {
    let server = server(ImapOptions::default());
    let messages = corpus::varied(59, 200, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let plain = |port: u16| {
        config(&server, "INBOX", "retention = \"delete\"").replace(
            &format!("port = {}\n", server.imaps_port),
            &format!("port = {port}\nsecurity = \"dangerous-plaintext\"\n"),
        )
    };
    // Cut in the middle of the second batch (of 64).
    let first: usize = messages[..64].iter().map(|m| as_wire(m).len() + 40).sum();
    let second: usize = messages[64..128].iter().map(|m| as_wire(m).len()).sum();
    home.write_config(&plain(cutting_proxy(server.imap_port, first + second / 2)));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("IMAP destination \"dest\""),
        "{}",
        describe(&out)
    );
    let (_, partial) = contents(&server, "INBOX");
    let there: usize = partial.values().sum();
    assert!(
        there > 0 && there < 200,
        "{there} arrived before the cut: {}",
        describe(&out)
    );
    assert_none_lost(&server, &messages, &partial);

    home.write_config(&plain(server.imap_port));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&messages));
    assert_eq!(server.message_count("user1"), 0);
}

/// The agent delivers into an IMAP mailbox too, polls after polls, and tells of new mail.
#[test]
fn the_agent_delivers_into_the_imap_mailbox_and_tells_of_new_mail() {
    use common::daemon::Daemon;
    use common::dbus::{Bus, Mode, NotificationServer};
    let server = server(ImapOptions::default());
    let home = Home::new();
    home.write_config(&config(
        &server,
        "INBOX",
        "interval = \"1h\"\nretention = \"delete\"",
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    daemon.wait_log("home: done in ");

    let first = corpus::varied(61, 7, None);
    server.add_messages("user1", &first);
    daemon.signal("USR1");
    daemon.wait_log_count("home: done in ", 2);
    let second = corpus::varied(62, 3, None);
    server.add_messages("user1", &second);
    daemon.signal("USR1");
    daemon.wait_log_count("home: done in ", 3);

    let (_, got) = contents(&server, "INBOX");
    let mut all = first.clone();
    all.extend(second);
    assert_same(&got, &wanted(&all));
    assert_eq!(server.message_count("user1"), 0, "{}", daemon.log());
    let got = notes.wait_for(2, || daemon.log());
    assert!(
        got.len() == 2
            && got[0].summary.contains("7 new messages")
            && got[1].summary.contains("3 new messages"),
        "{got:#?}"
    );
}
