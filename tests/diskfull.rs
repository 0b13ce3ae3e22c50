//! A full disk in the middle of a fetch: popsync stops with a clear error (exit 74), leaves
//! no partial message behind and loses nothing; once there is room, the next run brings the
//! rest, each message exactly once. Uses a small tmpfs mounted over the Maildir, which needs
//! root: the test is marked ignored, so a run without root counts it as skipped, and
//! scripts/test runs it when it runs as root (as CI does).

mod common;

use common::corpus;
use common::dovecot::Dovecot;
use common::mount::Mount;
use common::{
    Home, account_toml, assert_same_messages, describe, expected_contents, maildir_contents,
};

#[test]
#[ignore = "mounts a tmpfs, which needs root; scripts/test runs it when run as root, as CI is"]
fn a_full_disk_stops_the_fetch_cleanly_and_the_next_run_finishes_it() {
    let server = Dovecot::start();
    let messages: Vec<Vec<u8>> = (0..40)
        .map(|i| corpus::message(30, i, corpus::Sizes::Fixed(120_000)))
        .collect();
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    let mount = Mount::tmpfs(&md, "2m");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "retention = \"delete\"",
    ));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("home: error: writing the message locally failed: cannot write"),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    // Whatever arrived is complete and there once; nothing half-written; nothing deleted
    // from the server that is not safely here.
    let got = maildir_contents(&md);
    let want = expected_contents(&messages);
    assert!(
        !got.is_empty() && got.len() < messages.len(),
        "{} messages before the disk filled",
        got.len()
    );
    for (m, n) in &got {
        assert_eq!(
            (*n, want.get(m)),
            (1, Some(&1)),
            "a delivered message is one of the originals, once"
        );
    }
    assert_eq!(
        server.message_count("user1"),
        messages.len(),
        "no deletion in a failed session"
    );

    mount.resize("20m");
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(&maildir_contents(&md), &want);
    assert_eq!(server.message_count("user1"), 0);
    drop(mount);
}

/// A state directory on a read-only file system: `popsync status` still shows what the
/// database says (read as it is on disk), and a fetch stops with 74, naming the state
/// directory, without touching the server.
#[test]
#[ignore = "mounts a tmpfs, which needs root; scripts/test runs it when run as root, as CI is"]
fn a_read_only_state_directory_is_still_shown_by_status_and_named_by_fetch() {
    let server = Dovecot::start();
    let messages = corpus::varied(31, 3, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    let mount = Mount::tmpfs(&home.state_dir(), "5m");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    mount.remount("ro");

    let out = home.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("messages:      3 known, 3 downloaded in the last day"),
        "{}",
        describe(&out)
    );
    server.add_messages("user1", &corpus::varied(32, 1, None));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!(
            "home: error: the state directory {}: cannot lock ",
            home.state_dir().display()
        )) && err.contains("Read-only file system"),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    mount.remount("rw");
}
