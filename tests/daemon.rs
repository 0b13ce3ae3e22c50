//! `popsync daemon` end to end: the real binary against a real Dovecot, announcing new mail
//! on a private D-Bus session bus to a stand-in notification server that records every call.
//! Signals go to the real process; `popsync poll` and `popsync status` run beside it.

mod common;

use std::time::Duration;

use common::daemon::{self, Daemon};
use common::dbus::{Bus, Mode, Notification, NotificationServer};
use common::dovecot::{self, Dovecot};
use common::{
    Home, PATIENCE, account_toml, assert_same_messages, describe, expected_contents,
    maildir_contents, wait_for,
};

/// A message with these headers (no `Subject:` header if `subject` is `None`).
fn mail(from: &str, subject: Option<&str>, tag: &str) -> Vec<u8> {
    let mut m = format!(
        "Return-Path: <sender@example.net>\nFrom: {from}\nTo: user@example.net\nDate: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <{tag}@example.net>\n"
    );
    if let Some(s) = subject {
        m.push_str(&format!("Subject: {s}\n"));
    }
    m.push_str(&format!(
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\nThis is message {tag}.\n"
    ));
    m.into_bytes()
}

/// `n` plain messages `tag-0`, `tag-1` ...
fn plain(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            mail(
                "Alice Example <alice@example.org>",
                Some(&format!("{tag} {i}")),
                &format!("{tag}-{i}"),
            )
        })
        .collect()
}

