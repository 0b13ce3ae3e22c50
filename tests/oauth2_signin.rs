//! OAuth2 with a real authorization server: node-oidc-provider on loopback
//! (`common::oidc`) issues the tokens, and the real Dovecot's oauth2 passdb asks that same
//! server (token introspection, RFC 7662) whether each token popsync presents is active.

mod common;

use std::time::Duration;

use common::oidc::{Browser, BrowserLogin, Provider, server, signin_account};
use common::{Home, assert_same_messages, corpus, describe, expected_contents, maildir_contents};

/// `popsync oauth2 login --device --account home`, approved as user1.
fn device_login(provider: &Provider, home: &Home) -> std::process::Output {
    common::oidc::device_login(provider, home, &["--account", "home"], "user1")
}

/// The whole sign-in by popsync: device login (the server first says `authorization_pending`,
/// then `slow_down`), fetches that refresh the access token (each refresh rotates the
/// refresh token, and popsync keeps the new one), a revoked grant (77, told to sign in
/// again), the authorization server down (75), nothing secret shown.
#[test]
fn popsync_signs_in_with_the_device_grant_and_keeps_its_tokens_fresh() {
    let mut provider = Provider::start_with(3, true);
    let server = server(&provider);
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
    // check says what signing in would do.
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let said = common::stdout(&out);
    assert!(
        said.contains("oauth2 sign-in: not signed in\n")
            && said.contains(&format!(
                "`popsync oauth2 login --account home` would open a browser at {}/auth for you \
                 to let application \"popsync-test\" use \"openid pop\", then keep the refresh \
                 token in {}",
                provider.issuer,
                token_file.display()
            ))
            && said.contains("`popsync oauth2 login --account home --device` would instead"),
        "{}",
        describe(&out)
    );

    let started = std::time::Instant::now();
    let out = device_login(&provider, &home);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // Polled after 1 s (pending), 2 s (slow_down), then 5 s more than the 1 s interval
    // later: a client that did not slow down would be told slow_down until the code expired.
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
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
            .log_once("Login: user=<user1>, method=OAUTHBEARER")
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

    // The authorization server cannot be reached: temporary (75), the sign-in kept; once it
    // answers again, the next fetch goes on with it.
    provider.reachable(false);
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("the authorization server"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        current
    );
    provider.reachable(true);
    let more = corpus::varied(97, 1, None);
    server.add_messages("user1", &more);
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let all: Vec<Vec<u8>> = all.iter().chain(&more).cloned().collect();
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&all),
    );
    let current = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();

    // A rotated refresh token used again (as a thief holding an old copy would): the server
    // refuses it and revokes the grant. popsync is told so, says to sign in again, and
    // removes the refresh token it can never use again.
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
    assert!(!token_file.exists(), "the refused refresh token is kept");
    let out = home.run(&["oauth2", "status"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("home: not signed in"),
        "{}",
        describe(&out)
    );

    // Signed in again, and logged out.
    let out = device_login(&provider, &home);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(token_file.exists());
    let out = home.run(&["oauth2", "logout", "--account", "home"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!token_file.exists());
}

/// The browser sign-in: PKCE (the server requires it), a loopback redirect on a port of
/// popsync's choosing, then a fetch with the tokens it brought.
#[test]
fn popsync_signs_in_through_the_browser_with_pkce_and_a_loopback_redirect() {
    let provider = Provider::start(60);
    let server = server(&provider);
    let messages = corpus::varied(94, 4, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&signin_account(&provider, &server, &home));

    let login = BrowserLogin::start(&provider, &home);
    assert!(
        login.url.contains("code_challenge_method=S256") && login.url.contains("state="),
        "{}",
        login.url
    );
    let user = Browser::new(provider.port());
    let to_popsync = login.approve(&provider, "user1");
    assert!(
        to_popsync.starts_with(&format!(
            "http://127.0.0.1:{}/?code=",
            login.redirect_port()
        )),
        "{to_popsync}"
    );
    let page = user.get(&to_popsync);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Signed in"), "{}", page.body);
    let out = login.output();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let code = to_popsync
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        !describe(&out).contains(code),
        "the authorization code was shown"
    );

    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let shown = common::stdout(&out);
    assert!(
        shown.contains("oauth2 sign-in: signed in (refresh token in ")
            && shown.contains("; access token good for 5")
            && shown.contains(" seconds\n"),
        "{}",
        describe(&out)
    );

    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&messages),
    );
}

