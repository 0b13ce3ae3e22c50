//! Whole fetches in memory: a scripted server that checks every line the client sends, a
//! real Maildir and state database in a temporary directory. The same scenarios run against
//! real servers over TCP in `tests/`; these are the fast ones, and the ones a real server
//! will not produce on demand.

use super::*;
use crate::clock::FixedClock;
use crate::pop3::script::{Scripted, Step, expect, expect_alone, greeting, message, partial, send};
use crate::store::MessageState;

const NOW: i64 = 1_900_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    config: crate::config::Config,
}

impl Fixture {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "state-dir = {state:?}\n[[account]]\nname = \"home\"\nhost = \"pop.example.net\"\n\
             username = \"me\"\npassword = \"secret\"\nmaildir = {mail:?}\n{extra}\n",
            state = dir.path().join("state"),
            mail = dir.path().join("Mail"),
        );
        let config = crate::config::Config::parse(&text, &dir.path().join("c.toml"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        Self { dir, config }
    }

    /// One fetch against these scripts (one per session); every script must be used up.
    async fn fetch(&self, scripts: Vec<Vec<Step>>) -> Outcome {
        self.fetch_with(&FetchOptions::default(), scripts).await
    }

    /// The same, with these options.
    async fn fetch_with(&self, options: &FetchOptions, scripts: Vec<Vec<Step>>) -> Outcome {
        let server = Scripted::new(scripts);
        let clock = FixedClock::new(NOW);
        let ctx = Context {
            state_dir: &self.config.state_dir,
            clock: &clock,
            progress: &NoProgress,
            connector: &server,
            cancel: None,
        };
        let outcome = fetch_account(&self.config.accounts[0], &ctx, options).await;
        server.finish().await;
        outcome
    }

    /// The files in the Maildir's `new/`, by content, sorted.
    fn delivered(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(self.dir.path().join("Mail/new"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        out.sort();
        out
    }

    fn tmp_is_empty(&self) -> bool {
        std::fs::read_dir(self.dir.path().join("Mail/tmp"))
            .unwrap()
            .next()
            .is_none()
    }

    fn states(&self) -> Vec<(String, MessageState)> {
        let mut store = Store::open(&self.config.state_dir).unwrap();
        let id = store.account("home", 0).unwrap();
        assert!(
            store.pending(id).unwrap().is_empty(),
            "nothing left pending"
        );
        let mut out: Vec<(String, MessageState)> = store
            .known(id)
            .unwrap()
            .iter()
            .map(|(u, k)| (String::from_utf8(u.to_vec()).unwrap(), k.state))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn msg(n: usize) -> Vec<u8> {
    format!("From: a{n}@example.org\r\nSubject: message {n}\r\n\r\n.dotted {n}\r\nbody\r\n")
        .into_bytes()
}

fn stored(n: usize) -> Vec<u8> {
    String::from_utf8(msg(n))
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes()
}

/// Greeting, login with USER/PASS, capabilities after login.
fn login(caps: &[&str]) -> Vec<Step> {
    let mut steps = greeting(caps);
    steps.extend([
        expect("USER me"),
        send("+OK"),
        expect("PASS secret"),
        send("+OK"),
    ]);
    let mut after = String::from("+OK");
    for c in caps {
        after.push_str("\r\n");
        after.push_str(c);
    }
    after.push_str("\r\n.");
    steps.extend([expect("CAPA"), send(&after)]);
    steps
}

/// UIDL listing messages `numbers` as `u{n}`, and LIST with their sizes if `list`.
fn listing(numbers: &[usize], list: bool) -> Vec<Step> {
    let mut steps = vec![expect("UIDL"), send("+OK")];
    for (i, n) in numbers.iter().enumerate() {
        steps.push(send(&format!("{} u{n}", i + 1)));
    }
    steps.push(send("."));
    if list {
        steps.extend([expect("LIST"), send("+OK")]);
        for (i, n) in numbers.iter().enumerate() {
            steps.push(send(&format!("{} {}", i + 1, msg(*n).len())));
        }
        steps.push(send("."));
    }
    steps
}

fn quit() -> Vec<Step> {
    vec![expect("QUIT"), send("+OK bye")]
}

#[tokio::test]
async fn a_connection_dropped_mid_message_keeps_what_arrived_whole_and_the_rest_comes_next_time() {
    let f = Fixture::new("");
    let mut s1 = login(&["UIDL"]);
    s1.extend(listing(&[1, 2, 3], true));
    s1.extend([
        expect_alone("RETR 1"),
        message(&msg(1)),
        expect_alone("RETR 2"),
        partial(&msg(2), 20),
        Step::Close,
    ]);
    let out = f.fetch(vec![s1]).await;
    let err = out.error.expect("the drop is an error");
    assert_eq!(err.class(), ErrorClass::Temporary, "{err}");
    assert_eq!(out.report.new_messages, 1);
    assert_eq!(f.delivered(), vec![stored(1)]);
    assert!(f.tmp_is_empty(), "no partial message left behind");
    assert_eq!(f.states(), vec![("u1".into(), MessageState::Delivered)]);

    let mut s2 = login(&["UIDL"]);
    s2.extend(listing(&[1, 2, 3], true));
    s2.extend([
        expect_alone("RETR 2"),
        message(&msg(2)),
        expect_alone("RETR 3"),
        message(&msg(3)),
    ]);
    s2.extend(quit());
    let out = f.fetch(vec![s2]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.report.new_messages, 2);
    assert_eq!(f.delivered(), vec![stored(1), stored(2), stored(3)]);
}

#[tokio::test]
async fn a_refused_message_stays_on_the_server_and_the_others_are_deleted() {
    let f = Fixture::new("retention = \"delete\"");
    let mut s1 = login(&["UIDL"]);
    s1.extend(listing(&[1, 2, 3], true));
    s1.extend([
        expect_alone("RETR 1"),
        message(&msg(1)),
        expect_alone("RETR 2"),
        send("-ERR [SYS/TEMP] cannot read it now"),
        expect_alone("RETR 3"),
        message(&msg(3)),
        expect_alone("DELE 1"),
        send("+OK"),
        expect_alone("DELE 3"),
        send("+OK"),
    ]);
    s1.extend(quit());
    let out = f.fetch(vec![s1]).await;
    let err = out.error.expect("a refusal is reported");
    assert!(matches!(err, FetchError::Refused { count: 1, .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Temporary);
    assert_eq!((out.report.new_messages, out.report.deleted), (2, 2));
    assert_eq!(
        f.states(),
        vec![
            ("u1".into(), MessageState::Deleted),
            ("u3".into(), MessageState::Deleted)
        ]
    );
}

/// With PIPELINING, RETR and DELE both go out 32 ahead of their answers, never more.
#[tokio::test]
async fn retrieval_and_deletion_keep_the_pipelining_window() {
    const W: usize = crate::pop3::session::PIPELINE_WINDOW;
    let n = 40;
    let numbers: Vec<usize> = (1..=n).collect();
    let f = Fixture::new("retention = \"delete\"");
    let mut s = login(&["UIDL", "PIPELINING"]);
    s.extend(listing(&numbers, true));
    for (command, answer) in [("RETR", true), ("DELE", false)] {
        for i in 1..W {
            s.push(expect(&format!("{command} {i}")));
        }
        s.push(expect_alone(&format!("{command} {W}")));
        for k in 1..=n {
            s.push(if answer {
                message(&msg(k))
            } else {
                send("+OK")
            });
            if k + W <= n {
                s.push(expect_alone(&format!("{command} {}", k + W)));
            }
        }
    }
    s.extend(quit());
    // Everything listed was new, but too few to be a portion: one session.
    let out = f.fetch(vec![s]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.deleted), (40, 40));
    let mut want: Vec<Vec<u8>> = numbers.iter().map(|n| stored(*n)).collect();
    want.sort();
    assert_eq!(f.delivered(), want);
}

/// Keeps messages 1..=n on a server without pipelining: one first fetch.
async fn keep_first(f: &Fixture, n: usize) {
    let numbers: Vec<usize> = (1..=n).collect();
    let mut s = login(&["UIDL"]);
    s.extend(listing(&numbers, true));
    for k in 1..=n {
        s.extend([expect_alone(&format!("RETR {k}")), message(&msg(k))]);
    }
    s.extend(quit());
    let out = f.fetch(vec![s]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
}

/// UIDL listing `1..=n`, as [`listing`] gives without LIST.
fn uidl_of(n: usize) -> Vec<Step> {
    listing(&(1..=n).collect::<Vec<_>>(), false)
}

/// A few new among many: only their sizes are asked for, one `LIST n` each, sent together
/// with pipelining; a message the server will not size is still downloaded.
#[tokio::test]
async fn a_few_new_among_many_are_sized_one_by_one_not_by_listing_the_mailbox() {
    let f = Fixture::new("retention = \"keep\"");
    keep_first(&f, 40).await;

    let mut s = login(&["UIDL", "PIPELINING"]);
    s.extend(uidl_of(42));
    s.extend([
        expect("LIST 41"),
        expect_alone("LIST 42"),
        send(&format!("+OK 41 {}", msg(41).len())),
        send("-ERR no such message"),
        expect("RETR 41"),
        expect_alone("RETR 42"),
        message(&msg(41)),
        message(&msg(42)),
    ]);
    s.extend(quit());
    let out = f.fetch(vec![s]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.report.new_messages, 2);
    let mut want: Vec<Vec<u8>> = (1..=42).map(stored).collect();
    want.sort();
    assert_eq!(f.delivered(), want);

    // An answer about another message than the one asked for is refused, and nothing is
    // downloaded or recorded on the strength of it.
    let mut s = login(&["UIDL", "PIPELINING"]);
    s.extend(uidl_of(44));
    s.extend([
        expect("LIST 43"),
        expect_alone("LIST 44"),
        send(&format!("+OK 43 {}", msg(43).len())),
        send("+OK 7 120"),
    ]);
    let out = f.fetch(vec![s]).await;
    let err = out.error.expect("a wrong answer is an error");
    assert!(err.to_string().contains("LIST 44"), "{err}");
    assert_eq!(out.report.new_messages, 0);
    assert_eq!(f.delivered().len(), 42);
}

/// A server that hands out mail in portions (Gmail) lists only what it has not handed out:
/// popsync asks again until a session brings nothing new.
#[tokio::test]
async fn a_server_handing_out_mail_in_portions_is_asked_again_until_nothing_is_new() {
    let f = Fixture::new("");
    let session = |numbers: &[usize]| {
        let mut s = login(&["UIDL"]);
        s.extend(listing(numbers, !numbers.is_empty()));
        for (i, n) in numbers.iter().enumerate() {
            s.push(expect_alone(&format!("RETR {}", i + 1)));
            s.push(message(&msg(*n)));
        }
        s.extend(quit());
        s
    };
    // Two full portions, then the rest: a listing shorter than a portion is all there is.
    let portion = crate::plan::PORTION_MIN;
    let first: Vec<usize> = (1..=portion).collect();
    let second: Vec<usize> = (portion + 1..=2 * portion).collect();
    let rest = [2 * portion + 1, 2 * portion + 2];
    let out = f
        .fetch(vec![session(&first), session(&second), session(&rest)])
        .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        (out.report.new_messages, out.report.sessions),
        (2 * portion as u64 + 2, 3)
    );
    let mut want: Vec<Vec<u8>> = (1..=2 * portion + 2).map(stored).collect();
    want.sort();
    assert_eq!(f.delivered(), want);
}

/// A server that asks for time between logins is not asked again in the same run, even
/// when the listing looks like a portion.
#[tokio::test]
async fn a_login_delay_means_one_session_per_run() {
    let f = Fixture::new("");
    let portion: Vec<usize> = (1..=crate::plan::PORTION_MIN).collect();
    let mut s = login(&["UIDL", "LOGIN-DELAY 900"]);
    s.extend(listing(&portion, true));
    for n in &portion {
        s.extend([expect_alone(&format!("RETR {n}")), message(&msg(*n))]);
    }
    s.extend(quit());
    let out = f.fetch(vec![s]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        (out.report.new_messages, out.report.sessions),
        (portion.len() as u64, 1)
    );
}

/// A session cut off after DELE but before QUIT deleted nothing: the next one sends the
/// DELE again, without downloading the message again.
#[tokio::test]
async fn deletions_cut_off_before_quit_are_sent_again_without_downloading_again() {
    let f = Fixture::new("retention = \"delete\"");
    let mut s1 = login(&["UIDL"]);
    s1.extend(listing(&[1], true));
    s1.extend([
        expect_alone("RETR 1"),
        message(&msg(1)),
        expect_alone("DELE 1"),
        send("+OK"),
        expect("QUIT"),
        Step::Close,
    ]);
    let out = f.fetch(vec![s1]).await;
    assert!(out.error.is_some());
    assert_eq!(f.states(), vec![("u1".into(), MessageState::DeletePending)]);

    let mut s2 = login(&["UIDL"]);
    s2.extend(listing(&[1], false));
    s2.extend([expect_alone("DELE 1"), send("+OK")]);
    s2.extend(quit());
    let out = f.fetch(vec![s2]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.deleted), (0, 1));
    assert_eq!(f.states(), vec![("u1".into(), MessageState::Deleted)]);
    assert_eq!(f.delivered(), vec![stored(1)]);
}

/// UIDL listing `uids` in order, then LIST with the sizes of `contents`.
fn listing_of(uids: &[&str], contents: &[Vec<u8>]) -> Vec<Step> {
    let mut steps = vec![expect("UIDL"), send("+OK")];
    for (i, u) in uids.iter().enumerate() {
        steps.push(send(&format!("{} {u}", i + 1)));
    }
    steps.push(send("."));
    steps.extend([expect("LIST"), send("+OK")]);
    for (i, m) in contents.iter().enumerate() {
        steps.push(send(&format!("{} {}", i + 1, m.len())));
    }
    steps.push(send("."));
    steps
}

/// TOP n 0 for each of `numbers`, answered with the header blocks of `contents`.
fn tops(numbers: &[usize], contents: &[Vec<u8>]) -> Vec<Step> {
    let mut steps = Vec::new();
    for n in numbers {
        let m = &contents[n - 1];
        let end = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        steps.extend([expect_alone(&format!("TOP {n} 0")), message(&m[..end])]);
    }
    steps
}

/// One fetch that downloads all of `contents`, listed as `uids`.
async fn first_fetch(f: &Fixture, uids: &[&str], contents: &[Vec<u8>]) {
    let mut s1 = login(&["UIDL"]);
    s1.extend(listing_of(uids, contents));
    for (i, m) in contents.iter().enumerate() {
        s1.extend([expect_alone(&format!("RETR {}", i + 1)), message(m)]);
    }
    s1.extend(quit());
    let out = f.fetch(vec![s1]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.report.new_messages, contents.len() as u64);
}

#[tokio::test]
async fn half_the_ids_changed_only_the_new_message_is_downloaded() {
    let f = Fixture::new("");
    let old: Vec<Vec<u8>> = (1..=4).map(msg).collect();
    first_fetch(&f, &["u1", "u2", "u3", "u4"], &old).await;

    let now: Vec<Vec<u8>> = (1..=5).map(msg).collect();
    let mut s2 = login(&["UIDL"]);
    s2.extend(listing_of(&["u1", "u2", "v3", "v4", "u5"], &now));
    s2.extend(tops(&[3, 4, 5], &now));
    // No second LIST: the sizes are known.
    s2.extend([expect_alone("RETR 5"), message(&msg(5))]);
    s2.extend(quit());
    let out = f.fetch(vec![s2]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.renumbered), (1, 2));
    assert_eq!(f.delivered(), (1..=5).map(stored).collect::<Vec<_>>());
    let states: Vec<String> = f.states().into_iter().map(|(u, _)| u).collect();
    assert_eq!(states, ["u1", "u2", "u5", "v3", "v4"]);
}

/// Two messages with the same header block and size (the same message delivered twice):
/// as many as popsync has, listed again as many times, are taken for them; one more than
/// it has means any of them may be new, so all are downloaded (a duplicate, not a loss).
#[tokio::test]
async fn messages_with_the_same_header_block_are_paired_only_when_as_many_came_back() {
    let twin = |body: &str| {
        format!("From: twin@example.org\r\nSubject: same\r\n\r\n{body}\r\n").into_bytes()
    };
    let (a, b, c) = (twin("body A"), twin("body B"), twin("body C"));
    let f = Fixture::new("");
    first_fetch(&f, &["u1", "u2"], &[a.clone(), b.clone()]).await;

    let mut s2 = login(&["UIDL"]);
    s2.extend(listing_of(&["v1", "v2"], &[a.clone(), b.clone()]));
    s2.extend(tops(&[1, 2], &[a.clone(), b.clone()]));
    s2.extend(quit());
    let out = f.fetch(vec![s2]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.renumbered), (0, 2));

    let three = [a.clone(), b.clone(), c.clone()];
    let mut s3 = login(&["UIDL"]);
    s3.extend(listing_of(&["w1", "w2", "w3"], &three));
    s3.extend(tops(&[1, 2, 3], &three));
    for (i, m) in three.iter().enumerate() {
        s3.extend([expect_alone(&format!("RETR {}", i + 1)), message(m)]);
    }
    s3.extend(quit());
    let out = f.fetch(vec![s3]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.renumbered), (3, 0));
    assert_eq!(f.delivered().len(), 5, "the two again, and the new one");
}

/// A server that lists no more what it handed out (Gmail) looks renumbered for a moment:
/// a sample of the unknown messages is asked for, none is one popsync has, and they are
/// downloaded as new.
#[tokio::test]
async fn a_server_that_stops_listing_what_it_handed_out_costs_a_few_tops() {
    let f = Fixture::new("");
    first_fetch(&f, &["u1", "u2"], &[msg(1), msg(2)]).await;

    let now = [msg(3), msg(4)];
    let mut s2 = login(&["UIDL"]);
    s2.extend(listing_of(&["u3", "u4"], &now));
    s2.extend(tops(&[1, 2], &now));
    s2.extend([
        expect_alone("RETR 1"),
        message(&msg(3)),
        expect_alone("RETR 2"),
        message(&msg(4)),
    ]);
    s2.extend(quit());
    let out = f.fetch(vec![s2]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.renumbered), (2, 0));
    assert_eq!(f.delivered(), (1..=4).map(stored).collect::<Vec<_>>());
}