/// Files in a Maildir's new/ (complete deliveries), without reading them.
fn delivered(md: &std::path::Path) -> usize {
    std::fs::read_dir(md.join("new"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Files in a Maildir's tmp/.
fn in_tmp(md: &std::path::Path) -> usize {
    std::fs::read_dir(md.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until the Maildir holds as many messages as `messages` and its tmp/ is empty (a
/// delivery links into new/ first and removes its tmp/ file after), then checks that they
/// are exactly these, each once.
fn wait_for_mail(daemon: &Daemon, md: &std::path::Path, messages: &[Vec<u8>]) {
    let arrived = wait_for(PATIENCE, || {
        (delivered(md) >= messages.len() && in_tmp(md) == 0).then_some(())
    });
    if arrived.is_none() {
        panic!(
            "{} of {} messages arrived in {} ({} in tmp/)\n--- log\n{}",
            delivered(md),
            messages.len(),
            md.display(),
            in_tmp(md),
            daemon.log()
        );
    }
    assert_same_messages(&maildir_contents(md), &expected_contents(messages));
}

/// The log line a finished poll of `account` leaves.
fn done(account: &str) -> String {
    format!("{account}: done in ")
}

/// Asks for a poll with SIGUSR1 and waits until it is done (the `n`-th poll of `account`).
fn poll_and_wait(daemon: &Daemon, account: &str, n: usize) {
    daemon.signal("USR1");
    daemon.wait_log_count(&done(account), n);
}

/// Everything the notification server recorded, for assertion messages.
fn context<'a>(daemon: &'a Daemon, server: &'a NotificationServer) -> impl Fn() -> String + 'a {
    move || format!("{:#?}\n--- log\n{}", server.record(), daemon.log())
}

/// A new-mail notification as popsync sends it.
fn assert_new_mail_note(n: &Notification, summary: &str, body: &str) {
    assert_eq!(n.summary, summary, "{n:#?}");
    assert_eq!(n.body, body, "{n:#?}");
    assert_eq!(n.app_name, "popsync", "{n:#?}");
    assert_eq!(n.app_icon, "mail-message-new", "{n:#?}");
    assert_eq!(n.replaces_id, 0, "{n:#?}");
    assert_eq!(n.expire_timeout, -1, "{n:#?}");
    assert_eq!(n.hint("category"), Some("email.arrived"), "{n:#?}");
    assert_eq!(n.hint("desktop-entry"), Some("popsync"), "{n:#?}");
}

#[test]
fn new_mail_gives_one_notification_listing_the_newest_first_decoded_and_escaped() {
    let server = Dovecot::start();
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"",
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    // The first poll finds an empty mailbox: nothing to announce.
    daemon.wait_log(&done("home"));

    let batch = vec![
        mail("Carol <carol@example.org>", Some("oldest"), "n1"),
        mail("Dave <dave@example.org>", Some("second oldest"), "n2"),
        mail(
            "=?UTF-8?B?5bGx55SwIOWkqumDjg==?= <taro@example.jp>",
            Some("=?UTF-8?B?5pel5pys6Kqe44Gu5Lu25ZCN?="),
            "n3",
        ),
        mail(
            "\"Tom & Jerry <cartoons>\" <tj@example.com>",
            Some("<b>bold</b> & \"quoted\""),
            "n4",
        ),
        mail("bob@example.net", None, "n5"),
        mail(
            "Eve <eve@example.org>",
            Some("=?UTF-8?B?8J+OiSBQYXJ0eSB0aW1lIPCfmoA=?="),
            "n6",
        ),
        mail(
            "=?ISO-8859-1?Q?Andr=E9?= <andre@example.fr>",
            Some("=?ISO-8859-1?Q?Caf=E9?= menu\n\tfor Friday"),
            "n7",
        ),
    ];
    server.add_messages("user1", &batch);
    poll_and_wait(&daemon, "home", 2);
    wait_for_mail(&daemon, &md, &batch);
    let got = notes.wait_for(1, context(&daemon, &notes));
    assert_new_mail_note(
        &got[0],
        "7 new messages — home",
        "André — Café menu for Friday\n\
         Eve — 🎉 Party time 🚀\n\
         bob@example.net — (no subject)\n\
         Tom &amp; Jerry &lt;cartoons&gt; — &lt;b&gt;bold&lt;/b&gt; &amp; \"quoted\"\n\
         山田 太郎 — 日本語の件名\n\
         and 2 more",
    );
    assert_eq!(got[0].actions, Vec::<String>::new(), "no actions: {got:#?}");

    // A poll that brings nothing announces nothing; one new message is "1 new message".
    poll_and_wait(&daemon, "home", 3);
    let one = vec![mail("Frank <frank@example.org>", Some("lunch?"), "n8")];
    server.add_messages("user1", &one);
    poll_and_wait(&daemon, "home", 4);
    let got = notes.wait_for(2, context(&daemon, &notes));
    assert_new_mail_note(&got[1], "1 new message — home", "Frank — lunch?");
    // Settle: one more poll, and still exactly one notification per poll that brought mail.
    poll_and_wait(&daemon, "home", 5);
    assert_eq!(
        notes.notifications().len(),
        2,
        "{}",
        context(&daemon, &notes)()
    );
    let all: Vec<Vec<u8>> = batch.iter().chain(&one).cloned().collect();
    assert_same_messages(&maildir_contents(&md), &expected_contents(&all));
}

/// A TOML string holding `s`.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[test]
fn new_mail_arrives_on_schedule_and_the_new_mail_hook_runs() {
    let server = Dovecot::start();
    let first = plain("first", 2);
    server.add_messages("user1", &first);
    let home = Home::new();
    let md = home.maildir("home");
    let ran = home.path().join("hook-ran");
    let script = format!(
        "printf '%s|%s|%s\\n' \"$POPSYNC_ACCOUNT\" \"$POPSYNC_NEW_MESSAGES\" \"$POPSYNC_MAILDIR\" >> {}",
        ran.display()
    );
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        &format!(
            "interval = \"10s\"\non-new-mail = [\"sh\", \"-c\", {}]",
            toml_str(&script)
        ),
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    wait_for_mail(&daemon, &md, &first);
    let got = notes.wait_for(1, context(&daemon, &notes));
    assert_new_mail_note(
        &got[0],
        "2 new messages — home",
        "Alice Example — first 1\nAlice Example — first 0",
    );

    // No signal, no request: the next scheduled poll brings it.
    daemon.wait_log(&done("home"));
    let later = vec![mail("Grace <grace@example.org>", Some("on time"), "later")];
    server.add_messages("user1", &later);
    let all: Vec<Vec<u8>> = first.iter().chain(&later).cloned().collect();
    wait_for_mail(&daemon, &md, &all);
    let got = notes.wait_for(2, context(&daemon, &notes));
    assert_new_mail_note(&got[1], "1 new message — home", "Grace — on time");

    // The hook ran after each poll that brought mail, with what it needs to know.
    let expected = format!("home|2|{0}\nhome|1|{0}\n", md.display());
    let lines = wait_for(PATIENCE, || {
        let text = std::fs::read_to_string(&ran).unwrap_or_default();
        (text.lines().count() >= 2).then_some(text)
    });
    assert_eq!(
        lines.as_deref(),
        Some(expected.as_str()),
        "{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("home: on-new-mail \"sh\" finished (exit status: 0)"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_first_download_of_a_big_mailbox_is_one_summary_not_a_flood() {
    let server = Dovecot::start();
    let messages: Vec<Vec<u8>> = (0..1234)
        .map(|i| common::corpus::message(31, i, common::corpus::Sizes::Small))
        .collect();
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"",
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    wait_for_mail(&daemon, &md, &messages);
    let got = notes.wait_for(1, context(&daemon, &notes));
    assert_new_mail_note(&got[0], "1,234 messages downloaded — home", "");
    poll_and_wait(&daemon, "home", 2);
    assert_eq!(
        notes.notifications().len(),
        1,
        "{}",
        context(&daemon, &notes)()
    );
}

#[test]
fn with_notify_false_mail_is_fetched_without_a_notification() {
    let server = Dovecot::start();
    let messages = plain("silent", 3);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"\nnotify = false",
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: true });
    let daemon = Daemon::start(&home, bus.address());
    wait_for_mail(&daemon, &md, &messages);
    // Once the second poll is done, the first has been fully dealt with.
    poll_and_wait(&daemon, "home", 2);
    assert!(
        notes.record().calls.is_empty(),
        "{}",
        context(&daemon, &notes)()
    );
}

/// A span of quiet hours that surely covers the present (local time, as popsync sees it:
/// it runs with the test's environment).
fn quiet_hours_around_now() -> String {
    use chrono::Timelike;
    let now = chrono::Local::now();
    let minute = now.hour() * 60 + now.minute();
    let (start, end) = ((minute + 1440 - 120) % 1440, (minute + 120) % 1440);
    format!(
        "{:02}:{:02}-{:02}:{:02}",
        start / 60,
        start % 60,
        end / 60,
        end % 60
    )
}

#[test]
fn quiet_hours_hold_the_notification_back_but_not_the_mail() {
    let server = Dovecot::start();
    let messages = plain("night", 3);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    let quiet = quiet_hours_around_now();
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        &format!("interval = \"1h\"\nquiet-hours = \"{quiet}\""),
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    wait_for_mail(&daemon, &md, &messages);
    daemon.wait_log("home: quiet hours: the notification for 3 new message(s) waits");
    poll_and_wait(&daemon, "home", 2);
    assert!(
        notes.record().calls.is_empty(),
        "quiet hours {quiet}: {}",
        context(&daemon, &notes)()
    );

    // Once the quiet hours are over (here: the user removed them), the next poll shows
    // what was held back, even if it brings nothing new.
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"",
    ));
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded: 1 account(s)");
    poll_and_wait(&daemon, "home", 3);
    let got = notes.wait_for(1, context(&daemon, &notes));
    assert_new_mail_note(
        &got[0],
        "3 new messages — home",
        "Alice Example — night 2\nAlice Example — night 1\nAlice Example — night 0",
    );
    poll_and_wait(&daemon, "home", 4);
    assert_eq!(
        notes.notifications().len(),
        1,
        "{}",
        context(&daemon, &notes)()
    );
}

/// An agent whose new-mail notification was clicked ("Open") and whose open-command ran.
/// (Fields drop in this order: the agent first, its home last.)
struct Clicked {
    daemon: Daemon,
    notes: NotificationServer,
    /// The new-mail notification that was clicked.
    note: Notification,
    /// The file the open-command writes a line into.
    opened: std::path::PathBuf,
    _bus: Bus,
    _server: Dovecot,
    _home: Home,
}

/// Starts an agent for `messages` with an open-command, on a notification server that shows
/// actions, and clicks "Open". With `systemd_run` (a shell script), the agent runs as if
/// under systemd, with that script as the `systemd-run` on its PATH.
fn click_open(messages: &[Vec<u8>], systemd_run: Option<&str>) -> Clicked {
    let server = Dovecot::start();
    server.add_messages("user1", messages);
    let home = Home::new();
    let md = home.maildir("home");
    let opened = home.path().join("opened");
    let script = format!("echo opened >> {}", opened.display());
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        &format!(
            "interval = \"1h\"\nopen-command = [\"sh\", \"-c\", {}]",
            toml_str(&script)
        ),
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: true });
    let mut cmd = daemon::command(&home, bus.address());
    if let Some(systemd_run) = systemd_run {
        let bin = home.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake = bin.join("systemd-run");
        std::fs::write(&fake, systemd_run).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        cmd.env("PATH", path)
            .env("INVOCATION_ID", "0123456789abcdef");
    }
    let daemon = Daemon::spawn(&home, cmd);
    wait_for_mail(&daemon, &md, messages);
    let note = notes.wait_for(1, context(&daemon, &notes)).remove(0);
    // The user clicks. popsync starts listening for the click just after Notify returns,
    // so the click is repeated until it is heard (popsync acts on the first one only).
    let clicked = wait_for(PATIENCE, || {
        notes.invoke_action(note.id, "default");
        std::thread::sleep(Duration::from_millis(250));
        opened.exists().then_some(())
    });
    assert!(
        clicked.is_some(),
        "the open-command did not run\n--- log\n{}",
        daemon.log()
    );
    Clicked {
        daemon,
        notes,
        note,
        opened,
        _bus: bus,
        _server: server,
        _home: home,
    }
}

#[test]
fn the_open_action_runs_open_command_when_the_server_shows_actions() {
    let c = click_open(&plain("open", 2), None);
    assert_new_mail_note(
        &c.note,
        "2 new messages — home",
        "Alice Example — open 1\nAlice Example — open 0",
    );
    assert_eq!(c.note.actions, ["default", "Open"]);
    c.daemon.wait_log("opened mail with \"sh\"");
    // Further clicks on the same notification do nothing more.
    c.notes.invoke_action(c.note.id, "default");
    poll_and_wait(&c.daemon, "home", 2);
    assert_eq!(c.daemon.count("opened mail with"), 1, "{}", c.daemon.log());
    assert_eq!(std::fs::read_to_string(&c.opened).unwrap(), "opened\n");
}

/// Under systemd the mail client is started through `systemd-run --user`, in a unit of its
/// own, and the log says so.
#[test]
fn under_systemd_open_starts_the_mail_client_through_systemd_run() {
    let c = click_open(
        &plain("unit", 1),
        Some("#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\nshift\n\"$@\" &\nexit 0\n"),
    );
    c.daemon
        .wait_log("opened mail with \"sh\" in a unit of its own (systemd-run)");
    assert_eq!(
        c.daemon.count("starting \"sh\" directly"),
        0,
        "{}",
        c.daemon.log()
    );
}

/// When `systemd-run` fails, popsync says so and starts the command directly, and the log
/// says which happened.
#[test]
fn an_open_that_systemd_run_cannot_start_is_reported_and_started_directly() {
    let c = click_open(
        &plain("unit", 1),
        Some("#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n"),
    );
    c.daemon.wait_log(
        "systemd-run failed (exit status: 1): Failed to connect to bus: No medium found; starting \"sh\" directly",
    );
    c.daemon.wait_log("opened mail with \"sh\" (process ");
    assert_eq!(
        c.daemon.count("in a unit of its own"),
        0,
        "{}",
        c.daemon.log()
    );
}

#[test]
fn without_the_actions_capability_no_action_is_offered() {
    let server = Dovecot::start();
    let messages = plain("noactions", 1);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"\nopen-command = [\"true\"]",
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    wait_for_mail(&daemon, &md, &messages);
    let got = notes.wait_for(1, context(&daemon, &notes));
    assert_new_mail_note(
        &got[0],
        "1 new message — home",
        "Alice Example — noactions 0",
    );
    assert_eq!(got[0].actions, Vec::<String>::new());
    assert_eq!(notes.record().calls, ["GetCapabilities", "Notify"]);
}

/// Mail is fetched and the daemon runs on when notifications cannot be shown; the failure
/// is logged once, not once per poll.
fn notifications_fail_but_mail_flows(bus_address: &str, home: &Home, server: &Dovecot) {
    let md = home.maildir("home");
    let first = plain("first", 2);
    server.add_messages("user1", &first);
    let daemon = Daemon::start(home, bus_address);
    wait_for_mail(&daemon, &md, &first);
    daemon.wait_log("desktop notification not shown");
    let later = plain("later", 1);
    server.add_messages("user1", &later);
    poll_and_wait(&daemon, "home", 2);
    let all: Vec<Vec<u8>> = first.iter().chain(&later).cloned().collect();
    wait_for_mail(&daemon, &md, &all);
    poll_and_wait(&daemon, "home", 3);
    let mut daemon = daemon;
    daemon.assert_running();
    let log = daemon.log();
    assert_eq!(
        daemon.count("desktop notification not shown"),
        1,
        "one warning, not one per poll:\n{log}"
    );
    assert!(
        log.contains("(mail is still fetched; further failures are logged at debug level)"),
        "{log}"
    );
}

#[test]
fn without_a_notification_server_mail_is_fetched_and_one_warning_logged() {
    let server = Dovecot::start();
    let home = Home::new();
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &home.maildir("home"),
        "interval = \"1h\"",
    ));
    let bus = Bus::start();
    notifications_fail_but_mail_flows(bus.address(), &home, &server);
}

