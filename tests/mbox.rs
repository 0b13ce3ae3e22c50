//! mbox delivery against the real Dovecot: what popsync writes is read back by independent
//! readers (Python's `mailbox`, procmail's `formail`), byte for byte; it waits for the locks
//! that procmail's `lockfile`, liblockfile's `dotlockfile` and other programs' fcntl locks
//! hold, and never interleaves with procmail appending to the same file; a read-only or
//! missing mbox directory is a clear error that records nothing and deletes nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::mbox::{self, multiset};
use common::mount::Mount;
use common::{Home, account_toml_to, corpus, describe, expected_contents};

fn mbox_account(server: &Dovecot, user: &str, path: &Path, extra: &str) -> String {
    account_toml_to(
        "home",
        server,
        user,
        &format!("mbox = {:?}", path.display().to_string()),
        extra,
    )
}

fn is_asctime_from_line(line: &str) -> bool {
    // From SENDER Www Mmm dd hh:mm:ss yyyy  (day space-padded)
    let Some(rest) = line.strip_prefix("From ") else {
        return false;
    };
    let Some((sender, date)) = rest.split_once(' ') else {
        return false;
    };
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = date.as_bytes();
    !sender.is_empty()
        && !sender.contains(char::is_whitespace)
        && b.len() == 24
        && days.contains(&&date[0..3])
        && b[3] == b' '
        && months.contains(&&date[4..7])
        && b[7] == b' '
        && (b[8] == b' ' || b[8].is_ascii_digit())
        && b[9].is_ascii_digit()
        && &date[10..11] == " "
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b' '
        && date[20..24].bytes().all(|c| c.is_ascii_digit())
}

#[test]
fn every_message_reads_back_byte_for_byte_in_python_formail_and_a_strict_reader() {
    let server = Dovecot::start();
    let messages = corpus::varied(41, 150, Some(1 << 20));
    server.add_messages("user1", &messages);
    let home = Home::new();
    let path = home.path().join("Mail/inbox");
    home.write_config(&mbox_account(&server, "user1", &path, ""));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).starts_with("home: 150 new messages ("),
        "{}",
        describe(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the mbox is created private");
    assert!(!mbox_lock(&path).exists(), "the dotlock is gone");

    let want = expected_contents(&messages);
    let data = std::fs::read(&path).unwrap();
    let entries = mbox::parse(&data);
    assert_eq!(entries.len(), 150);
    for e in &entries {
        assert!(is_asctime_from_line(&e.from_line), "{:?}", e.from_line);
    }
    common::assert_same_messages(&mbox::contents(&path), &want);
    common::assert_same_messages(&multiset(mbox::python_contents(&path)), &want);
    common::assert_same_messages(&multiset(mbox::formail_contents(&path)), &want);
    // The corpus has body lines "From ", ">From " and ">>From " and a message without a final
    // newline: the file holds them quoted one level more, and no unquoted body From line.
    let text = String::from_utf8_lossy(&data);
    assert!(text.contains("\n>From the desk of the release manager"));
    assert!(text.contains("\n>>From an earlier message"));
    assert!(text.contains("\n>>>From twice quoted"));
    assert!(!data.windows(2).any(|w| w == b"\r\n"), "LF line endings");

    // A second fetch adds nothing; new mail is appended after what is there.
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let later = corpus::varied(42, 5, None);
    server.add_messages("user1", &later);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let after = std::fs::read(&path).unwrap();
    assert!(after.starts_with(&data), "earlier mail untouched");
    let all: Vec<Vec<u8>> = messages.iter().chain(&later).cloned().collect();
    common::assert_same_messages(&mbox::contents(&path), &expected_contents(&all));
}

