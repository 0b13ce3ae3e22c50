//! `popsync fetch` and `popsync check` against a real Dovecot POP3 server on loopback, with
//! real TLS (a throw-away CA the accounts trust through `ca-file`) and real files.

mod common;

use common::dovecot::{self, Dovecot};
use common::{
    Home, account_toml, assert_same_messages, corpus, describe, expected_contents, maildir_contents,
};

#[test]
fn first_fetch_brings_every_message_byte_for_byte_and_a_second_fetch_brings_nothing() {
    let server = Dovecot::start();
    let messages = corpus::varied(1, 300, Some(3 << 20));
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let total: usize = messages.iter().map(|m| corpus::as_delivered(m).len()).sum();
    assert!(
        common::stdout(&out).starts_with("home: 300 new messages ("),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    assert!(total > 3_000_000);
    // Every file is private to the user.
    for e in std::fs::read_dir(md.join("new")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = e.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(common::stdout(&out), "home: no new messages\n");
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    assert_eq!(
        server.message_count("user1"),
        300,
        "keep is the default: nothing deleted"
    );
}

#[test]
fn newly_arrived_messages_and_only_they_are_fetched() {
    let server = Dovecot::start();
    // Ten new among 50: their sizes are asked for one `LIST n` each, pipelined.
    let first = corpus::varied(2, 40, None);
    server.add_messages("user1", &first);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let later: Vec<Vec<u8>> = (100..110)
        .map(|i| corpus::message(2, i, corpus::Sizes::Mixed))
        .collect();
    server.add_messages("user1", &later);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).starts_with("home: 10 new messages ("),
        "{}",
        describe(&out)
    );
    let all: Vec<Vec<u8>> = first.iter().chain(&later).cloned().collect();
    assert_same_messages(&maildir_contents(&md), &expected_contents(&all));
}

#[test]
fn starttls_and_implicit_tls_accounts_fetch_side_by_side() {
    let server = Dovecot::start();
    let a = corpus::varied(3, 20, None);
    let b = corpus::varied(4, 25, None);
    server.add_messages("user1", &a);
    server.add_messages("user2", &b);
    let home = Home::new();
    let (md1, md2) = (home.maildir("one"), home.maildir("two"));
    let starttls = format!("security = \"starttls\"\nport = {}\n", server.plain_port);
    let cfg = account_toml("one", &server, "user1", &md1, "")
        + &account_toml("two", &server, "user2", &md2, &starttls)
            .replace(&format!("port = {}\n", server.tls_port), "");
    home.write_config(&cfg);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let so = common::stdout(&out);
    assert!(
        so.contains("one: 20 new messages") && so.contains("two: 25 new messages"),
        "{so}"
    );
    assert_same_messages(&maildir_contents(&md1), &expected_contents(&a));
    assert_same_messages(&maildir_contents(&md2), &expected_contents(&b));

    // --account selects.
    server.add_messages("user1", &[corpus::message(3, 500, corpus::Sizes::Small)]);
    server.add_messages("user2", &[corpus::message(4, 500, corpus::Sizes::Small)]);
    let out = home.run(&["fetch", "--account", "two"]);
    assert!(
        common::stdout(&out).starts_with("two: 1 new message ("),
        "{}",
        describe(&out)
    );
    assert!(!common::stdout(&out).contains("one:"), "{}", describe(&out));
}

#[test]
fn delete_retention_empties_the_server_after_the_messages_are_safe() {
    let server = Dovecot::start();
    let messages = corpus::varied(5, 60, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "retention = \"delete\"",
    ));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).starts_with("home: 60 new messages (")
            && common::stdout(&out).contains("60 deleted from the server"),
        "{}",
        describe(&out)
    );
    assert_eq!(server.message_count("user1"), 0);
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    let out = home.run(&["fetch"]);
    assert_eq!(
        common::stdout(&out),
        "home: no new messages\n",
        "{}",
        describe(&out)
    );
}

#[test]
fn a_wrong_password_exits_77_and_says_the_login_was_refused() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(6, 3, None));
    let home = Home::new();
    let md = home.maildir("home");
    let cfg = account_toml("home", &server, "user1", &md, "").replace(
        &format!("password = {:?}", dovecot::PASSWORD),
        "password = \"wrong\"",
    );
    home.write_config(&cfg);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("home: error: login refused (SASL PLAIN): -ERR [AUTH]"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the password is never shown: {err}");
    assert_eq!(maildir_contents(&md).len(), 0);
}

