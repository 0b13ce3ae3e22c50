//! The reading of configuration files (what each problem says is pinned line by line in
//! `tests/config/`).

use super::*;
use crate::config::PasswordSource;
use crate::config::Retention;
use crate::delivery::maildir;
use crate::keys::closest;
use crate::pop3::{AuthMethod, Security};

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(
        text,
        Path::new("/home/u/.config/popsync/config.toml"),
        Some("/tmp/state".into()),
    )
}

fn problems(text: &str) -> Vec<String> {
    match parse_str(text) {
        Err(ConfigError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

const GOOD: &str = r#"
[defaults]
retention = "14d"
timeout = "30s"

[[account]]
name = "home"
host = "pop.example.net"
username = "me"
password = "secret"
maildir = "~/Mail/home"

[[account]]
name = "work"
host = "mail.example.com"
security = "starttls"
username = "me@example.com"
password-command = ["pass", "show", "work"]
maildir = "Mail/work"
retention = "keep"
auth = "plain"
"#;

#[test]
fn a_good_config_gets_defaults_applied() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));
    let [home, work] = &c.accounts[..] else {
        panic!()
    };
    assert_eq!(home.server.port, 995);
    assert_eq!(home.server.security, Security::Tls);
    assert_eq!(
        home.limits.retention,
        Retention::After(Duration::from_secs(14 * 86_400))
    );
    assert_eq!(home.timing.timeout, Duration::from_secs(30));
    let md = &home.delivery.settings::<maildir::Settings>().unwrap().path;
    assert!(md.is_absolute() && md.ends_with("Mail/home"));
    assert_eq!(work.server.port, 110);
    assert_eq!(work.limits.retention, Retention::Keep);
    assert_eq!(work.login.auth, Some(AuthMethod::Plain));
    assert_eq!(
        work.delivery.settings::<maildir::Settings>(),
        Some(&maildir::Settings {
            path: PathBuf::from("/home/u/.config/popsync/Mail/work")
        })
    );
    assert!(
        matches!(&work.login.password, PasswordSource::Command(argv) if argv == &["pass", "show", "work"])
    );
}

