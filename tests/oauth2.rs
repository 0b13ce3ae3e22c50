//! OAuth2 against the real Dovecot: its oauth2 passdb checks each access token with a token
//! introspection endpoint the test runs. popsync gets the token from `oauth2-token-command`
//! before every session, logs in with OAUTHBEARER (what Dovecot offers first) or XOAUTH2 when
//! told to, over TLS; a token the endpoint calls inactive is refused with the server's
//! reason, and password accounts on the same server go on working. The last test takes its
//! tokens from a real authorization server (node-oidc-provider) instead.

mod common;

use common::dovecot::{self, Dovecot};
use common::oauth::Introspection;
use common::oidc::Provider;
use common::{Home, assert_same_messages, corpus, describe, expected_contents, maildir_contents};

const GOOD: &str = "ya29.good-token-for-user1";

fn server(introspection: &Introspection) -> Dovecot {
    Dovecot::start_with(dovecot::Options {
        oauth2: Some(introspection.passdb()),
        ..dovecot::Options::default()
    })
}

/// An account for user1 whose token is printed by a script reading `token_file` (so the
/// test can change the token between runs, as a refreshing helper would).
fn token_account(
    server: &Dovecot,
    home: &Home,
    token_file: &std::path::Path,
    auth: &str,
) -> String {
    common::account_toml(
        "home",
        server,
        "user1",
        &home.maildir("home"),
        &format!("auth = {auth:?}"),
    )
    .replace(
        &format!("password = {:?}", dovecot::PASSWORD),
        &format!(
            "oauth2-token-command = [\"cat\", {:?}]",
            token_file.display().to_string()
        ),
    )
}

#[test]
fn a_valid_token_logs_in_with_oauthbearer_and_a_refreshed_one_is_used_next_time() {
    let endpoint = Introspection::start(&[(GOOD, "user1"), ("ya29.refreshed", "user1")]);
    let server = server(&endpoint);
    let first = corpus::varied(80, 8, None);
    server.add_messages("user1", &first);
    let home = Home::new();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, format!("{GOOD}\n")).unwrap();
    home.write_config(&token_account(&server, &home, &token_file, "auto"));

    let out = home.run(&["-v", "fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&first),
    );
    assert!(
        server
            .log_once("Login: user=<user1>, method=OAUTHBEARER")
            .contains("Login: user=<user1>, method=OAUTHBEARER"),
        "{}",
        server.log()
    );
    // The token command ran before the session, and gave the good token.
    let asked = endpoint.asked();
    assert!(
        !asked.is_empty() && asked.iter().all(|t| t == GOOD),
        "{asked:?}"
    );
    let before = asked.len();

    // The helper refreshed the token: the next session uses the new one.
    std::fs::write(&token_file, "ya29.refreshed\n").unwrap();
    let later = corpus::varied(81, 3, None);
    server.add_messages("user1", &later);
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let asked = endpoint.asked();
    assert!(
        asked.len() > before && asked[before..].iter().all(|t| t == "ya29.refreshed"),
        "{asked:?}"
    );
    let all: Vec<Vec<u8>> = first.iter().chain(&later).cloned().collect();
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&all),
    );
}

#[test]
fn xoauth2_works_when_configured_and_a_long_token_goes_after_the_continuation() {
    let long = format!("eyJ0eXAiOiJKV1QiLCJub25jZSI6.{}", "A".repeat(1500));
    let endpoint = Introspection::start(&[(long.as_str(), "user1")]);
    let server = server(&endpoint);
    let messages = corpus::varied(82, 4, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, format!("{long}\n")).unwrap();
    home.write_config(&token_account(&server, &home, &token_file, "xoauth2"));
    let out = home.run(&["-vvv", "fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("C: AUTH XOAUTH2\n")
            || err.contains("C: AUTH XOAUTH2\r")
            || err
                .lines()
                .any(|l| l.trim_end().ends_with("C: AUTH XOAUTH2")),
        "{err}"
    );
    assert!(!err.contains(&long[..60]), "the token was printed");
    assert!(
        server
            .log_once("Login: user=<user1>, method=XOAUTH2")
            .contains("Login: user=<user1>, method=XOAUTH2"),
        "{}",
        server.log()
    );
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&messages),
    );
}