#[test]
fn without_a_session_bus_mail_is_fetched_and_one_warning_logged() {
    let server = Dovecot::start();
    let home = Home::new();
    // With an open-command, popsync asks the server about actions first: that fails too.
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &home.maildir("home"),
        "interval = \"1h\"\nopen-command = [\"true\"]",
    ));
    notifications_fail_but_mail_flows(&daemon::no_bus(&home), &home, &server);
}

#[test]
fn a_hung_notification_server_costs_a_deadline_and_polling_goes_on() {
    let server = Dovecot::start();
    let first = plain("first", 1);
    server.add_messages("user1", &first);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"10s\"",
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Hung);
    let mut daemon = Daemon::start(&home, bus.address());
    wait_for_mail(&daemon, &md, &first);
    daemon.wait_log(
        "desktop notification not shown: the notification server did not answer within 5s",
    );
    // The next scheduled poll still happens and brings the new mail.
    let later = plain("later", 1);
    server.add_messages("user1", &later);
    let all: Vec<Vec<u8>> = first.iter().chain(&later).cloned().collect();
    wait_for_mail(&daemon, &md, &all);
    // ... and its notification is tried too (and hangs too).
    let got = notes.wait_for(2, context(&daemon, &notes));
    assert_eq!(got[0].summary, "1 new message — home");
    assert_eq!(got[1].summary, "1 new message — home");
    daemon.assert_running();
    assert_eq!(
        daemon.count("desktop notification not shown"),
        1,
        "{}",
        daemon.log()
    );
}

