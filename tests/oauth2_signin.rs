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

/// An account that signs in with popsync itself, through the real server's discovery
/// document, keeping its refresh token in a file.
fn signin_account(provider: &Provider, server: &Dovecot, home: &Home) -> String {
    common::account_toml("home", server, "user1", &home.maildir("home"), "").replace(
        &format!("password = {:?}\n", dovecot::PASSWORD),
        &format!(
            "oauth2-provider = \"custom\"\noauth2-issuer = {:?}\noauth2-client-id = {:?}\n\
             oauth2-scopes = \"openid pop\"\noauth2-token-store = \"file\"\n",
            provider.issuer,
            common::oidc::CLIENT_ID
        ),
    )
}

/// `popsync oauth2 login --device`, with the test approving the code in the "browser" as
/// soon as popsync shows it.
fn device_login(provider: &Provider, home: &Home) -> std::process::Output {
    use std::io::BufRead as _;
    let mut child = home
        .command(&["oauth2", "login", "--device", "--account", "home"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut shown = String::new();
    let url = loop {
        let line = lines
            .next()
            .expect("popsync shows where to sign in")
            .unwrap();
        shown.push_str(&line);
        shown.push('\n');
        if let Some(at) = line.find("http")
            && line.contains("user_code=")
        {
            let url = &line[at..];
            break url.split([' ', ',']).next().unwrap().to_owned();
        }
    };
    common::oidc::Browser::new(provider.port()).approve_device(&url, "user1");
    for line in lines {
        shown.push_str(&line.unwrap());
        shown.push('\n');
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = shown.into_bytes();
    out
}

/// The whole sign-in by popsync: device login, fetches that refresh the access token (each
/// refresh rotates the refresh token, and popsync keeps the new one), a revoked grant (77,
/// told to sign in again), the authorization server down (75), nothing secret shown.
#[test]
fn popsync_signs_in_with_the_device_grant_and_keeps_its_tokens_fresh() {
    let provider = Provider::start(3);
    let server = Dovecot::start_with(dovecot::Options {
        oauth2: Some(provider.passdb()),
        ..dovecot::Options::default()
    });
    let first = corpus::varied(92, 5, None);
    server.add_messages("user1", &first);
    let home = Home::new();
    home.write_config(&signin_account(&provider, &server, &home));
    let token_file = home.state_dir().join("oauth2/home.token");

    let out = home.run(&["oauth2", "status"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("home: not signed in"),
        "{}",
        describe(&out)
    );
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("popsync oauth2 login --account home"),
        "{}",
        describe(&out)
    );

    let out = device_login(&provider, &home);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("signed in"),
        "{}",
        describe(&out)
    );
    let signed_in = std::fs::read_to_string(&token_file).unwrap();
    let signed_in = signed_in.trim().to_owned();
    assert!(!signed_in.is_empty());
    assert!(
        !describe(&out).contains(&signed_in),
        "the refresh token was shown"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = home.run(&["oauth2", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("home: signed in"),
        "{}",
        describe(&out)
    );

    let out = home.run(&["-vv", "fetch", "--no-progress"]);
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
    // The fetch refreshed the access token; the server rotated the refresh token and
    // popsync stored the new one.
    let after_fetch = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(after_fetch, signed_in);
    assert!(
        !describe(&out).contains(&after_fetch),
        "the refresh token was logged"
    );

    // Another fetch later: refreshed again, with the token popsync kept (had it used the
    // old one, the server would have refused it, and revoked the whole grant).
    std::thread::sleep(Duration::from_secs(1));
    let later = corpus::varied(93, 2, None);
    server.add_messages("user1", &later);
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let all: Vec<Vec<u8>> = first.iter().chain(&later).cloned().collect();
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&all),
    );

    let current = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(current, after_fetch);

    // A rotated refresh token used again (as a thief holding an old copy would): the server
    // refuses it and revokes the grant. popsync is told so and says to sign in again.
    let reused = provider
        .refresh(&signed_in)
        .expect_err("a rotated refresh token is refused");
    assert!(reused.contains("invalid_grant"), "{reused}");
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("invalid_grant") && err.contains("popsync oauth2 login --account home"),
        "{}",
        describe(&out)
    );
    assert!(!err.contains(&current));

    // The authorization server down: temporary.
    drop(provider);
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));

    let out = home.run(&["oauth2", "logout", "--account", "home"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!token_file.exists());
}
