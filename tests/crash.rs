//! Kill `popsync fetch` with SIGKILL at random instants, over and over, while new mail keeps
//! arriving; then let one run finish. Every message must be in the Maildir exactly once,
//! nothing may be left half-written, and in delete mode the server must end up empty.
//!
//! The kill instants come from a seed printed at the start; set POPSYNC_CRASH_SEED to replay
//! a run, POPSYNC_CRASH_KILLS to change how many kills there are.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::corpus::{self, Rng};
use common::dovecot::Dovecot;
use common::{
    Home, account_toml, account_toml_to, assert_same_messages, describe, expected_contents,
    kill_at, maildir_contents,
};
use popsync::store::{MessageState, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn seed() -> u64 {
    std::env::var("POPSYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn kills() -> usize {
    std::env::var("POPSYNC_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

/// Where the crash tests deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Maildir,
    Mbox,
}

impl Sink {
    fn path(self, home: &Home) -> PathBuf {
        match self {
            Sink::Maildir => home.maildir("home"),
            Sink::Mbox => home.path().join("Mail").join("inbox"),
        }
    }

    fn account(self, home: &Home, server: &Dovecot, extra: &str) -> String {
        let path = self.path(home);
        match self {
            Sink::Maildir => account_toml("home", server, "user1", &path, extra),
            Sink::Mbox => account_toml_to(
                "home",
                server,
                "user1",
                &format!("mbox = {:?}", path.display().to_string()),
                extra,
            ),
        }
    }

    /// What was delivered, as a multiset; for an mbox, a strict parse (whole messages,
    /// each after a blank line, the file ending with one) that Python's reader agrees with.
    fn contents(self, home: &Home) -> BTreeMap<Vec<u8>, usize> {
        let path = self.path(home);
        match self {
            Sink::Maildir => maildir_contents(&path),
            Sink::Mbox => {
                let got = common::mbox::contents(&path);
                assert_eq!(
                    common::mbox::python_contents(&path).len(),
                    got.values().sum::<usize>(),
                    "Python's mailbox module counts the same messages"
                );
                got
            }
        }
    }
}

fn crash_and_recover(retention: &str) {
    crash_and_recover_into(Sink::Maildir, retention);
}

fn crash_and_recover_into(sink: Sink, retention: &str) {
    let seed = seed();
    eprintln!("crash test ({sink:?}, {retention}): POPSYNC_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let server = Dovecot::start();
    let mut sent: Vec<Vec<u8>> = corpus::varied(seed % 1000, 300, Some(1 << 20));
    server.add_messages("user1", &sent);
    let home = Home::new();
    home.write_config(&sink.account(&home, &server, &format!("retention = {retention:?}")));

    // How long one uninterrupted first fetch of this much mail takes here, to spread the
    // kill instants over the whole of a run (from before the connection to after QUIT).
    let probe = Home::new();
    let probe_server = Dovecot::start();
    probe_server.add_messages("user1", &sent);
    probe.write_config(&sink.account(&probe, &probe_server, ""));
    let t = Instant::now();
    let out = probe.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let full = t.elapsed().max(Duration::from_millis(50));
    // ... and a later one, with a few new messages.
    probe_server.add_messages("user1", &corpus::varied(seed % 1000 + 1, 8, None));
    let t = Instant::now();
    let out = probe.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let steady = t.elapsed().max(Duration::from_millis(20));
    drop(probe_server);
    eprintln!("an uninterrupted first fetch takes {full:?}, a later one {steady:?}");

    let mut killed_mid_run = 0;
    let mut next_index = 10_000;
    for round in 0..kills() {
        // New mail keeps arriving, so there is always something in flight.
        let arriving: Vec<Vec<u8>> = (0..1 + rng.below(15) as usize)
            .map(|_| {
                next_index += 1;
                corpus::message(seed % 1000, next_index, corpus::Sizes::Mixed)
            })
            .collect();
        server.add_messages("user1", &arriving);
        sent.extend(arriving);

        // Half the kills spread over a run as long as the first, half over a short one.
        let span = if round % 2 == 0 { full } else { steady };
        let delay = Duration::from_micros(rng.below(span.as_micros() as u64 * 12 / 10 + 1));
        let mut child = home
            .command(&["fetch", "--no-progress"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            Some(status) => {
                // Finished before the kill; a run may also fail if the server still holds
                // the previous killed session's lock ([IN-USE]) — that is fine.
                assert!(
                    matches!(status.code(), Some(0) | Some(75)),
                    "round {round}: unexpected exit {status:?}"
                );
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed_mid_run += 1;
            }
        }
    }
    eprintln!("{killed_mid_run} of {} runs were killed part-way", kills());
    assert!(
        killed_mid_run >= kills() / 4,
        "too few runs were actually interrupted"
    );

    // One run that is allowed to finish (retrying while the server still sees an old session).
    let mut last = None;
    for _ in 0..20 {
        let out = home.run(&["fetch", "--no-progress"]);
        if out.status.code() == Some(0) {
            last = Some(out);
            break;
        }
        assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
        std::thread::sleep(Duration::from_millis(200));
        last = Some(out);
    }
    let last = last.unwrap();
    assert_eq!(last.status.code(), Some(0), "{}", describe(&last));

    assert_same_messages(&sink.contents(&home), &expected_contents(&sent));
    let mut store = Store::open(&home.state_dir()).unwrap();
    let id = store.account("home", 0).unwrap();
    assert!(
        store.pending(id).unwrap().is_empty(),
        "no delivery left pending"
    );
    let known = store.known(id).unwrap();
    if retention == "delete" {
        assert_eq!(server.message_count("user1"), 0, "the server is empty");
        let not_deleted: Vec<_> = known
            .iter()
            .map(|(_, k)| k)
            .filter(|k| k.state != MessageState::Deleted)
            .collect();
        assert!(
            not_deleted.is_empty(),
            "every message recorded as deleted: {not_deleted:?}"
        );
    } else {
        assert_eq!(server.message_count("user1"), sent.len());
        assert_eq!(known.len(), sent.len());
        let odd: Vec<_> = known
            .iter()
            .map(|(_, k)| k)
            .filter(|k| k.state != MessageState::Delivered)
            .collect();
        assert!(
            odd.is_empty(),
            "every message recorded as delivered: {odd:?}"
        );
    }
}

#[test]
fn killed_at_random_instants_in_keep_mode_every_message_arrives_exactly_once() {
    crash_and_recover("keep");
}

#[test]
fn killed_at_random_instants_in_delete_mode_every_message_arrives_once_and_the_server_ends_empty() {
    crash_and_recover("delete");
}

#[test]
fn killed_at_random_instants_while_appending_to_an_mbox_every_message_is_there_once_and_whole() {
    crash_and_recover_into(Sink::Mbox, "keep");
}

#[test]
fn killed_at_random_instants_appending_to_an_mbox_in_delete_mode_the_server_ends_empty() {
    crash_and_recover_into(Sink::Mbox, "delete");
}

/// Runs a fetch that freezes at `point` and kills it there (SIGKILL). Panics if the point is
/// never reached.
/// Freezes popsync at each step of the delivery protocol in turn and kills it there; a run
/// afterwards must leave every message exactly once (and, deleting, an empty server).
fn kill_at_each_step(retention: &str, points: &[&str]) {
    kill_at_each_step_into(Sink::Maildir, retention, points);
}

fn kill_at_each_step_into(sink: Sink, retention: &str, points: &[&str]) {
    let server = Dovecot::start();
    let messages = corpus::varied(77, 150, None); // three batches
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&sink.account(&home, &server, &format!("retention = {retention:?}")));
    for point in points {
        kill_at(&home, point);
    }
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "after {points:?}: {}",
        describe(&out)
    );
    assert_same_messages(&sink.contents(&home), &expected_contents(&messages));
    let mut store = Store::open(&home.state_dir()).unwrap();
    let id = store.account("home", 0).unwrap();
    assert!(store.pending(id).unwrap().is_empty());
    if retention == "delete" {
        assert_eq!(server.message_count("user1"), 0, "after {points:?}");
    } else {
        assert_eq!(server.message_count("user1"), messages.len());
    }
}

macro_rules! step_tests {
    ($($name:ident: $retention:literal, [$($point:literal),+];)+) => {
        $(
            #[test]
            fn $name() {
                kill_at_each_step($retention, &[$($point),+]);
            }
        )+
    };
}

step_tests! {
    killed_after_pending_rows_are_committed: "keep", ["pending-committed:2"];
    killed_after_a_batch_is_written_to_tmp: "keep", ["batch-written:2"];
    killed_after_files_are_synced: "keep", ["files-synced:2"];
    killed_half_way_through_linking_into_new: "keep", ["half-linked:2"];
    killed_after_linking_before_new_is_synced: "keep", ["linked:2"];
    killed_after_publishing_before_the_delivered_commit: "keep", ["published:2"];
    killed_after_the_delivered_commit: "keep", ["delivered-committed:2"];
    killed_during_recovery_of_an_earlier_kill: "keep", ["published:2", "recovery-located"];
    deleting_killed_after_publishing_before_the_delivered_commit: "delete", ["published:3"];
    deleting_killed_after_delete_pending_is_committed: "delete", ["delete-pending-committed"];
    deleting_killed_after_dele_before_quit: "delete", ["dele-answered"];
    deleting_killed_after_quit_before_deleted_is_committed: "delete", ["quit-answered"];
}

macro_rules! mbox_step_tests {
    ($($name:ident: $retention:literal, [$($point:literal),+];)+) => {
        $(
            #[test]
            fn $name() {
                kill_at_each_step_into(Sink::Mbox, $retention, &[$($point),+]);
            }
        )+
    };
}

mbox_step_tests! {
    mbox_killed_after_the_places_are_recorded_before_appending: "keep", ["pending-committed:2"];
    mbox_killed_after_appending_before_the_fsync: "keep", ["mbox-appended:2"];
    mbox_killed_part_way_through_appending_a_batch: "keep", ["mbox-message-appended:70"];
    mbox_killed_part_way_through_appending_then_during_recovery: "keep", ["mbox-message-appended:70", "recovery-located"];
    mbox_killed_after_the_fsync_before_the_delivered_commit: "keep", ["published:2"];
    mbox_killed_after_the_delivered_commit: "keep", ["delivered-committed:2"];
    mbox_killed_during_recovery_of_an_earlier_kill: "keep", ["mbox-appended:2", "recovery-located"];
    mbox_deleting_killed_after_appending_before_the_delivered_commit: "delete", ["published:3"];
    mbox_deleting_killed_after_dele_before_quit: "delete", ["dele-answered"];
}

/// Every file under `dir`, recursively, by content.
fn all_messages_under(dir: &std::path::Path) -> std::collections::BTreeMap<Vec<u8>, usize> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                *out.entry(std::fs::read(e.path()).unwrap()).or_insert(0) += 1;
            }
        }
    }
    out
}