/// A browser on another machine: it ends at popsync's loopback address, which does not load
/// there, and the user pastes that address into popsync instead. Two sign-ins at once each
/// get a port of their own (popsync asks the system for a free one: a port already taken is
/// never chosen).
#[test]
fn the_address_the_browser_ended_at_can_be_pasted_in() {
    let provider = Provider::start(60);
    let server = server(&provider);
    let messages = corpus::varied(96, 3, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&signin_account(&provider, &server, &home));
    let token_file = home.state_dir().join("oauth2/home.token");

    let mut login = BrowserLogin::start(&provider, &home);
    let other = BrowserLogin::start(&provider, &home);
    assert_ne!(login.redirect_port(), other.redirect_port());
    assert!(login.shown.contains("paste it here"), "{}", login.shown);
    let ended_at = login.approve(&provider, "user1");

    // Something else pasted first: explained, and popsync waits on.
    let said = login.paste("https://mail.example.net/inbox");
    assert!(
        said.contains("not the address the browser ended at"),
        "{said}"
    );
    assert!(!token_file.exists());
    // The address as a browser shows it: localhost, no closing slash.
    let shown_by_browser = ended_at.replacen(
        &format!("http://127.0.0.1:{}/?", login.redirect_port()),
        &format!("http://localhost:{}?", login.redirect_port()),
        1,
    );
    assert_ne!(shown_by_browser, ended_at);
    let said = login.paste(&shown_by_browser);
    assert!(said.starts_with("signed in"), "{said}");
    let out = login.output();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(token_file.exists());
    let code = ended_at
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!describe(&out).contains(code), "the code was shown");

    // The other sign-in was still waiting on its own port; it is given up.
    let mut other = other;
    other.child.kill().unwrap();
    let _ = other.child.wait();

    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&messages),
    );
}

/// Declined in the browser (`error=access_denied`), or an answer with another `state`: a
/// clear refusal, and nothing stored.
#[test]
fn a_declined_or_forged_browser_answer_is_refused_and_nothing_is_stored() {
    let provider = Provider::start(60);
    let server = server(&provider);
    let home = Home::new();
    home.write_config(&signin_account(&provider, &server, &home));
    let token_file = home.state_dir().join("oauth2/home.token");

    // The user cancels on the log-in page.
    let login = BrowserLogin::start(&provider, &home);
    let user = Browser::new(provider.port());
    let page = user.follow(user.get(&login.url));
    let action = page
        .body
        .split("action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("the log-in page: {}", page.body))
        .to_owned();
    let page = user.follow(user.get(&format!("{action}/abort")));
    let to_popsync = page.location.expect("sent back to popsync");
    assert!(to_popsync.contains("error=access_denied"), "{to_popsync}");
    let answer = user.get(&to_popsync);
    assert_eq!(answer.status, 403, "{}", answer.body);
    let out = login.output();
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stderr(&out)
            .contains("the sign-in was declined (access_denied); nothing was stored"),
        "{}",
        describe(&out)
    );
    assert!(!token_file.exists());

    // An answer that does not carry the state popsync sent.
    let login = BrowserLogin::start(&provider, &home);
    let forged = format!(
        "http://127.0.0.1:{}/?code=forged-code&state=not-the-one",
        login.redirect_port()
    );
    let answer = Browser::new(provider.port()).get(&forged);
    assert_eq!(answer.status, 400, "{}", answer.body);
    let out = login.output();
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("a state popsync did not send"),
        "{}",
        describe(&out)
    );
    assert!(!token_file.exists());
}