/// A notification server that never answers holds nothing up. Polled one at a time
/// (`max-parallel = 1`), the three accounts are all done before the first notification has
/// even given up on its 5 s deadline; every `popsync poll` is answered; SIGTERM stops the
/// agent at once, with notifications still waiting.
#[test]
fn a_notification_server_that_never_answers_holds_up_no_poll_no_request_and_no_stop() {
    let server = Dovecot::start();
    let home = Home::new();
    let mut toml = String::from("max-parallel = 1\n");
    let mut boxes = Vec::new();
    for (name, user) in [("a", "user1"), ("b", "user2"), ("c", "user3")] {
        let first = plain(name, 1);
        server.add_messages(user, &first);
        let md = home.maildir(name);
        toml.push_str(&account_toml(name, &server, user, &md, "interval = \"1h\""));
        boxes.push((name, user, md, first));
    }
    home.write_config(&toml);
    let bus = Bus::start();
    let _notes = NotificationServer::start(&bus, Mode::Hung);
    let mut daemon = Daemon::start(&home, bus.address());
    for (_, _, md, first) in &boxes {
        wait_for_mail(&daemon, md, first);
    }
    daemon.wait_log("desktop notification not shown");
    let log = daemon.log();
    let gave_up = log.find("desktop notification not shown").unwrap();
    for (name, ..) in &boxes {
        let done_at = log.find(&done(name)).unwrap();
        assert!(
            done_at < gave_up,
            "{name} was polled only after a notification gave up\n--- log\n{log}"
        );
    }

    // Asked for, each account is polled again and brings its new mail.
    for (name, user, md, first) in &boxes {
        let later = plain(&format!("{name}-later"), 1);
        server.add_messages(user, &later);
        let out = home.run(&["poll", "--account", name]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let all: Vec<Vec<u8>> = first.iter().chain(&later).cloned().collect();
        wait_for_mail(&daemon, md, &all);
    }

    // Notifications are still waiting for the server; the stop does not.
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{status:?}\n--- log\n{}", daemon.log());
}

/// The account section for `home` with another password.
fn with_password(toml: &str, password: &str) -> String {
    toml.replace(
        &format!("password = {:?}", dovecot::PASSWORD),
        &format!("password = {password:?}"),
    )
}

#[test]
fn a_refused_login_is_told_once_and_so_is_the_recovery() {
    let server = Dovecot::start();
    let first = plain("first", 2);
    server.add_messages("user1", &first);
    let home = Home::new();
    let md = home.maildir("home");
    let good = account_toml("home", &server, "user1", &md, "interval = \"1h\"");
    home.write_config(&good);
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    wait_for_mail(&daemon, &md, &first);
    notes.wait_for(1, context(&daemon, &notes));

    // The password changes (to a wrong one): the next poll is refused and the user told.
    home.write_config(&with_password(&good, "wrong"));
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded: 1 account(s)");
    daemon.signal("USR1");
    daemon.wait_log_count("home: failed after", 1);
    let got = notes.wait_for(2, context(&daemon, &notes));
    let problem = &got[1];
    assert_eq!(
        problem.summary, "popsync: login refused — home",
        "{problem:#?}"
    );
    assert!(
        problem.body.contains("login refused") && problem.body.contains("[AUTH]"),
        "{problem:#?}"
    );
    // What to do about it.
    assert!(
        // The file as the user writes it: from their home directory.
        problem.body.ends_with(
            "Correct password for account home in ~/config.toml, then run: popsync poll --account home"
        ),
        "{problem:#?}"
    );
    assert!(!problem.body.contains("wrong"), "no password: {problem:#?}");
    assert_eq!(problem.app_name, "popsync");
    assert_eq!(problem.app_icon, "dialog-warning");
    assert_eq!(problem.hint("category"), Some("network.error"));
    assert_eq!(problem.hint("desktop-entry"), Some("popsync"));

    // Asking again fails again, but the user already knows: no second notification.
    let waiting = plain("waiting", 1);
    server.add_messages("user1", &waiting);
    daemon.signal("USR1");
    daemon.wait_log_count("home: failed after", 2);
    daemon.signal("USR1");
    // The agent's warning comes once it has dealt with the poll (and paused the account).
    daemon.wait_log_count("WARN home: login refused", 3);
    assert_eq!(
        notes.notifications().len(),
        2,
        "{}",
        context(&daemon, &notes)()
    );
    assert_eq!(maildir_contents(&md).values().sum::<usize>(), 2);

    // Fixed: the reload alone resumes the paused account; mail flows and the user hears so.
    home.write_config(&good);
    daemon.signal("HUP");
    let all: Vec<Vec<u8>> = first.iter().chain(&waiting).cloned().collect();
    wait_for_mail(&daemon, &md, &all);
    let got = notes.wait_for(4, context(&daemon, &notes));
    assert_new_mail_note(&got[2], "1 new message — home", "Alice Example — waiting 0");
    assert_eq!(got[3].summary, "popsync: working again — home");
    assert_eq!(got[3].body, "Mail is being fetched again.");
    // Good news in place of the problem, and not looking like a warning.
    assert_eq!(got[3].replaces_id, got[1].id, "{got:#?}");
    assert_eq!(got[3].app_icon, "mail-send-receive");
    assert_eq!(got[3].hint("category"), Some("network.connected"));
    poll_and_wait(&daemon, "home", 3);
    assert_eq!(
        notes.notifications().len(),
        4,
        "{}",
        context(&daemon, &notes)()
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_and_a_good_one_takes_effect() {
    let server = Dovecot::start();
    let home = Home::new();
    let (md, work_md) = (home.maildir("home"), home.maildir("work"));
    let home_toml = account_toml("home", &server, "user1", &md, "interval = \"1h\"");
    home.write_config(&home_toml);
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let mut daemon = Daemon::start(&home, bus.address());
    daemon.wait_log_count(&done("home"), 1);

    std::fs::write(
        home.config_path(),
        "this is = = not TOML\n[[account]\nname = \"home\"\n",
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_log("the new configuration is not used");
    daemon.wait_log("the old one stays in force");
    daemon.assert_running();
    // The user hears of it: the file and its first problem.
    let got = notes.wait_for(1, context(&daemon, &notes));
    let refused = &got[0];
    assert_eq!(
        refused.summary, "popsync: the configuration was not reloaded",
        "{refused:#?}"
    );
    let path = home.config_path().display().to_string();
    assert!(
        refused
            .body
            .starts_with(&format!("{path}:1:6: TOML syntax error"))
            && refused
                .body
                .contains("(and 1 more: `popsync check` lists them all)"),
        "{refused:#?}"
    );
    assert!(
        refused.body.ends_with(
            "The configuration read before stays in force until ~/config.toml is fixed."
        ),
        "{refused:#?}"
    );
    assert_eq!(refused.app_icon, "dialog-warning");
    // The old configuration keeps working.
    let arrived = plain("arrived", 2);
    server.add_messages("user1", &arrived);
    poll_and_wait(&daemon, "home", 2);
    wait_for_mail(&daemon, &md, &arrived);

    // A good configuration with a second account: that account is polled at once, and the
    // problem notification is taken away.
    let work_mail = plain("work", 3);
    server.add_messages("user2", &work_mail);
    home.write_config(&(home_toml + &account_toml("work", &server, "user2", &work_md, "")));
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded: 2 account(s)");
    wait_for_mail(&daemon, &work_md, &work_mail);
    daemon.assert_running();
    let closed = wait_for(PATIENCE, || {
        let r = notes.record();
        (!r.closed.is_empty()).then_some(r.closed)
    });
    assert_eq!(
        closed,
        Some(vec![refused.id]),
        "{}",
        context(&daemon, &notes)()
    );
}

#[test]
fn sigusr1_and_popsync_poll_poll_now() {
    let server = Dovecot::start();
    let home = Home::new();
    let (md, work_md) = (home.maildir("home"), home.maildir("work"));
    home.write_config(
        &(account_toml("home", &server, "user1", &md, "interval = \"1h\"")
            + &account_toml("work", &server, "user2", &work_md, "interval = \"1h\"")),
    );
    let daemon = Daemon::start(&home, &daemon::no_bus(&home));
    daemon.wait_log_count(&done("home"), 1);
    daemon.wait_log_count(&done("work"), 1);

    let a = plain("a", 1);
    server.add_messages("user1", &a);
    poll_and_wait(&daemon, "home", 2);
    wait_for_mail(&daemon, &md, &a);
    daemon.wait_log_count(&done("work"), 2);

    // `popsync poll --account work` polls work only.
    let b = plain("b", 1);
    let w = plain("w", 2);
    server.add_messages("user1", &b);
    server.add_messages("user2", &w);
    let out = home.run(&["poll", "--account", "work"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        common::stdout(&out),
        format!(
            "asked the daemon (process {}) to poll work now\n",
            daemon.pid()
        )
    );
    daemon.wait_log_count(&done("work"), 3);
    wait_for_mail(&daemon, &work_md, &w);
    daemon.wait_log("work: asked to poll now");
    assert_eq!(daemon.count(&done("home")), 2, "{}", daemon.log());
    assert_same_messages(&maildir_contents(&md), &expected_contents(&a));

    // `popsync poll` polls every account.
    let out = home.run(&["poll"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        common::stdout(&out),
        format!(
            "asked the daemon (process {}) to poll every account now\n",
            daemon.pid()
        )
    );
    daemon.wait_log_count(&done("home"), 3);
    daemon.wait_log_count(&done("work"), 4);
    let ab: Vec<Vec<u8>> = a.iter().chain(&b).cloned().collect();
    wait_for_mail(&daemon, &md, &ab);

    // An account the config does not name is refused before the daemon is bothered.
    let out = home.run(&["poll", "--account", "nope"]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
}

#[test]
fn sigterm_in_the_middle_of_a_big_first_fetch_stops_and_a_restart_finishes_exactly_once() {
    let server = Dovecot::start();
    let messages: Vec<Vec<u8>> = (0..2000)
        .map(|i| common::corpus::message(32, i, common::corpus::Sizes::Small))
        .collect();
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"",
    ));
    let bus = daemon::no_bus(&home);
    let mut daemon = Daemon::start(&home, &bus);
    let started = wait_for(PATIENCE, || (delivered(&md) > 0).then_some(()));
    assert!(started.is_some(), "nothing arrived\n{}", daemon.log());
    daemon.signal("TERM");
    let status = daemon.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    let first_run = delivered(&md);
    assert!(
        first_run < messages.len(),
        "the fetch was not interrupted ({first_run} delivered)\n{log}"
    );
    assert!(
        log.contains(&format!(
            "home: {first_run} new message(s) stored before stopping"
        )),
        "{log}"
    );
    // `status` tells a poll stopped by the shutdown from a failure.
    let text = common::stdout(&home.run(&["status", "--account", "home"]));
    assert!(
        text.contains("interrupted: popsync was stopped (what arrived is stored)"),
        "{text}"
    );
    assert!(!text.contains("FAILED"), "{text}");
    assert_eq!(
        status_json(&home)["accounts"][0]["last_poll_interrupted"],
        true
    );

    let restarted = Daemon::start(&home, &bus);
    wait_for_mail(&restarted, &md, &messages);
    restarted.wait_log(&done("home"));
}

#[test]
fn sigterm_while_a_fetch_is_stuck_still_stops_and_a_restart_finishes_exactly_once() {
    let server = Dovecot::start();
    let messages = common::corpus::varied(33, 200, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"",
    ));
    let bus = daemon::no_bus(&home);
    // The fetch freezes after writing its second batch, before publishing it.
    let mut cmd = daemon::command(&home, &bus);
    cmd.env("POPSYNC_FAILPOINT", "batch-written:2");
    let mut daemon = Daemon::spawn(&home, cmd);
    daemon.wait_log("popsync: failpoint batch-written reached");
    daemon.signal("TERM");
    // It gives the fetch a few seconds (popsync::daemon::STOP_GRACE), then leaves it.
    let status = daemon.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("are left unfinished (nothing is lost)"),
        "{}",
        daemon.log()
    );

    let restarted = Daemon::start(&home, &bus);
    wait_for_mail(&restarted, &md, &messages);
}

/// `popsync status --json`, parsed.
fn status_json(home: &Home) -> serde_json::Value {
    let out = home.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn status_reports_the_running_daemon_and_each_account() {
    let server = Dovecot::start();
    let messages = plain("status", 3);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"",
    ));
    let bus = daemon::no_bus(&home);
    let mut daemon = Daemon::start(&home, &bus);
    wait_for_mail(&daemon, &md, &messages);
    // The next poll is recorded once the poll has been dealt with.
    let status = wait_for(PATIENCE, || {
        let s = status_json(&home);
        (!s["accounts"][0]["next_poll"].is_null()).then_some(s)
    })
    .unwrap_or_else(|| panic!("{:#}\n--- log\n{}", status_json(&home), daemon.log()));
    let now = unix_now();
    let d = &status["daemon"];
    assert_eq!(d["pid"], daemon.pid(), "{status:#}");
    assert_eq!(d["this_config"], true, "{status:#}");
    assert_eq!(
        d["config"],
        home.config_path().display().to_string(),
        "{status:#}"
    );
    let a = &status["accounts"][0];
    assert_eq!(a["name"], "home", "{status:#}");
    assert_eq!(a["last_poll_ok"], true, "{status:#}");
    assert_eq!(a["last_error"], serde_json::Value::Null, "{status:#}");
    assert_eq!(a["last_poll_new_messages"], 3, "{status:#}");
    assert_eq!(a["messages_known"], 3, "{status:#}");
    assert_eq!(a["downloaded_total"], 3, "{status:#}");
    assert_eq!(a["downloaded_last_day"], 3, "{status:#}");
    let last = a["last_poll"].as_i64().unwrap();
    assert!(last <= now && last > now - 600, "{status:#}");
    // An hour from the last poll, give or take the jitter.
    let next = a["next_poll"].as_i64().unwrap();
    assert!(next > now && next <= now + 3600 + 60, "{status:#}");

    let out = home.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = common::stdout(&out);
    assert!(
        text.starts_with(&format!("daemon: running (process {})\n", daemon.pid())),
        "{text}"
    );
    assert!(text.contains("\nhome\n  last poll:"), "{text}");
    assert!(text.contains("ok, 3 new"), "{text}");
    assert!(text.contains("  next poll:"), "{text}");
    assert!(
        text.contains("3 known, 3 downloaded in the last day, 3 in all"),
        "{text}"
    );

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(PATIENCE).code(), Some(0));
    assert_eq!(status_json(&home)["daemon"], serde_json::Value::Null);
    let text = common::stdout(&home.run(&["status"]));
    assert!(text.starts_with("daemon: not running\n"), "{text}");
}

#[test]
fn a_second_daemon_for_the_same_state_refuses_to_start_and_names_the_first() {
    let server = Dovecot::start();
    let home = Home::new();
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &home.maildir("home"),
        "interval = \"1h\"",
    ));
    let bus = daemon::no_bus(&home);
    let mut first = Daemon::start(&home, &bus);
    first.wait_log(&done("home"));
    let out = daemon::run_bounded(&mut daemon::command(&home, &bus), PATIENCE);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!(
            "a popsync daemon is already running for this state directory (process {}, config {})",
            first.pid(),
            home.config_path().display()
        )),
        "{err}"
    );
    first.assert_running();
}

