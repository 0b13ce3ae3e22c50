//! An IMAP destination that signs in with popsync's own OAuth2 (the device grant, against
//! the tests' real authorization server), logging in to the real Dovecot's IMAP with
//! XOAUTH2: Dovecot's oauth2 passdb asks the authorization server whether each token is
//! active, so a revoked sign-in is refused there as it would be at Gmail.

mod common;

use common::dovecot::{Dovecot, ImapOptions, Options, PASSWORD};
use common::imap::{assert_same, config, contents, wanted};
use common::oidc::{CLIENT_ID, Provider, device_login};
use common::{Home, corpus, describe, stdout};

/// A Dovecot whose IMAP and POP3 take the authorization server's tokens.
fn server(provider: &Provider) -> Dovecot {
    Dovecot::start_with(Options {
        plaintext_auth: true,
        oauth2: Some(provider.passdb()),
        imap: Some(ImapOptions::default()),
    })
}

/// user1 fetched by POP3 (with a password) into user2's IMAP INBOX, whose `[[imap]]`
/// section signs in with OAuth2 (its refresh token kept in a file in the state directory).
fn signin_config(server: &Dovecot, provider: &Provider, extra: &str) -> String {
    let text = config(server, "INBOX", extra).replace(
        &format!("username = \"user2\"\npassword = {PASSWORD:?}\n"),
        &format!(
            "username = \"user2\"\noauth2-provider = \"custom\"\noauth2-issuer = {:?}\n\
             oauth2-client-id = {CLIENT_ID:?}\noauth2-scopes = \"openid pop\"\n\
             oauth2-token-store = \"file\"\n",
            provider.issuer
        ),
    );
    assert!(text.contains("oauth2-issuer"), "{text}");
    text
}

/// An IMAP destination signs in with popsync's own OAuth2 (the device grant, against a real
/// authorization server) and logs in with XOAUTH2: Dovecot's oauth2 passdb asks that server
/// whether each token is active.
#[test]
fn an_imap_destination_signs_in_with_oauth2_and_logs_in_with_xoauth2() {
    let provider = Provider::start(3600);
    let server = server(&provider);
    let messages = corpus::varied(43, 12, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&signin_config(&server, &provider, ""));

    // Not signed in yet: told how, and nothing is downloaded.
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("IMAP destination \"dest\" is not signed in")
            && common::stderr(&out).contains("run `popsync oauth2 login --imap dest`"),
        "{}",
        describe(&out)
    );
    assert_eq!(server.message_count("user1"), 12);
    let out = home.run(&["oauth2", "status"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        stdout(&out)
            .contains("[[imap]] dest: not signed in: run `popsync oauth2 login --imap dest`"),
        "{}",
        describe(&out)
    );

    let out = device_login(&provider, &home, &["--imap", "dest"], "user2");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("signed in: IMAP destination \"dest\" can now take mail"),
        "{}",
        describe(&out)
    );
    assert!(home.state_dir().join("oauth2/imap=dest.token").exists());

    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&messages));
    let log = server.log_once("user=<user2>, method=XOAUTH2");
    assert!(
        log.contains("imap-login: Info: Login: user=<user2>, method=XOAUTH2"),
        "{log}"
    );
    let out = home.run(&["oauth2", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("[[imap]] dest: signed in"),
        "{}",
        describe(&out)
    );
}

/// The agent delivering into an IMAP destination signed in with OAuth2, and the sign-in
/// revoked between two polls: the destination refuses the access token held from the last
/// poll, popsync asks for a new one, is told the grant is gone, and pauses the account,
/// with a notification and a `status` line that name the destination's sign-in
/// (`--imap dest`, not the account's, which uses a password). Nothing is deleted from the
/// POP3 server meanwhile; signing the destination in again resumes the account at once.
#[test]
fn a_revoked_destination_sign_in_pauses_the_account_and_names_whose_sign_in() {
    use common::daemon::Daemon;
    use common::dbus::{Bus, Mode, NotificationServer};
    let provider = Provider::start(3600);
    let server = server(&provider);
    let home = Home::new();
    home.write_config(&signin_config(
        &server,
        &provider,
        "interval = \"1h\"\nretention = \"delete\"",
    ));
    let out = device_login(&provider, &home, &["--imap", "dest"], "user2");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let token_file = home.state_dir().join("oauth2/imap=dest.token");
    let read_token = || {
        std::fs::read_to_string(&token_file)
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    };
    let signed_in = read_token();

    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let first = corpus::varied(71, 5, None);
    server.add_messages("user1", &first);
    let daemon = Daemon::start(&home, bus.address());
    daemon.wait_log("home: done in ");
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&first));
    assert_eq!(server.message_count("user1"), 0, "{}", daemon.log());
    assert_ne!(
        read_token(),
        signed_in,
        "the first poll refreshed (and rotated)"
    );

    // Revoked (the first refresh token replayed: the authorization server revokes the grant
    // and every token of it, the access token the agent holds too).
    provider
        .refresh(&signed_in)
        .expect_err("a rotated refresh token is refused");
    let waiting = corpus::varied(72, 4, None);
    server.add_messages("user1", &waiting);
    daemon.signal("USR1");
    daemon.wait_log_count("home: failed after", 1);
    assert!(
        daemon.log().contains(
            "IMAP destination dest: the server refused the OAuth2 access token held from an earlier poll"
        ),
        "{}",
        daemon.log()
    );
    let got = notes.wait_for(1, || format!("{:#?}\n{}", notes.record(), daemon.log()));
    let problem = got
        .iter()
        .find(|n| n.summary.starts_with("popsync: sign in again"))
        .unwrap_or_else(|| panic!("{got:#?}\n{}", daemon.log()));
    assert_eq!(problem.summary, "popsync: sign in again — home");
    assert!(
        problem.body.contains("IMAP destination")
            && problem
                .body
                .ends_with("Sign in again with: popsync oauth2 login --imap dest"),
        "{problem:#?}"
    );
    daemon.wait_log("paused until ");
    assert_eq!(server.message_count("user1"), 4, "nothing is deleted");
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&first));
    let out = home.run(&["status"]);
    assert!(
        stdout(&out).contains("paused:        needs an OAuth2 sign-in (since ")
            && stdout(&out).contains("): sign in again with `popsync oauth2 login --imap dest`"),
        "{}",
        describe(&out)
    );
    let out = home.run(&["oauth2", "status"]);
    assert!(
        stdout(&out)
            .contains("[[imap]] dest: not signed in: run `popsync oauth2 login --imap dest`"),
        "{}",
        describe(&out)
    );

    // Signed in again: the account is polled at once, and the mail that waited arrives.
    let out = device_login(&provider, &home, &["--imap", "dest"], "user2");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    daemon.wait_log_count("home: done in ", 2);
    let mut all = first.clone();
    all.extend(waiting);
    let (_, got) = contents(&server, "INBOX");
    assert_same(&got, &wanted(&all));
    assert_eq!(server.message_count("user1"), 0, "{}", daemon.log());
    let log = daemon.log();
    assert!(!log.contains(&signed_in), "a refresh token was logged");
}
