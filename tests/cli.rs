//! The command line without a server: help, configuration errors, exit codes.

mod common;

use common::{Home, describe, stderr, stdout};

#[test]
fn help_explains_the_commands_and_exit_codes() {
    let home = Home::new();
    let out = home.run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for needle in [
        "fetch",
        "check",
        "--config",
        "75  temporary failure",
        "77  login refused",
        "78  configuration error",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from --help:\n{text}"
        );
    }
    let out = home.run(&["fetch", "--help"]);
    let text = stdout(&out);
    assert!(
        text.contains("--mark-seen") && text.contains("--account") && text.contains("--no-wait"),
        "{text}"
    );
}

#[test]
fn every_config_problem_is_reported_at_once_with_file_line_account_and_key() {
    let home = Home::new();
    let path = home.write_config(
        r#"
[defaults]
retention = "forever"

[[account]]
name = "home"
host = "pop.example.net"
port = "995"
username = "me"
pasword = "x"
maildir = "~/Mail"

[[account]]
name = "work"
host = "mail.example.com"
security = "ssl"
username = "me"
password-command = "pass show work"
maildir = "~/Work"
"#,
    );
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = stderr(&out);
    let file = path.display().to_string();
    for needle in [
        format!(
            "{file}:5:13: [defaults], key `retention`: must be \"keep\", \"delete\" or a duration"
        ),
        format!(
            "{file}:10:8: account \"home\", key `port`: must be a number (no quotes), not string"
        ),
        format!(
            "{file}:12:1: account \"home\", key `pasword`: unknown key (did you mean `password`?)"
        ),
        format!(
            "{file}:7:1: account \"home\", key `password`: missing: set `password` or `password-command`"
        ),
        format!(
            "{file}:18:12: account \"work\", key `security`: \"ssl\" is not one of \"tls\", \"starttls\", \"dangerous-plaintext\""
        ),
        format!(
            "{file}:20:20: account \"work\", key `password-command`: must be a list of program and arguments"
        ),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        err.starts_with("popsync: 6 problems in the configuration:"),
        "{err}"
    );
}

#[test]
fn a_toml_syntax_error_names_line_and_column() {
    let home = Home::new();
    let path = home.write_config("[[account]]\nname = \"home\nhost = \"x\"\n");
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:4:", path.display()))
            || err.contains(&format!("{}:3:", path.display())),
        "{err}"
    );
    assert!(err.contains("TOML syntax error"), "{err}");
}

const ACCOUNT: &str = "[[account]]\nname = \"home\"\nhost = \"127.0.0.1\"\nusername = \"me\"\npassword = \"hunter2\"\nmaildir = \"Mail\"\n";

#[test]
fn a_config_holding_a_password_that_others_can_read_is_refused_with_the_fix() {
    let home = Home::new();
    let path = home.write_config(ACCOUNT);
    common::set_mode(&path, 0o644);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "holds a password (account home) but can be read by anyone on this machine (mode 0644)"
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod 600 '{}'", path.display())),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    common::set_mode(&path, 0o640);
    let err = stderr(&home.run(&["fetch"]));
    assert!(
        err.contains("can be read by its group (mode 0640)"),
        "{err}"
    );
}

#[test]
fn a_readable_config_without_a_password_is_fine() {
    let home = Home::new();
    let path = home
        .write_config(&ACCOUNT.replace("password = \"hunter2\"", "password-command = [\"false\"]"));
    common::set_mode(&path, 0o644);
    let out = home.run(&["fetch", "--account", "nope"]);
    // Gets past loading the config: fails on the unknown account instead.
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no account named \"nope\""),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("(accounts: home)"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_missing_config_file_says_where_it_looked() {
    let home = Home::new();
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "no configuration file at {}",
            home.config_path().display()
        )),
        "{err}"
    );
    assert!(err.contains("config.example.toml"), "{err}");
}

#[test]
fn the_config_is_found_through_popsync_config_and_the_platform_default() {
    let home = Home::new();
    home.write_config("oops = 1\n");
    // $POPSYNC_CONFIG
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popsync"))
        .arg("fetch")
        .env("POPSYNC_CONFIG", home.config_path())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains(&format!(
            "{}:3:1: key `oops`: unknown key",
            home.config_path().display()
        )),
        "{}",
        describe(&out)
    );
    // the platform default under $HOME (XDG on Linux)
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popsync"))
        .arg("fetch")
        .env_remove("POPSYNC_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains(&format!(
            "no configuration file at {}/.config/popsync/config.toml",
            home.path().display()
        )),
        "{}",
        describe(&out)
    );
}

#[test]
fn the_example_config_is_valid_and_names_every_key() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let config = popsync::config::Config::parse(&text, &example, None)
        .unwrap_or_else(|e| panic!("config.example.toml is not valid: {e}"));
    assert!(config.accounts.len() >= 2);
    let keys = popsync::config::top_keys()
        .iter()
        .chain(popsync::config::account_keys());
    for key in keys.map(|k| k.name) {
        assert!(
            text.contains(&format!("{key} =")) || text.contains(&format!("# {key} =")),
            "config.example.toml does not show `{key}`"
        );
    }
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        panic!(
            "systemd-analyze is needed for this test (Debian package systemd; scripts/test installs it)"
        );
    };
    assert!(version.status.success());
    let home = Home::new();
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    // verify wants the program to exist: put the binary under test where the unit expects
    // it, in a home directory of the test's own.
    let bin = home.path().join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_popsync"), bin.join("popsync")).unwrap();
    for unit in [
        "popsync-fetch.service",
        "popsync-fetch.timer",
        "popsync.service",
    ] {
        std::fs::copy(packaging.join(unit), home.path().join(unit)).unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--user", "--man=no"])
        .arg(home.path().join("popsync-fetch.service"))
        .arg(home.path().join("popsync-fetch.timer"))
        .arg(home.path().join("popsync.service"))
        .env("XDG_RUNTIME_DIR", home.path())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze complained:\n{}",
        describe(&out)
    );
}