#[test]
fn under_systemd_it_reports_ready_status_and_stopping_logs_for_the_journal_and_pings_the_watchdog()
{
    use std::os::unix::net::UnixDatagram;
    let server = Dovecot::start();
    let messages = plain("sd", 2);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"",
    ));
    let socket_path = home.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut cmd = daemon::command(&home, &daemon::no_bus(&home));
    cmd.env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("JOURNAL_STREAM", "8:12345");
    let mut daemon = Daemon::spawn(&home, cmd);
    let mut received = Vec::new();
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket
            .recv(&mut buf)
            .expect("a message from popsync within the deadline");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // READY first, then a status line after the first poll, and watchdog pings (every 1 s).
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=watching 1 account(s)\nMAINPID="),
        "{ready}"
    );
    while !received
        .iter()
        .any(|m: &String| m.starts_with("STATUS=1 account(s)"))
        || !received.iter().any(|m| m == "WATCHDOG=1")
    {
        received.push(next());
    }
    wait_for_mail(&daemon, &md, &messages);
    daemon.signal("TERM");
    let status = daemon.wait_exit(PATIENCE);
    assert!(status.success(), "{status:?}");
    loop {
        let m = next();
        if m == "STOPPING=1" {
            break;
        }
    }
    // Journal style: priority prefixes, no time stamps.
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.starts_with("<6>home: done in ")),
        "{log}"
    );
    assert!(log.lines().all(|l| l.starts_with('<')), "{log}");
}

