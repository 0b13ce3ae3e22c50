//! A server that renumbers its mailbox: the real Dovecot, whose uidlist and indexes are
//! removed while it is stopped, lists every message under a new unique-id. popsync
//! recognises what it already has by content and downloads only what is new.

mod common;

use common::corpus;
use common::dovecot::Dovecot;
use common::{
    Home, account_toml, assert_same_messages, describe, expected_contents, fetch_at,
    maildir_contents,
};
use popsync::clock::FixedClock;
use popsync::config::Config;

const DAY: i64 = 86_400;
const T0: i64 = 1_900_000_000;

/// The real Dovecot holding `n` varied messages (from `seed`) for user1, and a home whose
/// account "home" fetches them into the Maildir `md`, with `extra` keys.
fn mailbox(seed: u64, n: usize, extra: &str) -> (Dovecot, Vec<Vec<u8>>, Home, std::path::PathBuf) {
    let server = Dovecot::start();
    let messages = corpus::varied(seed, n, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, extra));
    (server, messages, home, md)
}

/// `popsync -v fetch`; asserts it succeeded and returns what it printed (its summary, then
/// its log).
fn fetch(home: &Home) -> String {
    let out = home.run(&["-v", "fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    format!("{}{}", common::stdout(&out), common::stderr(&out))
}

#[test]
fn two_thousand_renumbered_messages_are_not_downloaded_again_and_ten_new_ones_are() {
    let (server, first, home, md) = mailbox(150, 2000, "");
    fetch(&home);
    assert_same_messages(&maildir_contents(&md), &expected_contents(&first));

    server.renumber("user1");
    // (Not `varied`, whose first five are the same in every corpus.)
    let new: Vec<Vec<u8>> = (5..15)
        .map(|i| corpus::message(151, i, corpus::Sizes::Mixed))
        .collect();
    server.add_messages("user1", &new);
    let out = home.run(&["check"]);
    assert!(
        common::stdout(&out).contains(
            "renumbered?:    2010 unknown message(s) listed where known ones went missing"
        ),
        "{}",
        describe(&out)
    );
    let log = fetch(&home);
    assert!(
        log.contains("2000 known message(s) are no longer listed and 2010 unknown one(s) are"),
        "{log}"
    );
    assert!(
        log.contains("the server renumbered 2000 message(s) popsync already has")
            && log.contains("10 unknown message(s) left to download")
            && log.contains("home: 10 new messages (",)
            && log.contains(
                "the server renumbered 2,000 messages popsync already had (none downloaded again)"
            ),
        "{log}"
    );
    let all: Vec<Vec<u8>> = first.iter().chain(&new).cloned().collect();
    assert_same_messages(&maildir_contents(&md), &expected_contents(&all));

    let out = home.run(&["status"]);
    assert!(
        common::stdout(&out)
            .contains("the server gave 2,000 message(s) new unique-ids; none downloaded again"),
        "{}",
        describe(&out)
    );

    // Back to plain unique-ids: nothing more to recognise, nothing new.
    let log = fetch(&home);
    assert!(!log.contains("recognising"), "{log}");
    assert!(
        log.contains("2010 message(s) on the server, 0 new"),
        "{log}"
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&all));
}

/// Messages delivered before popsync recorded identities (the column empty, as a state
/// database migrated from before has it) are recognised from their copies: in `new/`, or
/// in `cur/` where a mail reader moved them. One the user removed from the Maildir cannot
/// be, and is downloaded again.
#[test]
fn messages_recorded_before_identities_are_recognised_from_their_stored_copies() {
    let (server, _, home, md) = mailbox(152, 60, "");
    fetch(&home);

    let db = rusqlite::Connection::open(home.state_dir().join("state.db")).unwrap();
    let recorded: i64 = db
        .query_row(
            "SELECT count(*) FROM message WHERE length(identity) = 16",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, 60, "identities are recorded at delivery");
    db.execute("UPDATE message SET identity = NULL", [])
        .unwrap();
    drop(db);
    // A mail reader moves 20 to cur/ (flags added); the user deletes 3.
    let mut names: Vec<_> = std::fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in &names[..20] {
        std::fs::rename(
            md.join("new").join(name),
            md.join("cur").join(format!("{name}:2,S")),
        )
        .unwrap();
    }
    let removed: Vec<Vec<u8>> = names[20..23]
        .iter()
        .map(|name| {
            let path = md.join("new").join(name);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            bytes
        })
        .collect();

    server.renumber("user1");
    let log = fetch(&home);
    assert!(
        log.contains("the server renumbered 57 message(s) popsync already has")
            && log.contains("3 unknown message(s) left to download"),
        "{log}"
    );
    // Exactly the three removed came back; nothing twice.
    let contents = maildir_contents(&md);
    assert_eq!(contents.values().sum::<usize>(), 60);
    assert!(contents.values().all(|n| *n == 1), "a message twice");
    for m in &removed {
        assert!(
            contents.contains_key(m),
            "a removed message did not come back"
        );
    }
}

/// Retention by age keeps counting from the first download across a renumbering; a
/// recognised message whose stored copy was read is deleted when it is due, and one whose
/// copy is gone from the Maildir is never deleted on the strength of its headers alone.
#[test]
fn with_fourteen_day_retention_age_counts_from_the_first_download_and_only_checked_copies_are_deleted()
 {
    let (server, _, home, md) = mailbox(153, 12, "retention = \"14d\"");
    let path = home.config_path();
    let config = Config::load(&path, None).unwrap();
    let clock = FixedClock::new(T0);
    let r = fetch_at(&config, &clock);
    assert_eq!((r.new_messages, r.deleted), (12, 0));

    // The user removes two from the Maildir; the server renumbers.
    let mut names: Vec<_> = std::fs::read_dir(md.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in &names[..2] {
        std::fs::remove_file(path).unwrap();
    }
    server.renumber("user1");
    clock.set(T0 + 10 * DAY);
    let r = fetch_at(&config, &clock);
    assert_eq!(
        (r.new_messages, r.deleted, r.renumbered),
        (0, 0, 12),
        "recognised, nothing downloaded, nothing yet 14 days old"
    );

    clock.set(T0 + 14 * DAY + 1);
    let r = fetch_at(&config, &clock);
    assert_eq!(
        (r.new_messages, r.deleted),
        (0, 10),
        "14 days after the first download, the ten with a checked copy are deleted"
    );
    assert_eq!(server.message_count("user1"), 2, "the two unchecked stay");
    clock.set(T0 + 30 * DAY);
    let r = fetch_at(&config, &clock);
    assert_eq!((r.new_messages, r.deleted), (0, 0));
    assert_eq!(server.message_count("user1"), 2);
    assert_eq!(maildir_contents(&md).values().sum::<usize>(), 10);
}

/// Killed in the middle of recording a renumbering (inside its one transaction), and at
/// random instants of renumbering polls: the run afterwards leaves every message exactly
/// once, none downloaded again.
#[test]
fn killed_while_recognising_a_renumbering_every_message_stays_exactly_once() {
    let (server, messages, home, md) = mailbox(154, 300, "");
    fetch(&home);
    server.renumber("user1");

    common::kill_at(&home, "rekeyed-one:150");
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    let mut rng = corpus::Rng::new(154);
    for _ in 0..4 {
        common::fetch_killed_after(&home, std::time::Duration::from_millis(50 + rng.below(400)));
    }
    let log = fetch(&home);
    assert!(
        log.contains("0 new") || log.contains("the server renumbered"),
        "{log}"
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    let log = fetch(&home);
    assert!(log.contains("300 message(s) on the server, 0 new"), "{log}");
}

/// Deletions an earlier session sent but never saw confirmed (killed before QUIT was
/// answered: the server kept the messages), then a renumbering: recognised as the
/// messages whose deletion is pending, deleted, and not downloaded again.
#[test]
fn a_renumbering_while_deletions_were_pending_deletes_them_without_downloading_again() {
    let (server, messages, home, md) = mailbox(155, 40, "retention = \"delete\"");
    common::kill_at(&home, "dele-answered");
    assert_eq!(server.message_count("user1"), 40, "QUIT never sent");
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));

    server.renumber("user1");
    let log = fetch(&home);
    assert!(
        log.contains("the server renumbered 40 message(s) popsync already has"),
        "{log}"
    );
    assert_eq!(server.message_count("user1"), 0, "{log}");
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
}

/// The agent tells the user once, in a notification, that the server renumbered the
/// mailbox and nothing was downloaded again.
#[test]
fn the_agent_says_once_that_the_server_renumbered() {
    use common::daemon::Daemon;
    use common::dbus::{Bus, Mode, NotificationServer};
    let (server, messages, home, md) = mailbox(156, 30, "interval = \"1h\"");
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    daemon.wait_log_count("home: done in ", 1);
    notes.wait_for(1, || daemon.log());

    server.renumber("user1");
    daemon.signal("USR1");
    daemon.wait_log_count("home: done in ", 2);
    let got = notes.wait_for(2, || format!("{:#?}\n{}", notes.record(), daemon.log()));
    assert_eq!(
        got[1].summary,
        "popsync: the server renumbered its mailbox — home"
    );
    assert_eq!(
        got[1].body,
        "30 message(s) popsync already had are listed under new unique-ids; none was downloaded again."
    );
    daemon.signal("USR1");
    daemon.wait_log_count("home: done in ", 3);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(notes.notifications().len(), 2, "told once");
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
}

/// An mbox: messages recorded before identities were are read back at the place popsync
/// wrote them (its mboxrd quoting undone) and recognised; nothing is appended again.
#[test]
fn messages_in_an_mbox_are_read_back_where_popsync_wrote_them() {
    let server = Dovecot::start();
    let messages = corpus::varied(157, 40, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let mbox = home.path().join("Mail/inbox.mbox");
    home.write_config(&common::account_toml_to(
        "home",
        &server,
        "user1",
        &format!("mbox = {:?}", mbox.display().to_string()),
        "",
    ));
    fetch(&home);
    let before = std::fs::read(&mbox).unwrap();
    let db = rusqlite::Connection::open(home.state_dir().join("state.db")).unwrap();
    db.execute("UPDATE message SET identity = NULL", [])
        .unwrap();
    drop(db);

    server.renumber("user1");
    let log = fetch(&home);
    assert!(
        log.contains("the server renumbered 40 message(s) popsync already has")
            && !log.contains("could not be read"),
        "{log}"
    );
    assert_eq!(std::fs::read(&mbox).unwrap(), before, "nothing appended");
}

/// `identify-by = "headers"` against the real Dovecot (whose UIDL it does not use): the
/// mailbox fetched once, `check` and a second fetch see nothing new, and a renumbering
/// changes nothing at all.
#[test]
fn identified_by_headers_a_mailbox_is_fetched_once_whatever_its_unique_ids() {
    let (server, messages, home, md) = mailbox(158, 50, "identify-by = \"headers\"");
    fetch(&home);
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("next fetch:     0 to download, 0 to delete"),
        "{}",
        describe(&out)
    );
    server.renumber("user1");
    let log = fetch(&home);
    assert!(log.contains("50 message(s) on the server, 0 new"), "{log}");
    assert!(!log.contains("recognising"), "{log}");
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
}
