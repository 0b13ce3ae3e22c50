//! Trusting the server against the real Dovecot: a certificate from an unknown CA is refused
//! unless the account names the CA (`ca-file`), pins the certificate (`tls-fingerprint`,
//! pasted from what `popsync check` prints) or turns checking off
//! (`dangerous-accept-invalid-certs`, loud in the log); a pin that does not match is an error
//! of its own showing both fingerprints.

mod common;

use common::dovecot::{self, Dovecot};
use common::{Home, assert_same_messages, corpus, describe, expected_contents, maildir_contents};

/// An account for `user1` without `ca-file`, with `extra` lines.
fn account(server: &Dovecot, home: &Home, extra: &str) -> String {
    format!(
        "[[account]]\nname = \"home\"\nhost = \"127.0.0.1\"\nport = {}\nusername = \"user1\"\npassword = {:?}\nmaildir = {:?}\n{extra}\n",
        server.tls_port,
        dovecot::PASSWORD,
        home.maildir("home").display().to_string()
    )
}

/// The fingerprint `popsync check` shows for the server (with `ca-file`, so the check passes).
fn fingerprint_from_check(server: &Dovecot) -> String {
    let home = Home::new();
    home.write_config(&common::account_toml(
        "home",
        server,
        "user1",
        &home.maildir("home"),
        "",
    ));
    let out = home.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = common::stdout(&out);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("fingerprint:"))
        .unwrap_or_else(|| panic!("no fingerprint in check's output:\n{text}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

/// The server certificate's SHA-256, computed by openssl (independently of popsync).
fn openssl_fingerprint(server: &Dovecot) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&server.cert_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    // "sha256 Fingerprint=AB:CD:..." (the label's case differs between versions)
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.trim().split_once('=').unwrap().1)
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused_without_ca_file_pin_or_the_dangerous_switch() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(60, 3, None));
    let home = Home::new();
    home.write_config(&account(&server, &home, ""));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        common::stderr(&out).contains("the server's certificate was refused"),
        "{}",
        describe(&out)
    );
    assert!(
        !home.maildir("home").join("new").exists()
            || maildir_contents(&home.maildir("home")).is_empty()
    );
}

