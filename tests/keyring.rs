//! `password-keyring = true` against a real Secret Service (GNOME Keyring on a private
//! session bus) and the real Dovecot: `popsync password set` stores what `secret-tool`
//! then finds, a fetch logs in with it, `password delete` removes it; no password stored and
//! no keyring service at all are each a clear error that says what to do.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::dbus::Bus;
use common::dovecot::{self, Dovecot};
use common::keyring::Keyring;
use common::{Home, assert_same_messages, corpus, describe, expected_contents, maildir_contents};

/// The account for `user1` with its password in the keyring.
fn keyring_account(server: &Dovecot, home: &Home) -> String {
    common::account_toml("home", server, "user1", &home.maildir("home"), "").replace(
        &format!("password = {:?}", dovecot::PASSWORD),
        "password-keyring = true",
    )
}

/// Runs popsync with `input` on its standard input (not a terminal) and the bus.
fn run_with_input(home: &Home, bus: &Bus, args: &[&str], input: &str) -> std::process::Output {
    let mut child = home
        .command(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_password_stored_with_popsync_password_set_logs_in_and_delete_removes_it() {
    let server = Dovecot::start();
    let messages = corpus::varied(70, 6, None);
    server.add_messages("user1", &messages);
    let bus = Bus::start();
    let keyring = Keyring::start(&bus);
    let home = Home::new();
    home.write_config(&keyring_account(&server, &home));

    // Nothing stored yet: the error says how to store it.
    let out = run_with_input(&home, &bus, &["fetch", "--no-progress"], "");
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains(
            "no password stored for account \"home\"; store one with `popsync password set --account home`"
        ),
        "{}",
        describe(&out)
    );

    let out = run_with_input(
        &home,
        &bus,
        &["password", "set", "--account", "home"],
        &format!("{}\n", dovecot::PASSWORD),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        common::stdout(&out),
        "stored the password of account \"home\" in the system keyring\n"
    );
    // An independent client finds it where popsync put it.
    assert_eq!(keyring.lookup("home").as_deref(), Some(dovecot::PASSWORD));

    let out = run_with_input(&home, &bus, &["fetch", "--no-progress"], "");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&messages),
    );

    // Set again: replaced, not duplicated (a second item would make lookups ambiguous).
    let out = run_with_input(
        &home,
        &bus,
        &["password", "set", "--account", "home"],
        "a-newer-password\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(keyring.lookup("home").as_deref(), Some("a-newer-password"));

    let out = run_with_input(
        &home,
        &bus,
        &["password", "delete", "--account", "home"],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        common::stdout(&out),
        "removed the password of account \"home\" from the system keyring\n"
    );
    assert_eq!(keyring.lookup("home"), None);
    let out = run_with_input(
        &home,
        &bus,
        &["password", "delete", "--account", "home"],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        common::stdout(&out),
        "the system keyring held no password for account \"home\"\n"
    );
}

#[test]
fn a_password_put_there_by_another_tool_is_used_too() {
    let server = Dovecot::start();
    let messages = corpus::varied(71, 3, None);
    server.add_messages("user1", &messages);
    let bus = Bus::start();
    let keyring = Keyring::start(&bus);
    let (ok, _) = keyring.secret_tool(
        &[
            "store",
            "--label=popsync home",
            "service",
            "popsync",
            "username",
            "home",
        ],
        Some(dovecot::PASSWORD),
    );
    assert!(ok, "secret-tool store failed");
    let home = Home::new();
    home.write_config(&keyring_account(&server, &home));
    let out = run_with_input(&home, &bus, &["fetch", "--no-progress"], "");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&messages),
    );
}

#[test]
fn without_a_keyring_service_the_error_names_the_alternatives_and_popsync_tries_again_later() {
    let server = Dovecot::start();
    let bus = Bus::start(); // no Secret Service on it
    let home = Home::new();
    home.write_config(&keyring_account(&server, &home));
    let out = run_with_input(&home, &bus, &["fetch", "--no-progress"], "");
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("no keyring service is available")
            && err.contains("org.freedesktop.secrets")
            && err.contains("use `password-command` or `password` instead"),
        "{}",
        describe(&out)
    );
    let out = run_with_input(
        &home,
        &bus,
        &["password", "set", "--account", "home"],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("no keyring service is available"),
        "{}",
        describe(&out)
    );
}

#[test]
fn password_set_refuses_an_unknown_account_and_an_empty_password() {
    let server = Dovecot::start();
    let bus = Bus::start();
    let keyring = Keyring::start(&bus);
    let home = Home::new();
    home.write_config(&keyring_account(&server, &home));
    let out = run_with_input(
        &home,
        &bus,
        &["password", "set", "--account", "hom"],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(common::stderr(&out).contains("hom"), "{}", describe(&out));
    let out = run_with_input(&home, &bus, &["password", "set", "--account", "home"], "\n");
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("the password is empty; nothing was stored"),
        "{}",
        describe(&out)
    );
    assert_eq!(keyring.lookup("home"), None);
    keyring.stop();
}
