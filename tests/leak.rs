//! No secret ever leaks: with the most verbose logging (`-vvv`, the protocol transcript, and
//! `RUST_LOG=trace` for everything else), a fetch that works and one whose login fails leave
//! the password nowhere — not in stdout or stderr, not in `popsync status` (text or JSON),
//! not in any file of the state directory (the SQLite database and its WAL included), not in
//! the mail. The same for an OAuth2 token, against a scripted server that accepts it and one
//! that refuses it; and for popsync's own OAuth2 sign-in against a real authorization server:
//! every token, authorization code and PKCE verifier it issued or was sent is found nowhere
//! but in the token store, and there only the refresh token popsync holds now.

mod common;
mod script;

use std::path::Path;

use common::dovecot::{self, Dovecot};
use common::{Home, corpus};
use script::{ScriptServer, expect, listing, send};

/// Every file under `dir`, recursively, that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if let Ok(data) = std::fs::read(&path)
                && data.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

/// Runs `args` with every log on; returns everything printed.
fn run_loud(home: &Home, args: &[&str]) -> (Option<i32>, String) {
    let out = home
        .command(args)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!("{}\n{}", common::stdout(&out), common::stderr(&out)),
    )
}

fn assert_nowhere(secret: &str, printed: &str, home: &Home) {
    assert!(
        !printed.contains(secret),
        "the secret was printed:\n{printed}"
    );
    // Also its base64 forms as they would appear in AUTH lines.
    let hits = files_containing(home.path(), secret.as_bytes());
    // The config file holds it (that is where the user put it); nothing else may.
    let config = home.config_path().display().to_string();
    let hits: Vec<_> = hits.into_iter().filter(|h| *h != config).collect();
    assert!(hits.is_empty(), "the secret is in {hits:?}");
}

#[test]
fn the_password_appears_in_no_output_status_state_or_mail_even_at_trace_level() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(90, 10, None));
    let home = Home::new();
    let md = home.maildir("home");
    home.write_config(&common::account_toml("home", &server, "user1", &md, ""));
    assert!(dovecot::PASSWORD.len() >= 8);

    let (code, mut printed) = run_loud(&home, &["-vvv", "fetch", "--no-progress"]);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("C: PASS <redacted>") || printed.contains("C: AUTH PLAIN <redacted>"),
        "{printed}"
    );
    for args in [&["status"][..], &["status", "--json"], &["-vvv", "check"]] {
        let (code, out) = run_loud(&home, args);
        assert_eq!(code, Some(0), "{args:?}: {out}");
        printed.push_str(&out);
    }
    assert_nowhere(dovecot::PASSWORD, &printed, &home);

    // A failing login, with the wrong password: that one must not leak either.
    let wrong = "Wr0ng-but-Secret-pw";
    home.write_config(
        &common::account_toml("home", &server, "user1", &md, "").replace(
            &format!("password = {:?}", dovecot::PASSWORD),
            &format!("password = {wrong:?}"),
        ),
    );
    let (code, mut printed) = run_loud(&home, &["-vvv", "fetch", "--no-progress"]);
    assert_eq!(code, Some(77), "{printed}");
    let (_, status) = run_loud(&home, &["status", "--json"]);
    printed.push_str(&status);
    assert!(status.contains("login refused"), "{status}");
    assert_nowhere(wrong, &printed, &home);
}