/// The refresh token in the system keyring (the default store): GNOME Keyring on a private
/// bus holds it under `home/oauth2`, beside (not instead of) any password; logout removes
/// it. Without a keyring service the sign-in says to use `oauth2-token-store = "file"`.
#[test]
fn the_refresh_token_is_kept_in_the_keyring_by_default() {
    use common::dbus::Bus;
    use common::keyring::Keyring;
    let provider = Provider::start(2);
    let server = server(&provider);
    let messages = corpus::varied(95, 3, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(
        &signin_account(&provider, &server, &home).replace("oauth2-token-store = \"file\"\n", ""),
    );

    // No Secret Service on the bus: a clear refusal that names the alternative.
    let empty_bus = Bus::start();
    let login = BrowserLogin::start_with(
        &provider,
        &home,
        &[("DBUS_SESSION_BUS_ADDRESS", empty_bus.address())],
    );
    let user = Browser::new(provider.port());
    user.get(&login.approve(&provider, "user1"));
    let out = login.output();
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("no keyring service is available")
            && common::stderr(&out).contains("oauth2-token-store = \"file\""),
        "{}",
        describe(&out)
    );

    let bus = Bus::start();
    let keyring = Keyring::start(&bus);
    let env = [("DBUS_SESSION_BUS_ADDRESS", bus.address())];
    let login = BrowserLogin::start_with(&provider, &home, &env);
    let user = Browser::new(provider.port());
    user.get(&login.approve(&provider, "user1"));
    let out = login.output();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stored = keyring
        .lookup("home/oauth2")
        .expect("the refresh token is in the keyring");
    assert!(!describe(&out).contains(&stored));
    assert_eq!(keyring.lookup("home"), None, "no password entry is made");
    assert!(
        !home.state_dir().join("oauth2").exists(),
        "nothing in the state directory"
    );

    std::thread::sleep(Duration::from_secs(1));
    let out = home
        .command(&["fetch", "--no-progress"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&messages),
    );
    // Rotated at the refresh, and the keyring holds the new one.
    let rotated = keyring.lookup("home/oauth2").unwrap();
    assert_ne!(rotated, stored);

    let out = home
        .command(&["oauth2", "logout", "--account", "home"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(keyring.lookup("home/oauth2"), None);
}

/// The agent signed in with OAuth2. An access token is held between polls and renewed once
/// it is too old, and one that has expired at the server between two polls costs nothing
/// the user sees. Then the sign-in is revoked: the server refuses the token held from the
/// last poll, popsync asks for a new one, is told the grant is gone, pauses the account and
/// says once, in a problem notification and in `status`, to sign in again. Signing in again
/// resumes it at once.
#[test]
fn the_agent_renews_expired_tokens_unseen_and_pauses_a_revoked_sign_in() {
    use common::daemon::Daemon;
    use common::dbus::{Bus, Mode, NotificationServer};

    // Access tokens live 6 s: popsync renews them after 3 s.
    let provider = Provider::start(6);
    let server = server(&provider);
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&format!(
        "{}interval = \"1h\"\n",
        signin_account(&provider, &server, &home)
    ));
    let token_file = home.state_dir().join("oauth2/home.token");
    let read_token = || {
        std::fs::read_to_string(&token_file)
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    };
    let out = device_login(&provider, &home);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let signed_in = read_token();

    let bus = Bus::start();
    let notes = NotificationServer::start(&bus, Mode::Normal { actions: false });
    let mut all = corpus::varied(98, 2, None);
    server.add_messages("user1", &all);
    let daemon = Daemon::start(&home, bus.address());
    let wait_for_all = |all: &[Vec<u8>]| {
        let count = |dir: &str| std::fs::read_dir(md.join(dir)).map_or(0, |d| d.count());
        let arrived = common::wait_for(common::PATIENCE, || {
            (count("new") >= all.len() && count("tmp") == 0).then_some(())
        });
        assert!(arrived.is_some(), "{}", daemon.log());
        assert_same_messages(&maildir_contents(&md), &expected_contents(all));
    };
    let poll = |n: usize, more: u64, all: &mut Vec<Vec<u8>>| {
        let new = corpus::varied(100 + more, 1, None);
        server.add_messages("user1", &new);
        all.extend(new);
        daemon.signal("USR1");
        daemon.wait_log_count("home: done in ", n);
        wait_for_all(all);
    };
    wait_for_all(&all);
    daemon.wait_log_count("home: done in ", 1);
    let after_first = read_token();
    assert_ne!(
        after_first, signed_in,
        "the first poll refreshed (and rotated)"
    );

    // At once: the access token held from the first poll, no refresh.
    poll(2, 1, &mut all);
    assert_eq!(
        read_token(),
        after_first,
        "a refresh with a fresh token held"
    );

    // 7 s later the held token has expired at the server: renewed before the session.
    std::thread::sleep(Duration::from_secs(7));
    poll(3, 2, &mut all);
    let renewed = read_token();
    assert_ne!(renewed, after_first);
    assert_eq!(daemon.count("failed after"), 0, "{}", daemon.log());
    assert_eq!(
        daemon.count("refused the OAuth2 access token"),
        0,
        "renewed before the session, not after a refusal: {}",
        daemon.log()
    );

    // The sign-in revoked (an old refresh token replayed: the server revokes the grant and
    // every token of it, the access token popsync holds too), before that token is 3 s old.
    poll(4, 3, &mut all);
    let before_revoking = read_token();
    provider
        .refresh(&signed_in)
        .expect_err("a rotated refresh token is refused");
    let waiting = corpus::varied(110, 1, None);
    server.add_messages("user1", &waiting);
    daemon.signal("USR1");
    daemon.wait_log_count("home: failed after", 1);
    assert!(
        daemon
            .log()
            .contains("the server refused the OAuth2 access token held from an earlier poll"),
        "{}",
        daemon.log()
    );
    let got = notes.wait_for(1, || format!("{:#?}\n{}", notes.record(), daemon.log()));
    let problem = got
        .iter()
        .find(|n| n.summary.starts_with("popsync: sign in again"))
        .unwrap_or_else(|| panic!("{got:#?}"));
    assert_eq!(problem.summary, "popsync: sign in again — home");
    assert!(
        problem.body.contains("invalid_grant")
            && problem
                .body
                .ends_with("Sign in again with: popsync oauth2 login --account home"),
        "{problem:#?}"
    );
    assert!(!token_file.exists(), "the refused refresh token is removed");
    daemon.wait_log("paused until ");
    let out = home.run(&["status"]);
    let shown = common::stdout(&out);
    assert!(
        shown.contains("paused:        needs an OAuth2 sign-in (since ")
            && shown.contains("): sign in again with `popsync oauth2 login --account home`"),
        "{}",
        describe(&out)
    );
    let log = daemon.log();
    for secret in [&signed_in, &after_first, &renewed, &before_revoking] {
        assert!(!log.contains(secret.as_str()), "a refresh token was logged");
    }

    // Signed in again: the agent tries at once, and the mail that waited arrives.
    let out = device_login(&provider, &home);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    all.extend(waiting);
    wait_for_all(&all);
    let problems = notes
        .notifications()
        .iter()
        .filter(|n| n.summary.starts_with("popsync: sign in again"))
        .count();
    assert_eq!(problems, 1, "{:#?}", notes.record());
}