/// A renumbered listing that repeats a unique-id: the repeated entries are left alone (as
/// in any listing), the others recognised.
#[tokio::test]
async fn a_renumbered_listing_with_a_repeated_id_recognises_the_rest() {
    let f = Fixture::new("");
    let old: Vec<Vec<u8>> = (1..=3).map(msg).collect();
    first_fetch(&f, &["u1", "u2", "u3"], &old).await;

    let mut s2 = login(&["UIDL"]);
    s2.extend(listing_of(&["v1", "v1", "v3"], &old));
    s2.extend(tops(&[1, 3], &old));
    s2.extend(quit());
    let out = f.fetch(vec![s2]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.renumbered), (0, 2));
    let states: Vec<String> = f.states().into_iter().map(|(u, _)| u).collect();
    assert_eq!(states, ["u2", "v1", "v3"]);
    assert_eq!(f.delivered().len(), 3);
}

/// LIST with the sizes of `contents`.
fn list_only(contents: &[Vec<u8>]) -> Vec<Step> {
    let mut steps = vec![expect("LIST"), send("+OK")];
    for (i, m) in contents.iter().enumerate() {
        steps.push(send(&format!("{} {}", i + 1, m.len())));
    }
    steps.push(send("."));
    steps
}

/// A server without UIDL, with `identify-by = "headers"`: three runs, the mail left on the
/// server, every message stored once; two messages with the same header block (the same
/// message delivered twice) are two messages.
#[tokio::test]
async fn without_uidl_messages_are_told_apart_by_their_headers_and_stored_once() {
    let f = Fixture::new("identify-by = \"headers\"");
    let twin = b"From: twin@example.org\r\nSubject: same\r\n\r\nbody\r\n".to_vec();
    let first = [msg(1), twin.clone(), twin.clone()];
    let mut s1 = login(&["TOP"]);
    s1.extend(list_only(&first));
    s1.extend(tops(&[1, 2, 3], &first));
    for (i, m) in first.iter().enumerate() {
        s1.extend([expect_alone(&format!("RETR {}", i + 1)), message(m)]);
    }
    s1.extend(quit());
    let out = f.fetch(vec![s1]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.report.new_messages, 3);

    let mut s2 = login(&["TOP"]);
    s2.extend(list_only(&first));
    s2.extend(tops(&[1, 2, 3], &first));
    s2.extend(quit());
    let out = f.fetch(vec![s2]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.report.new_messages, 0);

    // Someone else took the first message; a new one came.
    let third = [twin.clone(), twin.clone(), msg(4)];
    let mut s3 = login(&["TOP"]);
    s3.extend(list_only(&third));
    s3.extend(tops(&[1, 2, 3], &third));
    s3.extend([expect_alone("RETR 3"), message(&msg(4))]);
    s3.extend(quit());
    let out = f.fetch(vec![s3]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.report.new_messages, 1);
    let mut want = vec![stored(1), stored(4)];
    let twin_stored = String::from_utf8(twin)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    want.extend([twin_stored.clone(), twin_stored]);
    want.sort();
    assert_eq!(f.delivered(), want);
}