#[test]
fn one_failing_account_does_not_stop_the_others() {
    let server = Dovecot::start();
    let good = corpus::varied(7, 10, None);
    server.add_messages("user2", &good);
    let home = Home::new();
    let (bad_md, good_md) = (home.maildir("bad"), home.maildir("good"));
    let bad = account_toml("bad", &server, "user1", &bad_md, "").replace(
        &format!("password = {:?}", dovecot::PASSWORD),
        "password = \"nope\"",
    );
    home.write_config(&(bad + &account_toml("good", &server, "user2", &good_md, "")));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("good: 10 new messages"),
        "{}",
        describe(&out)
    );
    assert!(
        common::stderr(&out).contains("bad: error: login refused"),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&good_md), &expected_contents(&good));
}

#[test]
fn an_untrusted_certificate_is_refused_without_a_fallback() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(8, 2, None));
    let home = Home::new();
    let md = home.maildir("home");
    let cfg = account_toml("home", &server, "user1", &md, "");
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.starts_with("ca-file"))
        .map(|l| format!("{l}\n"))
        .collect();
    home.write_config(&cfg);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("certificate was refused"),
        "{}",
        describe(&out)
    );
    assert!(maildir_contents(&md).is_empty());
    let log = server.log();
    assert!(
        !log.contains("Login: user=<user1>"),
        "no login happened:\n{log}"
    );
}

#[test]
fn implicit_tls_against_a_plaintext_port_fails_instead_of_falling_back() {
    let server = Dovecot::start();
    let home = Home::new();
    let md = home.maildir("home");
    let cfg = account_toml("home", &server, "user1", &md, "timeout = \"5s\"").replace(
        &format!("port = {}", server.tls_port),
        &format!("port = {}", server.plain_port),
    );
    home.write_config(&cfg);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("home: error: the server does not speak TLS on this port"),
        "{}",
        describe(&out)
    );
    assert!(!server.log().contains("Login: user=<user1>"));
}

#[test]
fn without_pipelining_on_the_server_the_client_waits_for_every_answer() {
    let server = Dovecot::start_with(dovecot::Options {
        plaintext_auth: true,
        ..dovecot::Options::default()
    });
    let messages = corpus::varied(9, 40, None);
    server.add_messages("user1", &messages);
    let proxy = common::proxy::Proxy::start(server.plain_port);
    let home = Home::new();
    let md = home.maildir("home");
    let extra = format!(
        "security = \"dangerous-plaintext\"\nport = {}\nretention = \"delete\"",
        proxy.port
    );
    let cfg = account_toml("home", &server, "user1", &md, &extra)
        .replace(&format!("port = {}\n", server.tls_port), "");
    home.write_config(&cfg);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
    assert_eq!(server.message_count("user1"), 0);
    let rec = proxy.record.lock().unwrap();
    assert!(rec.capa_rewritten, "the proxy hid PIPELINING");
    assert!(rec.violations.is_empty(), "{:?}", rec.violations);
    let retr = rec
        .commands
        .iter()
        .filter(|c| c.starts_with("RETR "))
        .count();
    let dele = rec
        .commands
        .iter()
        .filter(|c| c.starts_with("DELE "))
        .count();
    assert_eq!((retr, dele), (40, 40), "{:?}", rec.commands);
}