#[test]
fn an_untrusted_certificate_is_told_at_once_and_once() {
    let server = Dovecot::start();
    let home = Home::new();
    let md = home.maildir("home");
    let toml = account_toml("home", &server, "user1", &md, "interval = \"1h\"");
    let toml: String = toml
        .lines()
        .filter(|l| !l.starts_with("ca-file"))
        .map(|l| format!("{l}\n"))
        .collect();
    home.write_config(&toml);
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: true });
    let daemon = Daemon::start(&home, bus.address());
    let first = notes.wait_for(1, context(&daemon, &notes));
    assert_eq!(
        first[0].summary,
        "popsync: the server's certificate is not trusted — home"
    );
    assert!(first[0].body.contains("certificate"), "{}", first[0].body);
    // Asked again, it fails again, and says nothing more.
    daemon.signal("USR1");
    daemon.wait_log_count("home: the server's certificate was refused", 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        notes.notifications().len(),
        1,
        "{}",
        context(&daemon, &notes)()
    );
}

#[test]
fn a_changed_pinned_certificate_is_told_as_a_change_showing_both_fingerprints() {
    let server = Dovecot::start();
    let home = Home::new();
    let md = home.maildir("home");
    let wrong = format!("sha256:{}", ["5A"; 32].join(":"));
    let toml = account_toml(
        "home",
        &server,
        "user1",
        &md,
        &format!("interval = \"1h\"\ntls-fingerprint = {wrong:?}"),
    );
    home.write_config(&toml);
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: true });
    let daemon = Daemon::start(&home, bus.address());
    let first = notes.wait_for(1, context(&daemon, &notes));
    assert_eq!(
        first[0].summary,
        "popsync: the server's certificate has changed — home"
    );
    assert!(
        first[0].body.contains("is not the pinned one") && first[0].body.contains("5A:5A"),
        "{}",
        first[0].body
    );
    assert!(
        daemon.log().contains("is not the pinned one"),
        "{}",
        daemon.log()
    );
}