/// `fetch --keep`: nothing is deleted in that run (not what retention says is due, not what
/// is over max-size with oversize = "delete"); the next run deletes what is due.
#[tokio::test]
async fn with_keep_nothing_is_deleted_in_that_run_and_the_next_one_deletes_what_is_due() {
    let f = Fixture::new("retention = \"delete\"\nmax-size = \"70\"\noversize = \"delete\"");
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(100)).into_bytes();
    let contents = [msg(1), msg(2), big.clone()];
    let mut s1 = login(&["UIDL"]);
    s1.extend(listing_of(&["u1", "u2", "u3"], &contents));
    s1.extend([
        expect_alone("RETR 1"),
        message(&msg(1)),
        expect_alone("RETR 2"),
        message(&msg(2)),
    ]);
    s1.extend(quit());
    let keep = FetchOptions {
        keep: true,
        ..FetchOptions::default()
    };
    let out = f.fetch_with(&keep, vec![s1]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.deleted), (2, 0));

    let mut s2 = login(&["UIDL"]);
    s2.extend(listing(&[1, 2], false));
    s2.extend([
        expect_alone("DELE 1"),
        send("+OK"),
        expect_alone("DELE 2"),
        send("+OK"),
    ]);
    s2.extend(quit());
    let out = f.fetch(vec![s2]).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!((out.report.new_messages, out.report.deleted), (0, 2));
}