/// A few new among many, without pipelining: one `LIST n` for each of them, each answer
/// awaited, and no listing of the whole mailbox.
#[test]
fn a_few_new_messages_are_sized_one_at_a_time_without_listing_the_mailbox() {
    let server = Dovecot::start_with(dovecot::Options {
        plaintext_auth: true,
        ..dovecot::Options::default()
    });
    let first: Vec<Vec<u8>> = (0..2000)
        .map(|i| corpus::message(12, i, corpus::Sizes::Small))
        .collect();
    server.add_messages("user1", &first);
    let proxy = common::proxy::Proxy::start(server.plain_port);
    let home = Home::new();
    let md = home.maildir("home");
    let extra = format!("security = \"dangerous-plaintext\"\nport = {}", proxy.port);
    let cfg = account_toml("home", &server, "user1", &md, &extra)
        .replace(&format!("port = {}\n", server.tls_port), "");
    home.write_config(&cfg);
    let out = home.run(&["fetch", "--mark-seen"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let later: Vec<Vec<u8>> = (5000..5002)
        .map(|i| corpus::message(12, i, corpus::Sizes::Mixed))
        .collect();
    server.add_messages("user1", &later);
    let seen = proxy.record.lock().unwrap().commands.len();
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(&maildir_contents(&md), &expected_contents(&later));
    let rec = proxy.record.lock().unwrap();
    assert!(rec.capa_rewritten, "the proxy hid PIPELINING");
    assert!(rec.violations.is_empty(), "{:?}", rec.violations);
    let lists: Vec<&str> = rec.commands[seen..]
        .iter()
        .filter(|c| c.starts_with("LIST"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        lists,
        ["LIST 2001", "LIST 2002"],
        "{:?}",
        &rec.commands[seen..]
    );
}

#[test]
fn mark_seen_records_the_mailbox_without_downloading_and_later_mail_still_arrives() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(10, 30, None));
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "retention = \"delete\"",
    ));
    let out = home.run(&["fetch", "--mark-seen"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        common::stdout(&out),
        "home: marked 30 messages as seen without downloading\n"
    );
    assert!(maildir_contents(&md).is_empty());
    assert_eq!(
        server.message_count("user1"),
        30,
        "never deletes what it did not deliver"
    );

    let new = vec![corpus::message(10, 99, corpus::Sizes::Small)];
    server.add_messages("user1", &new);
    let out = home.run(&["fetch"]);
    assert!(
        common::stdout(&out).starts_with("home: 1 new message ("),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&new));
    assert_eq!(server.message_count("user1"), 30);
}

/// `check` looks at the local side as a fetch would use it, changing nothing: a Maildir or
/// state directory that is not there yet is fine (the first fetch makes it); one of the
/// wrong shape fails with the code the fetch would fail with, and says why on standard
/// output, naming the path.
#[test]
fn check_checks_the_mailbox_and_the_state_directory_as_a_fetch_would_use_them() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(12, 3, None));
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = common::stdout(&out);
    assert!(
        text.contains(&format!(
            "delivers to:    the Maildir {}: not there yet; the first fetch creates it",
            md.display()
        )) && text.contains(&format!(
            "state:          {}: not there yet; the first fetch creates it",
            home.state_dir().display()
        )),
        "{text}"
    );
    assert!(
        !md.exists() && !home.state_dir().exists(),
        "check made nothing"
    );

    // The Maildir's new/ is a file: named, 74 from check and from fetch alike.
    std::fs::create_dir_all(md.join("cur")).unwrap();
    std::fs::create_dir_all(md.join("tmp")).unwrap();
    std::fs::write(md.join("new"), b"not a directory").unwrap();
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    let said = format!(
        "mailbox {}: it is not a directory, as a Maildir's must be",
        md.join("new").display()
    );
    let text = common::stdout(&out);
    assert!(
        text.contains(&format!("delivers to:    FAILED: {said}"))
            && text.contains(&format!("result:         FAILED: {said}")),
        "{}",
        describe(&out)
    );
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(&format!(
            "{} is not a directory, as a Maildir's new/ must be",
            md.join("new").display()
        )),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(md.join("new")).unwrap();

    // The state directory is a file (the fetch above made it a directory).
    std::fs::remove_dir_all(home.state_dir()).unwrap();
    std::fs::write(home.state_dir(), b"not a directory").unwrap();
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains(&format!(
            "state:          FAILED: the state directory {}: it is not a directory",
            home.state_dir().display()
        )),
        "{}",
        describe(&out)
    );
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(&format!(
            "home: error: the state directory {}: it is not a directory",
            home.state_dir().display()
        )),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(home.state_dir()).unwrap();

    // An MDA that is not there: 78, as the fetch.
    home.write_config(&common::account_toml_to(
        "home",
        &server,
        "user1",
        "mda = [\"no-such-mda-here\"]",
        "",
    ));
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("\"no-such-mda-here\" is not found on $PATH"),
        "{}",
        describe(&out)
    );
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
}