/// `popsync ARGS` beside the daemon; asserts it succeeded.
fn popsync(home: &Home, args: &[&str]) {
    let out = home.run(args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn a_refused_login_stays_paused_across_a_restart_untold_and_popsync_poll_resumes_it() {
    let server = Dovecot::start();
    let waiting = plain("waiting", 1);
    server.add_messages("user1", &waiting);
    let home = Home::new();
    let md = home.maildir("home");
    let good = account_toml("home", &server, "user1", &md, "interval = \"1h\"");
    home.write_config(&with_password(&good, "wrong"));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: true });
    let mut daemon = Daemon::start(&home, bus.address());
    daemon.wait_log_count("home: failed after", 1);
    let got = notes.wait_for(1, context(&daemon, &notes));
    assert_eq!(got[0].summary, "popsync: login refused — home");
    assert_eq!(got[0].actions, ["default", "Retry now"], "{got:#?}");

    // "Retry now" polls at once; the user, who asked, hears the answer again, in place of
    // the first notification.
    notes.invoke_action(got[0].id, "default");
    daemon.wait_log_count("home: failed after", 2);
    let got = notes.wait_for(2, context(&daemon, &notes));
    assert_eq!(got[1].summary, "popsync: login refused — home");
    assert_eq!(got[1].replaces_id, got[0].id, "{got:#?}");
    daemon.wait_log("paused until 6 h or `popsync poll --account home`");
    let status = status_json(&home);
    let paused = &status["accounts"][0]["paused"];
    assert_eq!(paused["problem"], "popsync: login refused", "{status:#}");
    assert!(
        paused["until"].as_i64().unwrap() > unix_now() + 5 * 3600,
        "{status:#}"
    );
    let text = String::from_utf8(home.run(&["status"]).stdout).unwrap();
    assert!(
        text.contains("paused:        login refused (since")
            && text.contains("or now with `popsync poll --account home`"),
        "{text}"
    );

    // A restart: still paused, not polled, not told again.
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
    let mut daemon = Daemon::start(&home, bus.address());
    daemon.wait_log("home: still paused (popsync: login refused); tried again in ");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(daemon.count("home: failed after"), 0, "{}", daemon.log());
    assert_eq!(
        notes.notifications().len(),
        2,
        "{}",
        context(&daemon, &notes)()
    );

    // `popsync poll` tries it: refused again, which the user already knows.
    popsync(&home, &["poll", "--account", "home"]);
    daemon.wait_log_count("home: failed after", 1);
    daemon.wait_log_count("paused until", 1);
    assert_eq!(
        notes.notifications().len(),
        2,
        "{}",
        context(&daemon, &notes)()
    );

    // The password is fixed in the file and `popsync poll` asked for, as the notification
    // said: the file is read again, the mail comes, and the user hears that it works.
    home.write_config(&good);
    popsync(&home, &["poll", "--account", "home"]);
    daemon.wait_log("changed since it was read: reading it again");
    wait_for_mail(&daemon, &md, &waiting);
    let got = notes.wait_for(4, context(&daemon, &notes));
    assert_new_mail_note(&got[2], "1 new message — home", "Alice Example — waiting 0");
    assert_eq!(got[3].summary, "popsync: working again — home");
    assert!(status_json(&home)["accounts"][0]["paused"].is_null());
    daemon.assert_running();
}

