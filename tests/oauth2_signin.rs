//! OAuth2 with a real authorization server: node-oidc-provider on loopback
//! (`common::oidc`) issues the tokens, and the real Dovecot's oauth2 passdb asks that same
//! server (token introspection, RFC 7662) whether each token popsync presents is active.

mod common;

use std::time::Duration;

use common::dovecot::{self, Dovecot};
use common::oidc::Provider;
use common::{Home, assert_same_messages, corpus, describe, expected_contents, maildir_contents};

/// An account for user1 whose access token is printed by `cat token_file`.
fn token_account(server: &Dovecot, home: &Home, token_file: &std::path::Path) -> String {
    common::account_toml("home", server, "user1", &home.maildir("home"), "").replace(
        &format!("password = {:?}", dovecot::PASSWORD),
        &format!(
            "oauth2-token-command = [\"cat\", {:?}]",
            token_file.display().to_string()
        ),
    )
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
    home.write_config(&token_account(&server, &home, &token_file));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&first),
    );
    assert!(
        server
            .log()
            .contains("Login: user=<user1>, method=OAUTHBEARER"),
        "{}",
        server.log()
    );

    // Expired: the server calls it inactive, Dovecot refuses the login.
    common::wait_for(Duration::from_secs(15), || {
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