#[test]
fn the_from_line_names_return_path_else_from_else_mailer_daemon() {
    let server = Dovecot::start();
    let messages = vec![
        b"Return-Path: <bounce@lists.example.org>\nFrom: Ann <ann@example.org>\nSubject: a\n\nx\n"
            .to_vec(),
        b"From: \"Bob B.\" <bob@example.net>\nSubject: b\n\ny\n".to_vec(),
        b"Subject: c\n\nno sender at all\n".to_vec(),
    ];
    server.add_messages("user1", &messages);
    let home = Home::new();
    let path = home.path().join("inbox");
    // A mail file that already holds a message stays as it was.
    let existing = b"From old@example.com Mon Jan  5 10:00:00 2026\nSubject: old\n\nold\n\n";
    std::fs::write(&path, existing).unwrap();
    home.write_config(&mbox_account(&server, "user1", &path, ""));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let data = std::fs::read(&path).unwrap();
    assert!(data.starts_with(existing));
    let senders: Vec<String> = mbox::parse(&data)
        .iter()
        .map(|e| e.from_line.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(
        senders,
        [
            "old@example.com",
            "bounce@lists.example.org",
            "bob@example.net",
            "MAILER-DAEMON"
        ]
    );
}

fn mbox_lock(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// Starts a fetch, gives it `hold` while something else holds the lock, checks it has not
/// written, then calls `release` and expects the fetch to finish and deliver.
fn waits_for_lock(home: &Home, path: &Path, hold: Duration, release: impl FnOnce()) {
    let before = std::fs::read(path).unwrap_or_default();
    let t = Instant::now();
    let child = home
        .command(&["fetch", "--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(hold);
    assert_eq!(
        std::fs::read(path).unwrap_or_default(),
        before,
        "popsync wrote while the mbox was locked"
    );
    release();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(t.elapsed() >= hold);
}

#[test]
fn popsync_waits_for_dotlocks_held_by_dotlockfile_and_lockfile_then_delivers() {
    let server = Dovecot::start();
    let first = corpus::varied(43, 10, None);
    server.add_messages("user1", &first);
    let home = Home::new();
    let path = home.path().join("inbox");
    home.write_config(&mbox_account(&server, "user1", &path, ""));

    // liblockfile's dotlockfile (writes "0": no pid to check, so it is not stale).
    let lock = mbox_lock(&path);
    let ok = Command::new("dotlockfile")
        .arg("-l")
        .arg(&lock)
        .status()
        .unwrap();
    assert!(ok.success());
    waits_for_lock(&home, &path, Duration::from_secs(2), || {
        assert!(
            Command::new("dotlockfile")
                .arg("-u")
                .arg(&lock)
                .status()
                .unwrap()
                .success()
        );
    });
    common::assert_same_messages(&mbox::contents(&path), &expected_contents(&first));

    // procmail's lockfile.
    let second = corpus::varied(44, 10, None);
    server.add_messages("user1", &second);
    assert!(
        Command::new("lockfile")
            .arg("-r0")
            .arg(&lock)
            .status()
            .unwrap()
            .success()
    );
    waits_for_lock(&home, &path, Duration::from_secs(2), || {
        std::fs::remove_file(&lock).unwrap();
    });
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    common::assert_same_messages(&mbox::contents(&path), &expected_contents(&all));
}

/// A Python process that takes a kernel lock on `path` and holds it until its stdin closes.
fn hold_kernel_lock(path: &Path, kind: &str) -> Child {
    let script = format!(
        r#"
import fcntl, sys
f = open(sys.argv[1], "a")
{}
print("locked", flush=True)
sys.stdin.read()
"#,
        if kind == "flock" {
            "fcntl.flock(f, fcntl.LOCK_EX)"
        } else {
            "fcntl.lockf(f, fcntl.LOCK_EX)"
        }
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

#[test]
fn popsync_waits_for_a_process_holding_an_fcntl_lock_and_gives_up_naming_it() {
    let server = Dovecot::start();
    let messages = corpus::varied(45, 10, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let path = home.path().join("inbox");
    home.write_config(&mbox_account(
        &server,
        "user1",
        &path,
        "mbox-lock-timeout = \"2s\"\nretention = \"delete\"",
    ));

    // Held longer than the time limit: a clear error naming the holder; nothing recorded,
    // nothing deleted.
    let mut holder = hold_kernel_lock(&path, "fcntl");
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("is locked by another program (fcntl lock, held by process")
            && err.contains(&holder.id().to_string()),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(server.message_count("user1"), 10);
    assert!(!mbox_lock(&path).exists(), "popsync's dotlock is released");

    // Held for a while, then released: popsync waits and delivers.
    home.write_config(&mbox_account(
        &server,
        "user1",
        &path,
        "mbox-lock-timeout = \"1m\"\nretention = \"delete\"",
    ));
    waits_for_lock(&home, &path, Duration::from_secs(2), || {
        drop(holder.stdin.take());
        holder.wait().unwrap();
    });
    common::assert_same_messages(&mbox::contents(&path), &expected_contents(&messages));
    assert_eq!(server.message_count("user1"), 0);
}

#[test]
fn with_flock_locking_popsync_waits_for_an_flock_holder() {
    let server = Dovecot::start();
    let messages = corpus::varied(46, 5, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let path = home.path().join("inbox");
    home.write_config(&mbox_account(
        &server,
        "user1",
        &path,
        "mbox-locking = \"flock\"",
    ));
    let mut holder = hold_kernel_lock(&path, "flock");
    waits_for_lock(&home, &path, Duration::from_secs(2), || {
        drop(holder.stdin.take());
        holder.wait().unwrap();
    });
    common::assert_same_messages(&mbox::contents(&path), &expected_contents(&messages));
}

/// A message procmail delivers: simple, so procmail's own "From " handling cannot alter it.
fn procmail_message(round: usize, i: usize) -> Vec<u8> {
    format!(
        "From: local{i}@example.org\nTo: me@example.org\nSubject: local delivery {round}.{i}\nMessage-ID: <local.{round}.{i}@example.org>\n\nDelivered by procmail, round {round}, number {i}.\n{}",
        "filler line for some length\n".repeat(i % 40)
    )
    .into_bytes()
}

#[test]
fn procmail_appending_to_the_same_mbox_at_the_same_time_never_interleaves_with_popsync() {
    let server = Dovecot::start();
    let home = Home::new();
    let path = home.path().join("inbox");
    let rc = home.path().join("procmailrc");
    std::fs::write(
        &rc,
        format!(
            "DEFAULT={}\nLOGFILE={}\nLOCKSLEEP=0\n",
            path.display(),
            home.path().join("procmail.log").display()
        ),
    )
    .unwrap();
    home.write_config(&mbox_account(&server, "user1", &path, ""));

    let rounds = 5;
    let mut fetched = Vec::new();
    let mut local = Vec::new();
    for round in 0..rounds {
        // Four append batches of popsync's per round.
        let arriving = corpus::varied(100 + round as u64, 220, None);
        server.add_messages("user1", &arriving);
        fetched.extend(arriving);
        // procmail delivers one message after another for as long as the fetch runs.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rc, stop) = (rc.clone(), done.clone());
        let deliver = std::thread::spawn(move || {
            let mut sent = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || sent.len() < 3 {
                let m = procmail_message(round, sent.len());
                let mut child = Command::new("procmail")
                    .arg("-m")
                    .arg(&rc)
                    .stdin(Stdio::piped())
                    .spawn()
                    .unwrap();
                use std::io::Write;
                let mut stdin = child.stdin.take().unwrap();
                stdin
                    .write_all(b"From local@example.org Thu Nov 26 10:00:00 2026\n")
                    .unwrap();
                stdin.write_all(&m).unwrap();
                drop(stdin);
                assert!(child.wait().unwrap().success(), "procmail failed");
                sent.push(m);
            }
            sent
        });
        let out = home.run(&["fetch", "--no-progress"]);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        local.extend(deliver.join().unwrap());
    }
    // Every message whole, each once, whoever wrote it.
    let all: Vec<Vec<u8>> = fetched.iter().chain(&local).cloned().collect();
    common::assert_same_messages(&mbox::contents(&path), &expected_contents(&all));
    assert_eq!(mbox::python_contents(&path).len(), all.len());
    let data = std::fs::read(&path).unwrap();
    // Both wrote in every round, before and after popsync's appends (procmail keeps trying
    // the lock while popsync holds it; it retries only every second or two, so it rarely gets
    // in between popsync's batches within one fetch).
    let from_procmail: Vec<bool> = mbox::parse(&data)
        .iter()
        .map(|e| e.content.starts_with(b"From: local"))
        .collect();
    let switches = from_procmail.windows(2).filter(|w| w[0] != w[1]).count();
    eprintln!(
        "{} messages from procmail, {} from popsync, {switches} switches between writers",
        local.len(),
        fetched.len()
    );
    assert!(switches >= 2 * rounds - 1, "the writers hardly overlapped");
}

#[test]
#[ignore = "mounts a tmpfs, which needs root; scripts/test runs it when run as root, as CI is"]
fn an_mbox_on_a_read_only_file_system_is_a_clear_error_that_records_and_deletes_nothing() {
    let server = Dovecot::start();
    let messages = corpus::varied(47, 12, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let dir = home.path().join("Mail");
    let mount = Mount::tmpfs(&dir, "5m");
    let path = dir.join("inbox");
    std::fs::write(&path, b"").unwrap();
    mount.remount("ro");
    home.write_config(&mbox_account(
        &server,
        "user1",
        &path,
        "retention = \"delete\"",
    ));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot create a lock file beside {}",
            path.display()
        )) && err.contains("Read-only file system"),
        "{}",
        describe(&out)
    );
    assert_eq!(server.message_count("user1"), 12, "nothing deleted");
    // The state records nothing as delivered: once writable, everything arrives.
    mount.remount("rw");
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    common::assert_same_messages(&mbox::contents(&path), &expected_contents(&messages));
    assert_eq!(server.message_count("user1"), 0);
}

#[test]
#[ignore = "mounts a tmpfs, which needs root; scripts/test runs it when run as root, as CI is"]
fn a_full_disk_leaves_whole_batches_only_and_the_next_run_finishes_without_duplicates() {
    let server = Dovecot::start();
    // 100 messages of 120 kB: a first append batch of 64 (7.7 MB) fits in 10 MB, the second
    // does not.
    let messages: Vec<Vec<u8>> = (0..100)
        .map(|i| corpus::message(31, i, corpus::Sizes::Fixed(120_000)))
        .collect();
    server.add_messages("user1", &messages);
    let home = Home::new();
    let dir = home.path().join("Mail");
    let mount = Mount::tmpfs(&dir, "10m");
    let path = dir.join("inbox");
    home.write_config(&mbox_account(
        &server,
        "user1",
        &path,
        "retention = \"delete\"",
    ));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!("cannot append to {}", path.display()))
            && err.contains("No space left on device"),
        "{}",
        describe(&out)
    );
    // The failed batch was cut back: the file parses and holds only complete messages.
    let got = mbox::contents(&path);
    let want = expected_contents(&messages);
    assert_eq!(got.values().sum::<usize>(), 64, "exactly the first batch");
    for (m, n) in &got {
        assert_eq!((*n, want.get(m)), (1, Some(&1)));
    }
    assert_eq!(
        server.message_count("user1"),
        100,
        "no deletion in a failed session"
    );

    mount.resize("30m");
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    common::assert_same_messages(&mbox::contents(&path), &want);
    assert_eq!(server.message_count("user1"), 0);
    assert!(!mbox_lock(&path).exists());
}