#[test]
fn an_outage_of_a_server_is_told_once_for_its_accounts_and_all_fetch_again_when_it_returns() {
    let server = Dovecot::start();
    let home = Home::new();
    let names = ["home", "shop", "work"];
    let mut toml = "notify-failure-after = \"2s\"\n\n".to_owned();
    let mut mds = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let md = home.maildir(name);
        let user = format!("user{}", i + 1);
        server.add_messages(&user, &plain(name, 1));
        toml.push_str(&account_toml(
            name,
            &server,
            &user,
            &md,
            "interval = \"1h\"",
        ));
        mds.push(md);
    }
    home.write_config(&toml);
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: true });
    let daemon = Daemon::start(&home, bus.address());
    for (name, md) in names.iter().zip(&mds) {
        wait_for_mail(&daemon, md, &plain(name, 1));
    }
    // The first polls after the start: one notification sums them up.
    let got = notes.wait_for(1, context(&daemon, &notes));
    assert_eq!(got[0].summary, "3 new messages in 3 accounts", "{got:#?}");
    assert_eq!(
        got[0].body, "home: 1 new\nshop: 1 new\nwork: 1 new",
        "{got:#?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        notes.notifications().len(),
        1,
        "{}",
        context(&daemon, &notes)()
    );

    // The server goes away. Failures shorter than notify-failure-after are not told.
    server.stop();
    daemon.signal("USR1");
    for name in names {
        daemon.wait_log_count(&format!("{name}: failed after"), 1);
    }
    assert_eq!(
        notes.notifications().len(),
        1,
        "{}",
        context(&daemon, &notes)()
    );
    std::thread::sleep(Duration::from_millis(2100));
    daemon.signal("USR1");
    for name in names {
        daemon.wait_log_count(&format!("{name}: failed after"), 2);
    }
    let got = notes.wait_for(2, context(&daemon, &notes));
    let problem = &got[1];
    let address = format!("127.0.0.1:{}", server.tls_port);
    assert_eq!(
        problem.summary,
        format!("popsync: cannot fetch mail — {address}"),
        "{problem:#?}"
    );
    assert_eq!(
        problem.body,
        format!(
            "connection refused by {address}\n\nAccounts: home, shop, work. popsync keeps trying and tells you when it works again."
        ),
        "{problem:#?}"
    );
    assert_eq!(problem.actions, ["default", "Retry now"]);
    // Once for the three of them, and not again while it lasts.
    daemon.signal("USR1");
    for name in names {
        daemon.wait_log_count(&format!("{name}: failed after"), 3);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        notes.notifications().len(),
        2,
        "{}",
        context(&daemon, &notes)()
    );

    // The server returns. One account getting through brings the others back at once
    // (they are in backoff, their next attempt minutes away).
    server.restart();
    let later = plain("later", 2);
    server.add_messages("user3", &later);
    popsync(&home, &["poll", "--account", "home"]);
    // (Without that, shop and work would wait minutes: far past the patience here.)
    for name in names {
        daemon.wait_log_count(&done(name), 2);
    }
    daemon.wait_log("home: its server answers again: trying shop now");
    let work: Vec<Vec<u8>> = plain("work", 1).into_iter().chain(later).collect();
    wait_for_mail(&daemon, &mds[2], &work);
    let got = notes.wait_for(4, context(&daemon, &notes));
    let back = got
        .iter()
        .find(|n| n.summary.starts_with("popsync: working again"))
        .unwrap_or_else(|| panic!("{got:#?}"));
    assert_eq!(back.summary, format!("popsync: working again — {address}"));
    assert_eq!(
        back.body,
        "Mail is being fetched again for home, shop, work."
    );
    assert_eq!(back.replaces_id, problem.id, "{got:#?}");
    assert_ne!(back.app_icon, "dialog-warning");
    assert!(
        got.iter().any(|n| n.summary == "2 new messages — work"),
        "{got:#?}"
    );
}

#[test]
fn a_slow_new_mail_hook_holds_up_no_poll_and_no_stop() {
    let server = Dovecot::start();
    let home = Home::new();
    let md = home.maildir("home");
    let started = home.path().join("hook-started");
    let pids = home.path().join("hook-pids");
    let hook = home.path().join("slow-hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho $$ >> '{}'\necho \"$POPSYNC_NEW_MESSAGES\" >> '{}'\nexec sleep 120\n",
            pids.display(),
            started.display()
        ),
    )
    .unwrap();
    common::set_mode(&hook, 0o755);
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        &format!(
            "interval = \"1h\"\non-new-mail = [{}]\nhook-timeout = \"5m\"",
            toml_str(hook.to_str().unwrap())
        ),
    ));
    let mut daemon = Daemon::start(&home, &daemon::no_bus(&home));
    daemon.wait_log_count(&done("home"), 1);
    let first = plain("first", 1);
    server.add_messages("user1", &first);
    poll_and_wait(&daemon, "home", 2);
    wait_for(PATIENCE, || started.exists().then_some(())).expect("the hook did not start");
    // The hook sleeps for two minutes; the next poll does not wait for it (it would be
    // far past the patience here if it did).
    let second = plain("second", 2);
    server.add_messages("user1", &second);
    poll_and_wait(&daemon, "home", 3);
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    wait_for_mail(&daemon, &md, &all);
    wait_for(PATIENCE, || {
        (std::fs::read_to_string(&started).unwrap_or_default() == "1\n2\n").then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", std::fs::read_to_string(&started)));
    // Two hooks still running; a stop does not wait for them.
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(2));
    for pid in std::fs::read_to_string(&pids).unwrap().lines() {
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}

#[test]
fn long_subjects_end_in_an_ellipsis_and_bidi_controls_are_removed() {
    let server = Dovecot::start();
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "interval = \"1h\"",
    ));
    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let daemon = Daemon::start(&home, bus.address());
    daemon.wait_log(&done("home"));
    let long = format!("Quarterly report {}", "and more ".repeat(30));
    let batch = vec![mail(
        "=?UTF-8?B?TWFsbG9yeSDigK5mZHAuZXhl?= <m@example.org>",
        Some(&format!("=?UTF-8?Q?Invoice_=E2=80=AEcod.exe?= {long}")),
        "bidi",
    )];
    server.add_messages("user1", &batch);
    poll_and_wait(&daemon, "home", 2);
    let got = notes.wait_for(1, context(&daemon, &notes));
    let body = &got[0].body;
    let (from, subject) = body.split_once(" — ").unwrap();
    assert_eq!(from, "Mallory fdp.exe", "{body:?}");
    assert!(
        subject.starts_with("Invoice cod.exe Quarterly report and more"),
        "{body:?}"
    );
    assert_eq!(subject.chars().count(), 80, "{body:?}");
    assert!(subject.ends_with('…'), "{body:?}");
    assert!(
        !body.chars().any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}')),
        "{body:?}"
    );
}