#[test]
fn every_problem_is_reported_with_file_line_account_and_key() {
    let p = problems(
        r#"
[[account]]
name = "home"
host = "pop.example.net"
port = 99999
security = "ssl"
username = "me"
pasword = "x"
maildir = "~/Mail"
retention = "sometimes"

[[account]]
host = "b"
"#,
    );
    let all = p.join("\n");
    assert!(all.contains(r#"config.toml:5:8: account "home", key `port`: must be a number from 1 to 65535, not 99999"#), "{all}");
    assert!(
        all.contains(r#"config.toml:6:12: account "home", key `security`: "ssl" is not one of"#),
        "{all}"
    );
    assert!(all.contains(r#"config.toml:8:1: account "home", key `pasword`: unknown key (did you mean `password`?)"#), "{all}");
    assert!(
        all.contains(r#"account "home", key `password`: missing"#),
        "{all}"
    );
    assert!(
        all.contains(r#"account "home", key `retention`: must be "keep", "delete" or a duration"#),
        "{all}"
    );
    assert!(
        all.contains(r##"account "#2", key `name`: missing"##),
        "{all}"
    );
    assert!(
        all.contains(r##"account "#2", key `username`: missing"##),
        "{all}"
    );
    assert!(
        all.contains(r##"account "#2", key `maildir`: missing"##),
        "{all}"
    );
    assert_eq!(p.len(), 9, "{all}");
}

#[test]
fn syntax_errors_have_line_and_column() {
    let p = problems("[[account]]\nname = \"x\nhost = 1\n");
    assert!(
        p[0].starts_with("/home/u/.config/popsync/config.toml:2:"),
        "{p:?}"
    );
    assert!(p[0].contains("TOML syntax error"), "{p:?}");
}

#[test]
fn a_bad_default_is_reported_once_as_defaults() {
    let base = "host='h'\nusername='u'\nmaildir='/m'\npassword='p'\n";
    let p = problems(&format!(
        "[defaults]\ntimeout = 'soon'\n[[account]]\nname='a'\n{base}[[account]]\nname='b'\n{base}"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains(":2:11: [defaults], key `timeout`: "), "{p:?}");
}

#[test]
fn a_port_in_the_host_and_line_breaks_in_credentials_are_refused() {
    let p = problems(
        "[[account]]\nname='a'\nhost='pop.example.net:995'\nusername=\"u\\r\\nDELE 1\"\nmaildir='/m'\npassword=\"p\\n\"\n",
    );
    let all = p.join("\n");
    assert!(all.contains("the port goes in `port`"), "{all}");
    assert!(
        all.contains("key `username`: must not contain line breaks"),
        "{all}"
    );
    assert!(
        all.contains("key `password`: must not contain line breaks"),
        "{all}"
    );
    let c =
        parse_str("[[account]]\nname='a'\nhost='::1'\nusername='u'\nmaildir='/m'\npassword='p'\n")
            .unwrap();
    assert_eq!(
        c.accounts[0].server.host, "::1",
        "an IPv6 address is a host"
    );
}

#[test]
fn a_relative_password_program_is_found_from_the_config_directory() {
    let c = parse_str("[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword-command=['bin/pw', 'x']\n").unwrap();
    let PasswordSource::Command(argv) = &c.accounts[0].login.password else {
        panic!()
    };
    assert_eq!(argv, &["/home/u/.config/popsync/bin/pw", "x"]);
    let c = parse_str("[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword-command=['pass', 'x']\n").unwrap();
    let PasswordSource::Command(argv) = &c.accounts[0].login.password else {
        panic!()
    };
    assert_eq!(argv[0], "pass", "a bare name is looked up in PATH");
}

#[test]
fn single_bracket_account_is_explained() {
    let p = problems("[account]\nname = \"x\"\n");
    assert!(p[0].contains("double brackets"), "{p:?}");
}

#[test]
fn both_password_sources_are_refused() {
    let p = problems(
        "[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword='p'\npassword-command=['x']\n",
    );
    assert!(p[0].contains("not both"), "{p:?}");
}

#[test]
fn password_command_must_be_a_list() {
    let p = problems(
        "[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword-command='pass show x'\n",
    );
    assert!(p[0].contains("not run by a shell"), "{p:?}");
}

#[test]
fn duplicate_and_bad_names() {
    let base = "host='h'\nusername='u'\nmaildir='/m'\npassword='p'\n";
    let p = problems(&format!(
        "[[account]]\nname='a'\n{base}[[account]]\nname='a'\n{base}[[account]]\nname='../x'\n{base}"
    ));
    let all = p.join("\n");
    assert!(all.contains("names must be unique"), "{all}");
    assert!(
        all.contains(r#"account "../x", key `name`: names may use"#),
        "{all}"
    );
}

#[test]
fn keys_at_top_level_are_pointed_to_the_right_place() {
    let p = problems(
        "host = 'x'\n[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword='p'\n",
    );
    assert!(p[0].contains("belong in an [[account]] section"), "{p:?}");
}

#[test]
fn no_accounts() {
    let p = problems("state-dir = '/x'\n");
    assert!(p[0].contains("no accounts"), "{p:?}");
}

#[test]
fn closest_key_suggestions() {
    let keys: Vec<&str> = account_keys().iter().map(|k| k.name).collect();
    assert_eq!(closest("pasword", &keys), Some("password"));
    assert_eq!(closest("mail-dir", &keys), Some("maildir"));
    assert_eq!(closest("zzzzzz", &keys), None);
}

/// A pause ends when what decides the account's login changes: for an account delivering
/// into an IMAP mailbox, that mailbox's login too. Other accounts' digests are what they
/// were before IMAP delivery existed (a pause kept over an upgrade stays kept).
#[test]
fn the_login_digest_covers_the_imap_destination_and_only_there() {
    let imap = |password: &str| {
        format!(
            "[[imap]]\nname = \"dest\"\nhost = \"imap.example.net\"\nusername = \"me\"\n\
             password = {password:?}\n\n{GOOD}"
        )
        .replace("maildir = \"~/Mail/home\"", "imap-destination = \"dest\"")
    };
    let digest = |text: &str, name: &str| {
        let config = parse_str(text).unwrap();
        let account = config.accounts.iter().find(|a| a.name == name).unwrap();
        account.login_digest()
    };
    let (one, two) = (imap("first"), imap("second"));
    assert_ne!(digest(&one, "home"), digest(&two, "home"));
    assert_eq!(digest(&one, "work"), digest(&two, "work"));
    assert_eq!(digest(&one, "home"), digest(&imap("first"), "home"));
    // As before: the server, the login and where its secret comes from.
    assert_eq!(digest(GOOD, "home"), "27b707f22125a4d4e9fadbf5cf503c11");
}