#[test]
fn an_oauth2_token_appears_in_no_output_status_or_state_accepted_or_refused() {
    use base64::Engine as _;
    let token = "ya29.Leak-Test-Token-0123456789";
    let caps = ["UIDL", "USER", "SASL XOAUTH2"];
    let response = base64::engine::general_purpose::STANDARD
        .encode(format!("user=me\x01auth=Bearer {token}\x01\x01"));
    let greet = |caps: &[&str]| vec![send("+OK ready"), expect("CAPA"), listing(caps)];
    let server = ScriptServer::start(vec![
        [
            greet(&caps),
            vec![
                expect(format!("AUTH XOAUTH2 {response}")),
                send("+OK welcome"),
                expect("CAPA"),
                listing(&caps),
                expect("UIDL"),
                listing::<&str>(&[]),
                expect("QUIT"),
                send("+OK bye"),
            ],
        ]
        .concat(),
        [
            greet(&caps),
            vec![
                expect(format!("AUTH XOAUTH2 {response}")),
                send("+ eyJzdGF0dXMiOiI0MDEifQ=="),
                expect(""),
                send("-ERR [AUTH] Invalid credentials"),
            ],
        ]
        .concat(),
    ]);
    let home = Home::new();
    home.write_config(&format!(
        "[[account]]\nname = \"home\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"dangerous-plaintext\"\nusername = \"me\"\noauth2-token-command = [\"printf\", \"%s\\n\", {token:?}]\nmaildir = {:?}\n",
        server.port(),
        home.maildir("home").display().to_string()
    ));
    let mut printed = String::new();
    let (code, out) = run_loud(&home, &["-vvv", "fetch", "--no-progress"]);
    assert_eq!(code, Some(0), "{out}");
    printed.push_str(&out);
    let (code, out) = run_loud(&home, &["-vvv", "fetch", "--no-progress"]);
    assert_eq!(code, Some(77), "{out}");
    printed.push_str(&out);
    server.finish();
    let (_, out) = run_loud(&home, &["status", "--json"]);
    printed.push_str(&out);
    assert!(printed.contains("C: AUTH XOAUTH2 <redacted>"), "{printed}");
    // The token's config line names it (the user's own file); the command's output never.
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    std::fs::write(home.config_path(), config.replace(token, "elsewhere")).unwrap();
    assert_nowhere(token, &printed, &home);
    assert_nowhere(&response, &printed, &home);
}

#[test]
fn no_oauth2_token_code_or_verifier_appears_anywhere_but_the_token_store() {
    use common::oidc::{self, Browser, BrowserLogin, Provider};
    let provider = Provider::start(2);
    let server = oidc::server(&provider);
    server.add_messages("user1", &corpus::varied(99, 3, None));
    let home = Home::new();
    home.write_config(&oidc::signin_account(&provider, &server, &home));
    let token_file = home.state_dir().join("oauth2/home.token");
    let stored = || {
        std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned()
    };

    // Signed in through the browser, logging everything.
    let login = BrowserLogin::start_with(&provider, &home, &[("RUST_LOG", "trace")]);
    let to_popsync = login.approve(&provider, "user1");
    Browser::new(provider.port()).get(&to_popsync);
    let code = to_popsync
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let out = login.output();
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    let mut printed = common::describe(&out);
    let signed_in = stored();

    // Fetches that refresh (and rotate) the tokens, and everything that shows the account.
    for args in [
        &["-vvv", "fetch", "--no-progress"][..],
        &["-vvv", "check"],
        &["status"],
        &["status", "--json"],
        &["oauth2", "status"],
    ] {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (code, out) = run_loud(&home, args);
        assert_eq!(code, Some(0), "{args:?}: {out}");
        printed.push_str(&out);
    }
    let now = stored();
    assert_ne!(now, signed_in);

    // Only the token store holds a secret, and only the refresh token popsync holds now.
    let secrets = provider.secrets();
    assert!(secrets.len() >= 8, "{secrets:?}");
    let kinds: std::collections::BTreeSet<&str> =
        secrets.iter().map(|(kind, _)| kind.as_str()).collect();
    for kind in [
        "access_token",
        "refresh_token",
        "authorization_code",
        "code_verifier",
    ] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }
    assert!(secrets.iter().any(|(_, s)| *s == now) && secrets.iter().any(|(_, s)| s == code));
    for (_, secret) in &secrets {
        assert!(
            !printed.contains(secret.as_str()),
            "a secret was printed:\n{printed}"
        );
        let hits = files_containing(home.path(), secret.as_bytes());
        let expected: Vec<String> = if *secret == now {
            vec![token_file.display().to_string()]
        } else {
            Vec::new()
        };
        assert_eq!(hits, expected, "where a secret is");
    }

    // The sign-in revoked: the refused refresh token is removed, and the refusal shows none.
    provider
        .refresh(&signed_in)
        .expect_err("a rotated refresh token is refused");
    let (code, out) = run_loud(&home, &["-vvv", "fetch", "--no-progress"]);
    assert_eq!(code, Some(77), "{out}");
    assert!(out.contains("invalid_grant"), "{out}");
    let (_, status) = run_loud(&home, &["status", "--json"]);
    for (_, secret) in provider.secrets() {
        assert_nowhere(&secret, &format!("{out}{status}"), &home);
    }
}