#[test]
fn the_fingerprint_check_prints_pins_the_certificate_without_any_ca() {
    let server = Dovecot::start();
    let messages = corpus::varied(61, 12, None);
    server.add_messages("user1", &messages);
    let shown = fingerprint_from_check(&server);
    assert_eq!(
        shown.to_ascii_uppercase(),
        openssl_fingerprint(&server).to_ascii_uppercase(),
        "check shows the certificate's real SHA-256"
    );
    let home = Home::new();
    home.write_config(&account(
        &server,
        &home,
        &format!("tls-fingerprint = {shown:?}"),
    ));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&messages),
    );
    // The same pin written in lower case without colons works too.
    let bare: String = shown[7..]
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    home.write_config(&account(
        &server,
        &home,
        &format!("tls-fingerprint = \"{bare}\""),
    ));
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn a_pin_that_does_not_match_is_refused_showing_both_fingerprints_even_with_the_right_ca() {
    let server = Dovecot::start();
    server.add_messages("user1", &corpus::varied(62, 4, None));
    let real = fingerprint_from_check(&server);
    let wrong = format!("sha256:{}", ["5A"; 32].join(":"));
    let home = Home::new();
    home.write_config(&format!(
        "{}ca-file = {:?}\n",
        account(&server, &home, &format!("tls-fingerprint = {wrong:?}")),
        server.ca_file.display().to_string()
    ));
    let logins = || server.log().matches("Login: user=<user1>").count();
    server.log_once("Login: user=<user1>"); // the check above logged in once
    let before = logins();
    let out = home.run(&["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("is not the pinned one")
            && err.contains(&wrong)
            && err.contains(&real)
            && err.contains("popsync check"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        logins(),
        before,
        "no login after a mismatch:\n{}",
        server.log()
    );
}

#[test]
fn dangerous_accept_invalid_certs_fetches_and_says_so_loudly_every_session() {
    let server = Dovecot::start();
    let messages = corpus::varied(63, 5, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    home.write_config(&account(
        &server,
        &home,
        "dangerous-accept-invalid-certs = true",
    ));
    for _ in 0..2 {
        let out = home.run(&["fetch", "--no-progress"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(
            common::stderr(&out).contains("WITHOUT checking its certificate"),
            "{}",
            describe(&out)
        );
    }
    assert_same_messages(
        &maildir_contents(&home.maildir("home")),
        &expected_contents(&messages),
    );
}

#[test]
fn bad_trust_settings_are_config_errors_naming_the_key() {
    let server = Dovecot::start();
    let home = Home::new();
    for (extra, key, says) in [
        (
            "tls-fingerprint = \"sha1:AB:CD\"",
            "tls-fingerprint",
            "SHA-256",
        ),
        (
            "tls-fingerprint = \"sha256:AB\"",
            "tls-fingerprint",
            "64 hex digits",
        ),
        (
            "tls-fingerprint = \"sha256:5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A\"\ndangerous-accept-invalid-certs = true",
            "dangerous-accept-invalid-certs",
            "not both",
        ),
        (
            "dangerous-accept-invalid-certs = \"yes\"",
            "dangerous-accept-invalid-certs",
            "true or false",
        ),
    ] {
        home.write_config(&account(&server, &home, extra));
        let out = home.run(&["fetch", "--no-progress"]);
        assert_eq!(out.status.code(), Some(78), "{extra}: {}", describe(&out));
        let err = common::stderr(&out);
        assert!(
            err.contains(&format!("account \"home\", key `{key}`")) && err.contains(says),
            "{extra}: {}",
            describe(&out)
        );
    }
}

/// The system's roots as OpenSSL keeps them, with the tests' CA among them: in a hashed
/// directory (`<subject hash>.0`, as `update-ca-certificates` leaves /etc/ssl/certs) popsync
/// looks the root up when the chain needs it; a bundle named by `SSL_CERT_FILE` is read.
/// Either way the account needs no `ca-file`. (Linux and the other Unix systems: Windows and
/// macOS use their own stores.)
#[test]
fn the_system_roots_are_found_in_a_hashed_directory_or_a_bundle_named_by_ssl_cert_file() {
    let server = Dovecot::start();
    let messages = corpus::varied(62, 5, None);
    server.add_messages("user1", &messages);
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-hash", "-in"])
        .arg(&server.ca_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let roots = tempfile::tempdir().unwrap();
    let hashed = roots.path().join("certs");
    std::fs::create_dir(&hashed).unwrap();
    std::fs::copy(&server.ca_file, hashed.join(format!("{hash}.0"))).unwrap();
    let bundle = roots.path().join("bundle.pem");
    std::fs::copy(&server.ca_file, &bundle).unwrap();
    let empty = roots.path().join("empty");
    std::fs::create_dir(&empty).unwrap();

    // A fetch into a new home with this environment: its exit status and the home.
    let fetch = |dir: &std::path::Path, file: Option<&std::path::Path>| {
        let home = Home::new();
        home.write_config(&account(&server, &home, ""));
        let mut cmd = home.command(&["fetch", "--no-progress"]);
        cmd.env("SSL_CERT_DIR", dir);
        match file {
            Some(file) => cmd.env("SSL_CERT_FILE", file),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        let out = cmd.output().unwrap();
        (out, home)
    };
    // The directory alone (the bundle the system has does not hold the tests' CA), then the
    // bundle with a directory that holds nothing: both fetch everything.
    for (dir, file) in [(&hashed, None), (&empty, Some(bundle.as_path()))] {
        let (out, home) = fetch(dir, file);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert_same_messages(
            &maildir_contents(&home.maildir("home")),
            &expected_contents(&messages),
        );
    }
    // Neither: refused, as without them.
    let (out, _home) = fetch(&empty, None);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
}