#[test]
fn a_password_in_defaults_makes_the_file_private_even_when_every_account_overrides_it() {
    let home = Home::new();
    let path = home.write_config(&format!(
        "[defaults]\npassword = \"hunter2\"\n\n{}",
        ACCOUNT.replace("password = \"hunter2\"", "password-command = [\"false\"]")
    ));
    common::set_mode(&path, 0o644);
    let out = home.run(&["fetch"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        stderr(&out).contains("holds a password ([defaults])"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_usage_error_exits_64() {
    let home = Home::new();
    let out = home.run(&["fetch", "--no-such-option"]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(
        stderr(&out).contains("--no-such-option"),
        "{}",
        describe(&out)
    );
    let out = home.run(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// `popsync config`: every key of each account with its value and where it came from (the
/// account, `[defaults]`, popsync's default), the paths and the server it resolves to,
/// secrets never shown; the same as JSON.
#[test]
fn config_shows_every_key_with_its_value_and_where_it_came_from() {
    let home = Home::new();
    home.write_config(
        r#"
[defaults]
retention = "14d"
password = "Secret-In-Defaults"

[[account]]
name = "home"
host = "pop.example.net"
username = "me"
maildir = "Mail/home"

[[account]]
name = "work"
host = "pop.example.org"
port = 1995
username = "me"
password-command = ["pass", "show", "work"]
mbox = "Mail/work.mbox"
retention = "keep"
"#,
    );
    let out = home.run(&["config"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(!text.contains("Secret-In-Defaults"), "a password was shown");
    let line = |account: &str, key: &str| -> String {
        let at = text.find(&format!("\naccount {account}\n")).unwrap();
        text[at..]
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} for {account}:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("home", "retention"),
        "retention = \"14d\" ([defaults])"
    );
    assert_eq!(
        line("work", "retention"),
        "retention = \"keep\" (the account)"
    );
    assert_eq!(line("home", "password"), "password = <set> ([defaults])");
    assert_eq!(
        line("work", "password"),
        "password = <set> ([defaults], not used: the account's own login source wins)"
    );
    assert_eq!(
        line("home", "timeout"),
        "timeout = \"1m\" (popsync's default)"
    );
    let maildir = home.path().join("Mail/home");
    assert!(
        text.contains(&format!(
            "delivers to:    the Maildir {}",
            maildir.display()
        )) && text.contains("server:         pop.example.org:1995 (implicit TLS)"),
        "{text}"
    );

    let out = home.run(&["config", "--json", "--account", "work"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["accounts"].as_array().unwrap().len(), 1);
    let keys = v["accounts"][0]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), popsync::config::account_keys().len());
    let port = keys.iter().find(|k| k["key"] == "port").unwrap();
    assert_eq!(
        (port["value"].as_str(), port["from"].as_str()),
        (Some("1995"), Some("account"))
    );
    assert!(!stdout(&out).contains("Secret-In-Defaults"));
}

/// `popsync config` shows each `[[imap]]` section too (IMAP's defaults, its secret as
/// `<set>`), and with `--account`, only the sections those accounts deliver into.
#[test]
fn config_shows_the_imap_destinations_accounts_deliver_into() {
    let home = Home::new();
    home.write_config(
        r#"
[[imap]]
name = "dest"
host = "imap.example.net"
username = "me"
password = "Imap-Secret"
mailbox = "From ISP"

[[imap]]
name = "other"
host = "imap.example.org"
security = "starttls"
username = "me"
password-keyring = true

[[account]]
name = "isp"
host = "pop.example.net"
username = "me"
password = "p"
imap-destination = "dest"
"#,
    );
    let out = home.run(&["config"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("Imap-Secret"),
        "a password was shown:\n{text}"
    );
    assert!(
        text.contains(
            "delivers to:    the IMAP mailbox \"From ISP\" of dest (me at imap.example.net)"
        ) && text.contains("\n[[imap]] dest\n")
            && text.contains("server:         imap.example.net:993 (implicit TLS)")
            && text.contains("\n[[imap]] other\n")
            && text.contains("server:         imap.example.org:143 (STLS)"),
        "{text}"
    );
    let section = &text[text.find("\n[[imap]] dest\n").unwrap()..];
    let shown = |key: &str| {
        section
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} = ")))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(shown("password"), "password = <set> (the section)");
    assert_eq!(
        shown("port"),
        "port = 993 for \"tls\", 143 otherwise (popsync's default)"
    );
    assert_eq!(shown("mailbox"), "mailbox = \"From ISP\" (the section)");

    let out = home.run(&["config", "--json", "--account", "isp"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let imap = v["imap"].as_array().unwrap();
    assert_eq!(imap.len(), 1, "{v}");
    assert_eq!(imap[0]["name"], "dest");
    assert_eq!(
        imap[0]["keys"].as_array().unwrap().len(),
        popsync::delivery::imap::section_keys().len()
    );
}
