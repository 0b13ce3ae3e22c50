//! popsync.exe, the Windows build, run under Wine against the real Dovecot: a fetch into a
//! Maildir (with Windows paths), a second fetch that finds nothing new, `status` and `check`.
//!
//! Needs the Windows binary and Wine: scripts/test builds popsync.exe (and, for Wine 8,
//! which lacks it, a bcryptprimitives.dll beside it, from tests/wine/) and says where with
//! `POPSYNC_WINDOWS_EXE`. Marked ignored so that a plain `cargo nextest run` does not need
//! them; scripts/test runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::dovecot::{self, Dovecot};
use common::{Home, assert_same_messages, corpus, describe, expected_contents, maildir_contents};

/// A path as a Windows program under Wine sees it (drive Z: is /).
fn windows(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

struct Wine {
    exe: PathBuf,
    prefix: PathBuf,
}

impl Wine {
    fn new(home: &Home) -> Self {
        let exe =
            PathBuf::from(std::env::var_os("POPSYNC_WINDOWS_EXE").expect(
                "POPSYNC_WINDOWS_EXE names popsync.exe (scripts/test builds it and sets it)",
            ));
        assert!(exe.is_file(), "no popsync.exe at {}", exe.display());
        Self {
            exe,
            prefix: home.path().join("wine"),
        }
    }

    fn run(&self, config: &Path, args: &[&str]) -> Output {
        let wine = ["/usr/lib/wine/wine64", "wine64", "wine"]
            .into_iter()
            .find(|w| Command::new(w).arg("--version").output().is_ok())
            .expect(
                "Wine is needed for this test (Debian package wine64; scripts/test installs it)",
            );
        Command::new(wine)
            .arg(&self.exe)
            .arg("--config")
            .arg(windows(config))
            .args(args)
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env_remove("POPSYNC_CONFIG")
            .env_remove("POPSYNC_STATE_DIR")
            .output()
            .unwrap()
    }
}

#[test]
#[ignore = "needs popsync.exe and Wine: scripts/test builds the one, installs the other and runs it"]
fn popsync_exe_fetches_under_wine_once_and_only_once() {
    let server = Dovecot::start_with(dovecot::Options {
        plaintext_auth: true,
        ..dovecot::Options::default()
    });
    let messages = corpus::varied(160, 12, None);
    server.add_messages("user1", &messages);
    let home = Home::new();
    let wine = Wine::new(&home);
    let md = home.maildir("home");
    let config = home.path().join("windows.toml");
    std::fs::write(
        &config,
        format!(
            "state-dir = '{}'\n\n[[account]]\nname = \"home\"\nhost = \"127.0.0.1\"\nport = {}\n\
             security = \"dangerous-plaintext\"\nusername = \"user1\"\npassword = {:?}\n\
             maildir = '{}'\nnotify = false\n",
            windows(&home.state_dir()),
            server.plain_port,
            dovecot::PASSWORD,
            windows(&md),
        ),
    )
    .unwrap();

    let out = wine.run(&config, &["--version"]);
    assert!(
        common::stdout(&out).starts_with("popsync "),
        "{}",
        describe(&out)
    );
    let out = wine.run(&config, &["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("home: 12 new messages"),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));

    let out = wine.run(&config, &["fetch", "--no-progress"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("home: no new messages"),
        "{}",
        describe(&out)
    );
    assert_same_messages(&maildir_contents(&md), &expected_contents(&messages));

    let out = wine.run(&config, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("12 known"),
        "{}",
        describe(&out)
    );
    let out = wine.run(&config, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        common::stdout(&out).contains("next fetch:     0 to download"),
        "{}",
        describe(&out)
    );
}
