//! Delivery through an MDA against a real Dovecot: a real procmail writing a Maildir, and
//! small shell scripts that fail, ask to be tried later, hang, or record what they were
//! given. Whatever the MDA does, nothing is deleted from the server that the MDA did not
//! take, and nothing it took is handed over again.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::{
    Home, account_toml_to, assert_same_messages, corpus, describe, expected_contents,
    maildir_contents,
};

/// Writes a shell script into the test's home; the MDA is `["sh", SCRIPT]`.
fn script(home: &Home, name: &str, body: &str) -> PathBuf {
    let path = home.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    path
}

/// The `mda = ...` line that runs `script` with sh.
fn mda_line(script: &Path) -> String {
    format!("mda = [\"sh\", {:?}]", script.display().to_string())
}

/// An empty Maildir for a delivering script to write into.
fn make_maildir(path: &Path) -> PathBuf {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(path.join(sub)).unwrap();
    }
    path.to_owned()
}

/// Script text that stores its standard input as a new file in the Maildir `dir`.
fn store_in(dir: &Path) -> String {
    format!(
        "f=$(mktemp '{}/new/m.XXXXXXXX') || exit 74\ncat > \"$f\" || exit 74\n",
        dir.display()
    )
}

/// A working MDA: stores every message it is given in `dir`.
fn working_mda(home: &Home, dir: &Path) -> String {
    mda_line(&script(home, "deliver.sh", &store_in(dir)))
}

/// `popsync status --json` for the only account: (messages known, downloaded in all).
fn status_counts(home: &Home) -> (u64, u64) {
    let out = home.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = &v["accounts"][0];
    (
        a["messages_known"].as_u64().unwrap(),
        a["downloaded_total"].as_u64().unwrap(),
    )
}

/// Whether a process is running (a zombie counts as gone: pid 1 may not reap it).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn procmail_delivers_every_message_into_a_maildir_byte_for_byte_and_only_once() {
    assert!(
        Path::new("/usr/bin/procmail").exists(),
        "procmail is not installed: apt-get install procmail (.ci/run does this)"
    );
    let server = Dovecot::start();
    let messages = corpus::varied(40, 40, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    // procmail creates the Maildir, but not its parent.
    let md = home.path().join("procmail");
    let log = home.path().join("procmail.log");
    let rc = home.path().join("procmailrc");
    // A trailing slash makes DEFAULT a Maildir, which procmail creates.
    std::fs::write(
        &rc,
        format!(
            "SHELL=/bin/sh\nLOGFILE={}\nVERBOSE=no\nDEFAULT={}/\n",
            log.display(),
            md.display()
        ),
    )
    .unwrap();
    let mda = format!(
        "mda = [\"/usr/bin/procmail\", \"-m\", {:?}]",
        rc.display().to_string()
    );
    home.write_config(&account_toml_to("home", &server, "user1", &mda, ""));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).starts_with("home: 40 new messages ("),
        "{}",
        describe(&out)
    );
    // procmail adds nothing for a Maildir: no From line (it makes one up when the input has
    // none, and leaves it out of a Maildir file), no quoting of body lines.
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    // procmail logs each Subject line as it is: not necessarily UTF-8.
    let log_text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let folders = log_text
        .lines()
        .filter(|l| l.trim_start().starts_with("Folder: "))
        .count();
    assert_eq!(folders, 40, "procmail delivered 40 times:\n{log_text}");

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(common::stdout(&out), "home: no new messages\n");
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&log).unwrap()),
        log_text,
        "procmail was not run again"
    );
    assert_eq!(server.message_count("user1"), 40);
}

