//! Test harness shared by the integration tests: a private Dovecot POP3 server, a
//! deterministic corpus of realistic messages, a proxy that hides PIPELINING, a private
//! D-Bus session bus with a stand-in notification server, a running `popsync daemon`, and
//! helpers to run the real `popsync` binary in an isolated directory.
#![allow(dead_code)]

pub mod corpus;
pub mod daemon;
pub mod dbus;
pub mod dovecot;
pub mod imap;
pub mod keyring;
pub mod mbox;
pub mod mount;
pub mod oauth;
pub mod oidc;
pub mod proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen soon (a poll, a notification),
/// generous for a loaded machine: waiting ends as soon as it happens.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Checks `condition` every 50 ms until it gives a value or `limit` has passed.
pub fn wait_for<T>(limit: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = condition() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private directory for one popsync "user": config, state and mail.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("popsync-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn maildir(&self, name: &str) -> PathBuf {
        self.path().join("Mail").join(name)
    }

    /// Writes the config file (mode 0600) with `state-dir` set, followed by `body`.
    pub fn write_config(&self, body: &str) -> PathBuf {
        let text = format!(
            "state-dir = {:?}\n\n{body}",
            self.state_dir().display().to_string()
        );
        let path = self.config_path();
        std::fs::write(&path, text).unwrap();
        set_mode(&path, 0o600);
        path
    }

    /// Runs `popsync --config CONFIG ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_popsync"));
        cmd.arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("POPSYNC_CONFIG")
            .env_remove("POPSYNC_STATE_DIR")
            .env_remove("RUST_LOG")
            .env("HOME", self.path());
        cmd
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An account section for a Dovecot user.
pub fn account_toml(
    name: &str,
    server: &dovecot::Dovecot,
    user: &str,
    maildir: &Path,
    extra: &str,
) -> String {
    format!(
        "[[account]]\nname = {name:?}\nhost = \"127.0.0.1\"\nport = {}\nca-file = {:?}\nusername = {user:?}\npassword = {:?}\nmaildir = {:?}\n{extra}\n",
        server.tls_port,
        server.ca_file.display().to_string(),
        dovecot::PASSWORD,
        maildir.display().to_string()
    )
}

/// An account section for a Dovecot user delivering elsewhere than a Maildir: `delivery` is
/// the TOML line(s) that say where, e.g. `mbox = "/path"` or `mda = ["procmail"]`.
pub fn account_toml_to(
    name: &str,
    server: &dovecot::Dovecot,
    user: &str,
    delivery: &str,
    extra: &str,
) -> String {
    format!(
        "[[account]]\nname = {name:?}\nhost = \"127.0.0.1\"\nport = {}\nca-file = {:?}\nusername = {user:?}\npassword = {:?}\n{delivery}\n{extra}\n",
        server.tls_port,
        server.ca_file.display().to_string(),
        dovecot::PASSWORD,
    )
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The messages in a Maildir (new/ and cur/), as a multiset of contents. Panics if tmp/
/// holds anything (a complete delivery leaves nothing there).
pub fn maildir_contents(maildir: &Path) -> BTreeMap<Vec<u8>, usize> {
    let tmp: Vec<_> = std::fs::read_dir(maildir.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        tmp.is_empty(),
        "files left in {}/tmp: {tmp:?}",
        maildir.display()
    );
    let mut out = BTreeMap::new();
    for sub in ["new", "cur"] {
        let Ok(dir) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in dir {
            let e = e.unwrap();
            *out.entry(std::fs::read(e.path()).unwrap()).or_insert(0) += 1;
        }
    }
    out
}

/// The multiset of what popsync should have written for these original messages.
pub fn expected_contents<'a>(
    messages: impl IntoIterator<Item = &'a Vec<u8>>,
) -> BTreeMap<Vec<u8>, usize> {
    let mut out = BTreeMap::new();
    for m in messages {
        *out.entry(corpus::as_delivered(m)).or_insert(0) += 1;
    }
    out
}

/// Compares two multisets of messages and explains the first difference.
pub fn assert_same_messages(got: &BTreeMap<Vec<u8>, usize>, want: &BTreeMap<Vec<u8>, usize>) {
    if got == want {
        return;
    }
    let total = |m: &BTreeMap<Vec<u8>, usize>| m.values().sum::<usize>();
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(*k).copied().unwrap_or(0) < **n)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k).copied().unwrap_or(0) < **n)
        .collect();
    let show = |v: &[(&Vec<u8>, &usize)]| {
        v.iter()
            .take(3)
            .map(|(k, n)| format!("{n}x {:?}", String::from_utf8_lossy(&k[..k.len().min(160)])))
            .collect::<Vec<_>>()
            .join("\n    ")
    };
    panic!(
        "Maildir differs: {} messages, expected {}\n  missing or too few ({}):\n    {}\n  unexpected or too many ({}):\n    {}",
        total(got),
        total(want),
        missing.len(),
        show(&missing),
        extra.len(),
        show(&extra)
    );
}

/// Runs `popsync fetch` with the failpoint `point` armed and kills it once it is reached
/// (failing if it never is).
pub fn kill_at(home: &Home, point: &str) {
    use std::io::{BufRead, BufReader};
    let mut child = home
        .command(&["fetch", "--no-progress"])
        .env(popsync::failpoint::ENV, point)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let reached = line.contains("failpoint") && line.contains("reached");
            seen.push_str(&line);
            seen.push('\n');
            if reached {
                let _ = tx.send(Ok(()));
                return;
            }
        }
        let _ = tx.send(Err(seen));
    });
    let result = rx.recv_timeout(std::time::Duration::from_secs(60));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(stderr)) => {
            panic!("failpoint {point} was never reached; popsync exited {status:?}:\n{stderr}")
        }
        Err(_) => panic!("failpoint {point} was not reached within 60 s"),
    }
}

/// Runs `popsync fetch` and kills it (SIGKILL) after `delay`: whether the kill cut it off
/// (it had not finished by itself).
pub fn fetch_killed_after(home: &Home, delay: Duration) -> bool {
    use std::os::unix::process::ExitStatusExt as _;
    let mut child = home
        .command(&["fetch", "--no-progress"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap().signal() == Some(9)
}

/// The library's fetch of a configuration's first account at `clock`'s time (for tests that
/// move the clock); panics if it fails.
pub fn fetch_at(
    config: &popsync::config::Config,
    clock: &popsync::clock::FixedClock,
) -> popsync::poll::Report {
    use popsync::poll::{self, Context, FetchOptions, NoProgress};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = Context {
        state_dir: &config.state_dir,
        clock,
        progress: &NoProgress,
        connector: &popsync::pop3::Tcp,
        cancel: None,
    };
    let outcome = runtime.block_on(poll::fetch_account(
        &config.accounts[0],
        &ctx,
        &FetchOptions::default(),
    ));
    if let Some(e) = outcome.error {
        panic!("fetch failed: {}", popsync::error_chain(&e));
    }
    outcome.report
}
