//! Retention by age against a real Dovecot, with the clock under the test's control: the
//! library's fetch is called directly with a fixed clock.

mod common;

use common::corpus;
use common::dovecot::Dovecot;
use common::{
    Home, account_toml, assert_same_messages, expected_contents, fetch_at, maildir_contents,
};
use popsync::clock::FixedClock;
use popsync::config::Config;

const DAY: i64 = 86_400;
const T0: i64 = 1_900_000_000;

#[test]
fn fourteen_day_retention_deletes_each_message_fourteen_days_after_it_was_downloaded() {
    let server = Dovecot::start();
    let early = corpus::varied(20, 10, None);
    server.add_messages("user1", &early);
    let home = Home::new();
    let md = home.maildir("home");
    let path = home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "retention = \"14d\"",
    ));
    let config = Config::load(&path, None).unwrap();
    let clock = FixedClock::new(T0);

    let r = fetch_at(&config, &clock);
    assert_eq!((r.new_messages, r.deleted), (10, 0));

    clock.set(T0 + 10 * DAY);
    let late: Vec<Vec<u8>> = (50..55)
        .map(|i| corpus::message(20, i, corpus::Sizes::Small))
        .collect();
    server.add_messages("user1", &late);
    let r = fetch_at(&config, &clock);
    assert_eq!(
        (r.new_messages, r.deleted),
        (5, 0),
        "nothing is 14 days old yet"
    );
    assert_eq!(server.message_count("user1"), 15);

    clock.set(T0 + 14 * DAY - 1);
    let r = fetch_at(&config, &clock);
    assert_eq!(
        (r.new_messages, r.deleted),
        (0, 0),
        "one second short of 14 days"
    );

    clock.set(T0 + 14 * DAY);
    let r = fetch_at(&config, &clock);
    assert_eq!(
        (r.new_messages, r.deleted),
        (0, 10),
        "the first ten are exactly 14 days old"
    );
    assert_eq!(server.message_count("user1"), 5);

    clock.set(T0 + 24 * DAY);
    let r = fetch_at(&config, &clock);
    assert_eq!((r.new_messages, r.deleted), (0, 5));
    assert_eq!(server.message_count("user1"), 0);

    let all: Vec<Vec<u8>> = early.iter().chain(&late).cloned().collect();
    assert_same_messages(&maildir_contents(&md), &expected_contents(&all));
}

#[test]
fn switching_from_keep_to_delete_deletes_what_was_downloaded_earlier() {
    let server = Dovecot::start();
    let messages = corpus::varied(21, 8, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let md = home.maildir("home");
    let path = home.write_config(&account_toml("home", &server, "user1", &md, ""));
    let clock = FixedClock::new(T0);
    let r = fetch_at(&Config::load(&path, None).unwrap(), &clock);
    assert_eq!((r.new_messages, r.deleted), (8, 0));

    let path = home.write_config(&account_toml(
        "home",
        &server,
        "user1",
        &md,
        "retention = \"delete\"",
    ));
    let r = fetch_at(&Config::load(&path, None).unwrap(), &clock);
    assert_eq!(
        (r.new_messages, r.deleted),
        (0, 8),
        "deleted without downloading again"
    );
    assert_eq!(server.message_count("user1"), 0);
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));
}