#[test]
fn messages_filed_away_by_the_user_after_a_kill_before_the_commit_are_not_downloaded_again() {
    let server = Dovecot::start();
    let messages = corpus::varied(78, 150, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));
    // Killed after the second batch is in new/ but before it is recorded as delivered ...
    kill_at(&home, "published:2");
    // ... and before popsync runs again, the user's mail reader files everything in new/
    // into another folder.
    let archive = home.path().join("Mail/Archive/cur");
    std::fs::create_dir_all(&archive).unwrap();
    for e in std::fs::read_dir(md.join("new")).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), archive.join(e.file_name())).unwrap();
    }
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let mut everywhere = all_messages_under(&md.join("new"));
    for (m, n) in all_messages_under(&archive) {
        *everywhere.entry(m).or_insert(0) += n;
    }
    assert_same_messages(&everywhere, &expected_contents(&messages));
    assert!(
        std::fs::read_dir(md.join("tmp")).unwrap().next().is_none(),
        "tmp/ is empty"
    );
}

#[test]
fn a_maildir_gone_while_deliveries_into_it_were_unfinished_is_an_error_not_a_guess() {
    let server = Dovecot::start();
    let messages = corpus::varied(79, 150, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));
    kill_at(&home, "published:2");
    // The Maildir's disk is not mounted, say.
    let away = home.path().join("away");
    std::fs::rename(&md, &away).unwrap();
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("is gone, but an interrupted run was delivering into it"),
        "{}",
        describe(&out)
    );
    assert!(!md.exists(), "nothing was created in its place");
    std::fs::rename(&away, &md).unwrap();
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
}