#[test]
fn an_mda_asking_to_try_later_stops_the_fetch_with_exit_75_and_nothing_is_lost_or_deleted() {
    let server = Dovecot::start();
    let messages = corpus::varied(41, 12, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let tempfail = script(
        &home,
        "tempfail.sh",
        "cat > /dev/null\necho 'mailbox is locked by another program' >&2\nexit 75\n",
    );
    let retention = "retention = \"delete\"";
    home.write_config(&account_toml_to(
        "home",
        &server,
        "user1",
        &mda_line(&tempfail),
        retention,
    ));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(
            "popsync: home: error: the MDA \"sh\" asks to try again later (exit status 75): mailbox is locked by another program"
        ),
        "{}",
        describe(&out)
    );
    assert_eq!(common::stdout(&out), "", "nothing to report as done");
    assert_eq!(server.message_count("user1"), 12, "nothing deleted");
    assert_eq!(status_counts(&home), (0, 0), "nothing recorded");

    // Again: still nothing taken, nothing recorded.
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert_eq!(status_counts(&home), (0, 0));

    let md = make_maildir(&home.path().join("delivered"));
    home.write_config(&account_toml_to(
        "home",
        &server,
        "user1",
        &working_mda(&home, &md),
        retention,
    ));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let so = common::stdout(&out);
    assert!(
        so.starts_with("home: 12 new messages (") && so.ends_with(", 12 deleted from the server\n"),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    assert_eq!(server.message_count("user1"), 0);
    assert_eq!(status_counts(&home), (12, 12));

    let out = home.run(&["fetch"]);
    assert_eq!(common::stdout(&out), "home: no new messages\n");
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
}

#[test]
fn a_hanging_mda_is_stopped_at_mda_timeout_with_everything_it_started_and_nothing_is_deleted() {
    let server = Dovecot::start();
    let messages = corpus::varied(42, 6, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let pidfile = home.path().join("sleeper.pid");
    // The shell waits for a child of its own: both have to go.
    let hang = script(
        &home,
        "hang.sh",
        &format!(
            "cat > /dev/null\nsleep 120 &\necho $! > '{}'\nwait\n",
            pidfile.display()
        ),
    );
    home.write_config(&account_toml_to(
        "home",
        &server,
        "user1",
        &mda_line(&hang),
        "retention = \"delete\"\nmda-timeout = \"1s\"",
    ));

    let started = Instant::now();
    let out = home.run(&["fetch"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(
            "popsync: home: error: the MDA \"sh\" did not finish within mda-timeout (1s) and was stopped"
        ),
        "{}",
        describe(&out)
    );
    assert!(took < Duration::from_secs(10), "the fetch took {took:?}");
    let sleeper: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::wait_for(Duration::from_secs(5), || (!alive(sleeper)).then_some(())).is_some(),
        "the MDA's own child (process {sleeper}) was stopped too"
    );
    assert_eq!(server.message_count("user1"), 6, "nothing deleted");
    assert_eq!(status_counts(&home), (0, 0), "nothing recorded");
    assert_eq!(
        std::fs::read_dir(home.state_dir().join("spool").join("home"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no spool files left behind"
    );
}

#[test]
fn a_failing_mda_stops_the_session_before_any_dele_and_the_next_fetch_hands_over_only_the_rest() {
    let server = Dovecot::start();
    let messages = corpus::varied(43, 8, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let first = make_maildir(&home.path().join("first"));
    let count = home.path().join("count");
    // Takes two messages, fails on the third.
    let flaky = script(
        &home,
        "flaky.sh",
        &format!(
            "n=$(( $(cat '{c}' 2>/dev/null || echo 0) + 1 ))\necho \"$n\" > '{c}'\nif [ \"$n\" -eq 3 ]; then\n  cat > /dev/null\n  echo 'maildrop: quota exceeded for /home/user/Maildir' >&2\n  exit 1\nfi\n{}",
            store_in(&first),
            c = count.display()
        ),
    );
    let retention = "retention = \"delete\"";
    home.write_config(&account_toml_to(
        "home",
        &server,
        "user1",
        &mda_line(&flaky),
        retention,
    ));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(
            "popsync: home: error: the MDA \"sh\" failed (exit status: 1): maildrop: quota exceeded for /home/user/Maildir"
        ),
        "{}",
        describe(&out)
    );
    assert!(
        common::stdout(&out).starts_with("home: 2 new messages ("),
        "what was delivered is reported: {}",
        describe(&out)
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "3\n");
    let taken = maildir_contents(&first);
    assert_eq!(taken.values().sum::<usize>(), 2, "the MDA took two");
    let all = expected_contents(&messages);
    assert!(
        taken.keys().all(|m| all.contains_key(m)),
        "the MDA got messages from the server, unchanged"
    );
    assert_eq!(
        server.message_count("user1"),
        8,
        "no DELE: not even for the two the MDA took"
    );
    assert_eq!(status_counts(&home), (2, 2));

    let second = make_maildir(&home.path().join("second"));
    home.write_config(&account_toml_to(
        "home",
        &server,
        "user1",
        &working_mda(&home, &second),
        retention,
    ));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let so = common::stdout(&out);
    assert!(
        so.starts_with("home: 6 new messages (") && so.ends_with(", 8 deleted from the server\n"),
        "{}",
        describe(&out)
    );
    // The flaky MDA was not run again; the two it took were not handed over again.
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "3\n");
    assert_eq!(maildir_contents(&first), taken);
    let rest = maildir_contents(&second);
    assert_eq!(rest.values().sum::<usize>(), 6);
    let mut both = taken;
    for (m, n) in rest {
        *both.entry(m).or_insert(0) += n;
    }
    assert_same_messages(&both, &all);
    assert_eq!(server.message_count("user1"), 0);
    assert_eq!(status_counts(&home), (8, 8));
}

#[test]
fn the_mda_gets_the_account_and_envelope_sender_in_its_environment_and_a_from_line_if_asked() {
    let server = Dovecot::start();
    let with_return_path = b"Return-Path: <bounces+42@lists.example.org>\r\nFrom: Alice <alice@example.org>\r\nSubject: list mail\r\n\r\nFrom the list, unquoted\r\n.\r\n".to_vec();
    let from_only = b"From: \"Bob\" <bob@example.net>\nSubject: no return path\n\nhello\n".to_vec();
    let null_sender =
        b"Return-Path: <>\nSubject: Undelivered Mail Returned to Sender\n\nbounce\n".to_vec();
    let messages = vec![
        with_return_path.clone(),
        from_only.clone(),
        null_sender.clone(),
    ];
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = make_maildir(&home.path().join("out"));
    let env = home.path().join("env");
    std::fs::create_dir(&env).unwrap();
    let record = script(
        &home,
        "record.sh",
        &format!(
            "{}printf '%s\\n%s\\n' \"$POPSYNC_ACCOUNT\" \"$POPSYNC_SENDER\" > '{}'/\"$(basename \"$f\")\"\n",
            store_in(&md),
            env.display()
        ),
    );
    home.write_config(&account_toml_to(
        "work.pop",
        &server,
        "user1",
        &mda_line(&record),
        "mda-from-line = true",
    ));
    let before = chrono::Local::now().naive_local();
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let after = chrono::Local::now().naive_local();

    let expected_sender = |content: &[u8]| -> &str {
        let c = corpus::as_delivered;
        if content == c(&with_return_path) {
            "bounces+42@lists.example.org"
        } else if content == c(&from_only) {
            "bob@example.net"
        } else if content == c(&null_sender) {
            "MAILER-DAEMON"
        } else {
            panic!(
                "the MDA got something unexpected: {:?}",
                String::from_utf8_lossy(content)
            )
        }
    };
    let mut seen = Vec::new();
    for e in std::fs::read_dir(md.join("new")).unwrap() {
        let e = e.unwrap();
        let data = std::fs::read(e.path()).unwrap();
        let nl = data.iter().position(|&b| b == b'\n').unwrap();
        let from_line = std::str::from_utf8(&data[..nl]).unwrap();
        let content = &data[nl + 1..];
        let sender = expected_sender(content);
        let date = from_line
            .strip_prefix(&format!("From {sender} "))
            .unwrap_or_else(|| panic!("From line {from_line:?}, sender {sender}"));
        let at = chrono::NaiveDateTime::parse_from_str(date, "%a %b %e %H:%M:%S %Y")
            .unwrap_or_else(|e| panic!("From line date {date:?}: {e}"));
        assert!(
            at >= before - chrono::TimeDelta::seconds(1)
                && at <= after + chrono::TimeDelta::seconds(1),
            "From line date {at} outside {before}..{after}"
        );
        let env_text = std::fs::read_to_string(env.join(e.file_name())).unwrap();
        assert_eq!(env_text, format!("work.pop\n{sender}\n"));
        seen.push(sender.to_owned());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "MAILER-DAEMON",
            "bob@example.net",
            "bounces+42@lists.example.org"
        ]
    );
}

#[test]
fn an_mda_that_cannot_be_started_is_a_configuration_error_and_nothing_is_deleted() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(44, 3, None));
    let home = Home::new();
    home.write_config(&account_toml_to(
        "home",
        &server,
        "user1",
        "mda = [\"/nonexistent/deliver\"]",
        "retention = \"delete\"",
    ));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(
            "popsync: home: error: the MDA could not be run: \"/nonexistent/deliver\" could not be started"
        ),
        "{}",
        describe(&out)
    );
    assert_eq!(server.message_count("user1"), 3);
    assert_eq!(status_counts(&home), (0, 0));
}