#[test]
fn check_shows_certificate_capabilities_login_method_and_counts_without_fetching() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(11, 12, None));
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = common::stdout(&out);
    let fp = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&server.cert_file)
        .output()
        .unwrap();
    let fp = String::from_utf8(fp.stdout).unwrap();
    let fp = fp.trim().rsplit('=').next().unwrap();
    assert!(
        text.contains(&format!("fingerprint:  sha256:{fp}")),
        "{text}\nopenssl: {fp}"
    );
    assert!(text.contains("subject:      CN=localhost"), "{text}");
    assert!(
        text.contains("issuer:       O=popsync tests, CN=popsync test CA"),
        "{text}"
    );
    assert!(
        text.contains("capabilities:") && text.contains("PIPELINING"),
        "{text}"
    );
    assert!(
        text.contains("login method:   SASL PLAIN (chosen automatically)"),
        "{text}"
    );
    assert!(text.contains("mailbox:        12 messages"), "{text}");
    assert!(
        text.contains("next fetch:     12 to download, 0 to delete"),
        "{text}"
    );
    assert!(maildir_contents(&md).is_empty(), "check downloads nothing");
}

#[test]
fn a_second_fetch_of_a_busy_account_waits_for_the_first_or_says_it_is_busy() {
    let server = Dovecot::start();
    let messages = corpus::varied(12, 5, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));
    // This test process plays the other popsync: it holds the account's lock.
    let lock = popsync::lock::AccountLock::try_acquire(&home.state_dir(), "home").unwrap();

    let out = home.run(&["fetch", "--no-wait"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    let busy = format!(
        "home: error: another popsync is already fetching this account (process {})",
        std::process::id()
    );
    assert!(common::stderr(&out).contains(&busy), "{}", describe(&out));

    let child = home
        .command(&["fetch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        maildir_contents(&md).is_empty(),
        "nothing is fetched while the other holds the account"
    );
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("home: another popsync is fetching this account")
            && common::stderr(&out).contains("waiting for it to finish"),
        "{}",
        describe(&out)
    );
    assert!(
        common::stdout(&out).starts_with("home: 5 new messages"),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
}

#[test]
fn the_password_can_come_from_a_command_and_its_failure_is_explained() {
    let server = Dovecot::start();
    let messages = corpus::varied(13, 3, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    let with_command = |cmd: &str| {
        account_toml("home", &server, "user1", &md, "").replace(
            &format!("password = {:?}", dovecot::PASSWORD),
            &format!("password-command = {cmd}"),
        )
    };
    home.write_config(&with_command(&format!(
        "[\"sh\", \"-c\", \"echo '{}'; echo ignored\"]",
        dovecot::PASSWORD
    )));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));

    home.write_config(&with_command(
        "[\"sh\", \"-c\", \"echo 'the vault is locked' >&2; exit 1\"]",
    ));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("home: error: could not get the password: password command \"sh\" failed (exit status: 1): the vault is locked"),
        "{err}"
    );
    home.write_config(&with_command("[\"/nonexistent/pw-helper\"]"));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        common::stderr(&out)
            .contains("password command \"/nonexistent/pw-helper\" could not be started"),
        "{}",
        describe(&out)
    );
}

#[test]
fn check_changes_nothing_on_disk() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(14, 3, None));
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml("home", &server, "user1", &md, ""));
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("next fetch:     3 to download"),
        "{}",
        describe(&out)
    );
    assert!(!home.state_dir().exists(), "no state directory was created");
    assert!(!md.exists(), "no Maildir was created");
}

#[test]
fn the_new_mail_hook_runs_after_the_messages_are_stored_and_only_then() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(15, 4, None));
    let home = Home::new();
    let md = home.maildir("home");
    let record = home.path().join("hook-ran");
    // The hook counts the files it finds: they must all be there when it runs.
    let hook = format!(
        "on-new-mail = [\"sh\", \"-c\", \"printf '%s %s %s ' \\\"$POPSYNC_ACCOUNT\\\" \\\"$POPSYNC_NEW_MESSAGES\\\" \\\"$POPSYNC_MAILDIR\\\" >> '{}'; ls \\\"$POPSYNC_MAILDIR/new\\\" | wc -l >> '{}'\"]",
        record.display(),
        record.display()
    );
    home.write_config(&account_toml("home", &server, "user1", &md, &hook));
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ran = std::fs::read_to_string(&record).unwrap();
    assert_eq!(ran.trim(), format!("home 4 {} 4", md.display()));
    // Nothing new: the hook does not run.
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&record).unwrap(), ran);
}