#[test]
fn an_inactive_token_is_refused_with_the_servers_reason_and_nothing_is_fetched() {
    let endpoint = Introspection::start(&[(GOOD, "user1")]);
    let server = server(&endpoint);
    server.add_messages("user1", &corpus::varied(83, 3, None));
    let home = Home::new();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "ya29.expired-token\n").unwrap();
    home.write_config(&token_account(&server, &home, &token_file, "auto"));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains(
            "login refused (SASL OAUTHBEARER; the server's reason: {\"status\":\"invalid_token\"}"
        ) && err.contains("Authentication failed"),
        "{}",
        describe(&out)
    );
    assert!(!err.contains("ya29.expired-token"), "{err}");
    assert_eq!(endpoint.asked(), ["ya29.expired-token"]);
    assert!(
        !home.maildir("home").join("new").exists()
            || maildir_contents(&home.maildir("home")).is_empty()
    );
}

#[test]
fn password_accounts_on_the_same_server_are_unaffected_and_never_reach_the_endpoint() {
    let endpoint = Introspection::start(&[(GOOD, "user1")]);
    let server = server(&endpoint);
    let messages = corpus::varied(84, 5, None);
    server.add_messages("user2", &messages);
    let home = Home::new();
    home.write_config(&common::account_toml(
        "pw",
        &server,
        "user2",
        &home.maildir("pw"),
        "",
    ));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("pw")),
        &expected_contents(&messages),
    );
    assert!(endpoint.asked().is_empty(), "{:?}", endpoint.asked());
}

/// Tokens from a device sign-in log in; once the access token expires Dovecot refuses it
/// (77, nothing fetched), and the one from a refresh logs in again; the refresh token was
/// rotated, so the server refuses the old one from then on.
#[test]
fn tokens_from_the_authorization_server_log_in_until_they_expire_and_refreshed_ones_after() {
    let provider = Provider::start(4);
    let server = Dovecot::start_with(dovecot::Options {
        oauth2: Some(provider.passdb()),
        ..dovecot::Options::default()
    });
    let first = corpus::varied(90, 6, None);
    server.add_messages("user1", &first);

    let signed_in = provider.device_sign_in("user1");
    let home = Home::new();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, format!("{}\n", signed_in.access)).unwrap();
    home.write_config(&token_account(&server, &home, &token_file, "auto"));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&first),
    );
    assert!(
        server
            .log_once("Login: user=<user1>, method=OAUTHBEARER")
            .contains("Login: user=<user1>, method=OAUTHBEARER"),
        "{}",
        server.log()
    );

    // Expired: the server calls it inactive, Dovecot refuses the login.
    common::wait_for(std::time::Duration::from_secs(15), || {
        (!provider.is_active(&signed_in.access)).then_some(())
    })
    .expect("the access token expires");
    let later = corpus::varied(91, 3, None);
    server.add_messages("user1", &later);
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert_eq!(maildir_contents(&home.maildir("home")).len(), first.len());

    let old_refresh = signed_in.refresh.expect("a refresh token is issued");
    let refreshed = provider.refresh(&old_refresh).expect("the refresh grant");
    assert_ne!(refreshed.refresh.as_deref(), Some(old_refresh.as_str()));
    std::fs::write(&token_file, format!("{}\n", refreshed.access)).unwrap();
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let all: Vec<Vec<u8>> = first.iter().chain(&later).cloned().collect();
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&all),
    );

    let reused = provider
        .refresh(&old_refresh)
        .expect_err("a rotated refresh token is refused");
    assert!(reused.contains("invalid_grant"), "{reused}");
}
