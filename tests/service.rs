//! `popsync service install|uninstall|status` and the service files in `packaging/`, checked
//! with the platforms' own tools where they run here (`systemd-analyze verify` and
//! `security`), with a real property-list parser (Python's `plistlib`) for launchd, and with
//! an implementation of Windows' command-line splitting written here, apart from popsync's.
//!
//! The service manager is stubbed at the process boundary: a `systemctl` first on `PATH`
//! that records every call, so popsync's real code path runs.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Home, describe, stderr, stdout};
use popsync::service::{launchd, windows};

const ACCOUNT: &str = "[[account]]\nname = \"home\"\nhost = \"127.0.0.1\"\nusername = \"me\"\npassword = \"hunter2\"\nmaildir = \"Mail\"\n";

/// The exposure score `systemd-analyze security --user` may give popsync's units, at most:
/// what the hardening in packaging/systemd/popsync.service scores with systemd 252 (the
/// rest is mostly capabilities, which a user service has none of, and namespacing, which a
/// user service cannot have without PrivateUsers=).
const SECURITY_THRESHOLD: f64 = 7.4;

/// How the stand-in `systemctl` behaves.
#[derive(Clone, Copy, PartialEq)]
enum Manager {
    /// Records the call and succeeds; `is-enabled` and `is-active` answer "enabled" and
    /// "active".
    Works,
    /// Records the call and fails the way systemctl does without a user bus.
    NoUserBus,
    /// Records the call; starting the service fails (as when the agent exits at once).
    StartFails,
    /// There is no systemctl at all.
    Missing,
}

/// A user's home with a configuration, a stand-in systemctl and a separate
/// `$XDG_CONFIG_HOME`.
struct User {
    home: Home,
    fake_bin: PathBuf,
    calls: PathBuf,
    config: PathBuf,
}

impl User {
    fn new(manager: Manager) -> Self {
        let home = Home::new();
        let config = home.write_config(ACCOUNT);
        let fake_bin = home.path().join("fake-bin");
        std::fs::create_dir(&fake_bin).unwrap();
        let calls = home.path().join("systemctl-calls");
        let script = match manager {
            Manager::Works => {
                r#"#!/bin/sh
{ printf '%s' systemctl; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$FAKE_SYSTEMCTL_CALLS"
# As systemctl answers for a unit it knows, and (with FAKE_UNKNOWN_UNIT) for one it does not.
case "$2" in
is-enabled)
    if [ -n "$FAKE_UNKNOWN_UNIT" ]; then
        echo "Failed to get unit file state for popsync.service: No such file or directory" >&2
        exit 1
    fi
    echo enabled ;;
is-active)
    if [ -n "$FAKE_UNKNOWN_UNIT" ]; then echo inactive; exit 3; fi
    echo active ;;
esac
exit 0
"#
            }
            Manager::NoUserBus => {
                r#"#!/bin/sh
{ printf '%s' systemctl; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$FAKE_SYSTEMCTL_CALLS"
echo "Failed to connect to bus: No medium found" >&2
exit 1
"#
            }
            Manager::StartFails => {
                r#"#!/bin/sh
{ printf '%s' systemctl; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$FAKE_SYSTEMCTL_CALLS"
if [ "$2" = enable ]; then
    echo "Job for popsync.service failed because the control process exited with error code." >&2
    exit 1
fi
exit 0
"#
            }
            Manager::Missing => "",
        };
        if manager != Manager::Missing {
            let path = fake_bin.join("systemctl");
            std::fs::write(&path, script).unwrap();
            common::set_mode(&path, 0o755);
        }
        Self {
            home,
            fake_bin,
            calls,
            config,
        }
    }

    fn xdg_config_home(&self) -> PathBuf {
        self.home.path().join("xdg config")
    }

    fn unit_path(&self) -> PathBuf {
        self.xdg_config_home().join("systemd/user/popsync.service")
    }

    fn xdg_data_home(&self) -> PathBuf {
        self.home.path().join("xdg data")
    }

    fn desktop_path(&self) -> PathBuf {
        self.xdg_data_home().join("applications/popsync.desktop")
    }

    /// Runs `exe --config CONFIG ARGS...` as this user, the stand-in first on PATH (and
    /// alone there: the real systemctl must never be reached).
    fn run_with(&self, exe: &Path, args: &[&str]) -> Output {
        Command::new(exe)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("POPSYNC_CONFIG")
            .env_remove("POPSYNC_STATE_DIR")
            .env_remove("RUST_LOG")
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.xdg_config_home())
            .env("XDG_DATA_HOME", self.xdg_data_home())
            .env("PATH", &self.fake_bin)
            .env("FAKE_SYSTEMCTL_CALLS", &self.calls)
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(Path::new(env!("CARGO_BIN_EXE_popsync")), args)
    }

    /// The systemctl calls since the last look, each as its arguments.
    fn take_calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.calls).unwrap_or_default();
        let _ = std::fs::remove_file(&self.calls);
        text.lines()
            .map(|l| l.split('\t').skip(1).collect::<Vec<_>>().join(" "))
            .collect()
    }
}

/// The files a `--dry-run` shows, path to content.
fn dry_run_files(out: &str) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut lines = out.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line.strip_prefix("# ----- begin ") else {
            continue;
        };
        let end = format!("# ----- end {path}");
        let mut content = String::new();
        for l in lines.by_ref() {
            if l == end {
                break;
            }
            content.push_str(l);
            content.push('\n');
        }
        files.insert(PathBuf::from(path), content);
    }
    files
}

/// The lines of a `--dry-run` that are commands (not comments, not file content).
fn dry_run_commands(out: &str) -> Vec<String> {
    let mut inside = false;
    let mut cmds = Vec::new();
    for line in out.lines() {
        if line.starts_with("# ----- begin ") {
            inside = true;
        } else if line.starts_with("# ----- end ") {
            inside = false;
        } else if !inside && !line.starts_with('#') {
            cmds.push(line.to_owned());
        }
    }
    cmds
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `systemd-analyze` with a home and runtime directory of the test's own.
fn systemd_analyze(home: &Path, args: &[&str], unit: &Path) -> Output {
    let version = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        version.is_ok_and(|v| v.status.success()),
        "systemd-analyze is needed for this test (Debian package systemd; scripts/test installs it)"
    );
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .output()
        .unwrap()
}

/// `systemd-analyze verify --user` says nothing at all about `unit` (it exits 0 after
/// warnings, so any output fails). The man page it checks `Documentation=man:popsync(1)`
/// against is the one `popsync generate man` makes.
fn assert_verifies(home: &Path, unit: &Path) {
    let man = home.join("man");
    std::fs::create_dir_all(man.join("man1")).unwrap();
    let page = Command::new(env!("CARGO_BIN_EXE_popsync"))
        .args(["generate", "man"])
        .output()
        .unwrap();
    assert!(page.status.success(), "{}", describe(&page));
    std::fs::write(man.join("man1/popsync.1"), &page.stdout).unwrap();
    let version = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        version.is_ok_and(|v| v.status.success()),
        "systemd-analyze is needed for this test (Debian package systemd; scripts/test installs it)"
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(unit)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify --user {} complained:\n{}\n--- the unit\n{}",
        unit.display(),
        describe(&out),
        std::fs::read_to_string(unit).unwrap()
    );
}

/// The overall exposure `systemd-analyze security --user --offline=true` gives `unit`, from
/// its last line ("→ Overall exposure level for popsync.service: 7.4 MEDIUM 😐").
fn exposure(home: &Path, unit: &Path) -> f64 {
    let out = systemd_analyze(home, &["security", "--user", "--offline=true"], unit);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    let after = last
        .split_once(": ")
        .unwrap_or_else(|| panic!("no score in {last:?}"))
        .1;
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in {last:?}"))
}

/// The words of an `ExecStart=` line the way systemd reads them: quotes and C escapes
/// undone, `%%` made `%`, and in the arguments (not the program) `$$` made `$`. Any other
/// specifier or variable fails the test: popsync must not leave one for systemd to expand.
fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next().expect("unterminated quote") {
                    c if c == first => break,
                    '\\' => word.push(match chars.next().unwrap() {
                        'n' => '\n',
                        't' => '\t',
                        c => c,
                    }),
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    word.push(chars.next().unwrap());
                } else {
                    word.push(c);
                }
            }
        }
        words.push(word);
    }
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut out = String::new();
            let mut cs = w.chars().peekable();
            while let Some(c) = cs.next() {
                match c {
                    '%' => {
                        assert_eq!(cs.next(), Some('%'), "a specifier left in {w:?}");
                        out.push('%');
                    }
                    '$' if i > 0 => {
                        assert_eq!(cs.next(), Some('$'), "a variable left in {w:?}");
                        out.push('$');
                    }
                    c => out.push(c),
                }
            }
            out
        })
        .collect()
}

fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("no ExecStart=");
    systemd_words(line)
}

#[test]
fn the_packaged_units_verify_silently_and_score_at_most_the_threshold() {
    let home = Home::new();
    // verify wants the program to exist: the binary under test, where the unit expects it.
    let bin = home.path().join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_popsync"), bin.join("popsync")).unwrap();
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    for unit in [
        "popsync.service",
        "popsync-fetch.service",
        "popsync-fetch.timer",
    ] {
        let copy = home.path().join(unit);
        std::fs::copy(packaging.join(unit), &copy).unwrap();
        assert_verifies(home.path(), &copy);
        if unit.ends_with(".service") {
            let score = exposure(home.path(), &copy);
            assert!(
                score <= SECURITY_THRESHOLD,
                "{unit}: systemd-analyze security gives {score}, above {SECURITY_THRESHOLD}"
            );
        }
    }
}

#[test]
fn the_unit_install_would_write_verifies_and_runs_this_binary_with_this_config_even_with_odd_paths()
{
    let user = User::new(Manager::Works);
    // A binary and a configuration at paths with spaces, a specifier and a variable in them.
    let odd = user.home.path().join("my bin %n $HOME");
    std::fs::create_dir(&odd).unwrap();
    let exe = odd.join("popsync");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_popsync"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_popsync"), &exe).unwrap();
    }
    let config_dir = user.home.path().join(r#"Mail "config" 100% $USER\x"#);
    std::fs::create_dir(&config_dir).unwrap();
    let config = config_dir.join("config.toml");
    std::fs::copy(&user.config, &config).unwrap();
    common::set_mode(&config, 0o600);
    let user = User { config, ..user };

    let out = user.run_with(&exe, &["service", "install", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let files = dry_run_files(&stdout(&out));
    let unit = files.get(&user.unit_path()).unwrap_or_else(|| {
        panic!(
            "no unit for {}:\n{}",
            user.unit_path().display(),
            stdout(&out)
        )
    });
    assert_eq!(
        exec_start(unit),
        [
            exe.to_str().unwrap(),
            "daemon",
            "--config",
            user.config.to_str().unwrap()
        ]
    );
    let path = user.home.path().join("popsync.service");
    std::fs::write(&path, unit).unwrap();
    assert_verifies(user.home.path(), &path);
    let score = exposure(user.home.path(), &path);
    assert!(
        score <= SECURITY_THRESHOLD,
        "systemd-analyze security gives {score}, above {SECURITY_THRESHOLD}"
    );
    // A dry run changes nothing and runs nothing.
    assert!(!user.unit_path().exists());
    assert_eq!(user.take_calls(), Vec::<String>::new());
}

#[test]
fn install_writes_the_unit_enables_and_starts_it_and_a_second_install_changes_nothing() {
    let user = User::new(Manager::Works);
    let dry = user.run(&["service", "install", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", describe(&dry));
    let planned = dry_run_files(&stdout(&dry));
    assert_eq!(
        dry_run_commands(&stdout(&dry)),
        [
            format!(
                "mkdir -p -m 755 '{}'",
                user.unit_path().parent().unwrap().display()
            ),
            format!(
                "mkdir -p -m 755 '{}'",
                user.desktop_path().parent().unwrap().display()
            ),
            "systemctl --user daemon-reload".to_owned(),
            "systemctl --user enable --now popsync.service".to_owned(),
        ]
    );
    assert_eq!(
        planned.keys().collect::<Vec<_>>(),
        [&user.unit_path(), &user.desktop_path()]
    );

    let out = user.run(&["service", "install"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        user.take_calls(),
        [
            "--user daemon-reload",
            "--user enable --now popsync.service"
        ]
    );
    let unit = std::fs::read_to_string(user.unit_path()).unwrap();
    assert_eq!(
        Some(&unit),
        planned.get(&user.unit_path()),
        "the dry run showed another file"
    );
    assert_eq!(mode(&user.unit_path()), 0o644);
    // The desktop entry the notifications' desktop-entry=popsync hint names.
    let entry = std::fs::read_to_string(user.desktop_path()).unwrap();
    assert_eq!(Some(&entry), planned.get(&user.desktop_path()));
    assert_eq!(mode(&user.desktop_path()), 0o644);
    for line in [
        "[Desktop Entry]",
        "Type=Application",
        "Name=popsync",
        "NoDisplay=true",
        "X-GNOME-UsesNotifications=true",
    ] {
        assert!(entry.lines().any(|l| l == line), "{line} in\n{entry}");
    }
    let exec = entry.lines().find_map(|l| l.strip_prefix("Exec=")).unwrap();
    assert_eq!(
        exec,
        format!(
            "{} daemon --config {}",
            env!("CARGO_BIN_EXE_popsync"),
            user.config.to_str().unwrap()
        ),
        "the test's paths need no quoting"
    );
    assert_eq!(
        exec_start(&unit),
        [
            env!("CARGO_BIN_EXE_popsync"),
            "daemon",
            "--config",
            user.config.to_str().unwrap()
        ]
    );
    assert!(
        stdout(&out).contains("journalctl --user -u popsync"),
        "{}",
        describe(&out)
    );
    // Nothing else lies about in the unit directory (no temporary file left).
    let entries: Vec<_> = std::fs::read_dir(user.unit_path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["popsync.service"]);

    // Again: the same file, untouched, and no restart of the running agent.
    let before = std::fs::metadata(user.unit_path())
        .unwrap()
        .modified()
        .unwrap();
    let again = user.run(&["service", "install"]);
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert_eq!(std::fs::read_to_string(user.unit_path()).unwrap(), unit);
    assert_eq!(
        std::fs::metadata(user.unit_path())
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert_eq!(
        user.take_calls(),
        [
            "--user daemon-reload",
            "--user enable --now popsync.service"
        ]
    );
    assert!(
        stdout(&again).contains("is up to date"),
        "{}",
        describe(&again)
    );

    // `service status` reads the file and asks systemctl.
    let status = user.run(&["service", "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));
    let text = stdout(&status);
    assert!(text.contains("(up to date)"), "{text}");
    assert!(
        text.contains("enabled:  enabled") && text.contains("running:  active"),
        "{text}"
    );
    assert_eq!(
        user.take_calls(),
        [
            "--user is-enabled popsync.service",
            "--user is-active popsync.service"
        ]
    );
}

#[test]
fn installing_for_another_config_rewrites_the_unit_and_restarts_a_running_agent() {
    let user = User::new(Manager::Works);
    let out = user.run(&["service", "install"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    user.take_calls();
    let other = user.home.path().join("other.toml");
    std::fs::copy(&user.config, &other).unwrap();
    common::set_mode(&other, 0o600);
    let user = User {
        config: other.clone(),
        ..user
    };
    let out = user.run(&["service", "install"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        user.take_calls(),
        [
            "--user daemon-reload",
            "--user try-restart popsync.service",
            "--user enable --now popsync.service"
        ]
    );
    let unit = std::fs::read_to_string(user.unit_path()).unwrap();
    assert_eq!(exec_start(&unit)[3], other.to_str().unwrap());
}

#[test]
fn uninstall_stops_the_service_and_removes_the_unit_and_a_second_one_does_nothing() {
    let user = User::new(Manager::Works);
    assert_eq!(user.run(&["service", "install"]).status.code(), Some(0));
    user.take_calls();

    let dry = user.run(&["service", "uninstall", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", describe(&dry));
    assert_eq!(
        dry_run_commands(&stdout(&dry)),
        [
            "systemctl --user disable --now popsync.service".to_owned(),
            format!("rm -f '{}'", user.unit_path().display()),
            "systemctl --user daemon-reload".to_owned(),
            format!("rm -f '{}'", user.desktop_path().display()),
        ]
    );
    assert!(user.unit_path().exists() && user.desktop_path().exists());
    assert_eq!(user.take_calls(), Vec::<String>::new());

    let out = user.run(&["service", "uninstall"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        user.take_calls(),
        [
            "--user disable --now popsync.service",
            "--user daemon-reload"
        ]
    );
    assert!(!user.unit_path().exists());
    assert!(!user.desktop_path().exists());
    // What install created is gone; the (then empty) unit directory is systemd's, and stays.
    let left: Vec<_> = std::fs::read_dir(user.unit_path().parent().unwrap())
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let again = user.run(&["service", "uninstall"]);
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        describe(&again)
    );
    assert_eq!(user.take_calls(), Vec::<String>::new());

    user.take_calls();
    let status = Command::new(env!("CARGO_BIN_EXE_popsync"))
        .args([
            "--config",
            user.config.to_str().unwrap(),
            "service",
            "status",
        ])
        .env("HOME", user.home.path())
        .env("XDG_CONFIG_HOME", user.xdg_config_home())
        .env("PATH", &user.fake_bin)
        .env("FAKE_SYSTEMCTL_CALLS", &user.calls)
        .env("FAKE_UNKNOWN_UNIT", "1")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(3), "{}", describe(&status));
    let text = stdout(&status);
    assert!(text.contains("(not installed)"), "{text}");
    assert!(
        text.contains("enabled:  no (Failed to get unit file state")
            && text.contains("running:  inactive"),
        "{text}"
    );
}

#[test]
fn without_a_user_bus_install_says_so_and_prints_the_steps_left_to_do() {
    let user = User::new(Manager::NoUserBus);
    let out = user.run(&["service", "install"]);
    // 69: EX_UNAVAILABLE, the service manager could not be reached.
    assert_eq!(out.status.code(), Some(69), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the systemd user manager is not reachable"),
        "{err}"
    );
    assert!(
        err.contains("Failed to connect to bus: No medium found"),
        "{err}"
    );
    let steps: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.starts_with("To finish by hand"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(
        steps,
        [
            "systemctl --user daemon-reload",
            "systemctl --user enable --now popsync.service"
        ]
    );
    assert!(
        err.contains(&format!(
            "the agent runs in a terminal with: {} daemon --config {}",
            env!("CARGO_BIN_EXE_popsync"),
            user.config.display()
        )),
        "{err}"
    );
    // The unit is written all the same, and only the first command was tried.
    assert!(user.unit_path().exists());
    assert_eq!(user.take_calls(), ["--user daemon-reload"]);

    let status = user.run(&["service", "status"]);
    assert_eq!(status.status.code(), Some(69), "{}", describe(&status));
}

#[test]
fn when_the_agent_does_not_start_install_says_what_systemctl_said_and_what_is_left() {
    let user = User::new(Manager::StartFails);
    let out = user.run(&["service", "install"]);
    assert_eq!(out.status.code(), Some(69), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("`systemctl --user enable --now popsync.service` failed (exit status: 1): Job for popsync.service failed"), "{err}");
    assert!(!err.contains("not reachable"), "{err}");
    assert!(
        err.contains("To finish by hand, once the cause above is mended:\n  systemctl --user enable --now popsync.service\nUntil then"),
        "{err}"
    );
    assert_eq!(
        user.take_calls(),
        [
            "--user daemon-reload",
            "--user enable --now popsync.service"
        ]
    );
}

#[test]
fn without_systemctl_install_says_it_is_not_installed() {
    let user = User::new(Manager::Missing);
    let out = user.run(&["service", "install"]);
    assert_eq!(out.status.code(), Some(69), "{}", describe(&out));
    assert!(
        stderr(&out).contains("systemctl is not installed"),
        "{}",
        describe(&out)
    );
}

#[test]
fn install_refuses_a_configuration_that_cannot_work() {
    let user = User::new(Manager::Works);
    std::fs::write(&user.config, "[[account]]\nname = \"x\"\n").unwrap();
    let out = user.run(&["service", "install"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(!user.unit_path().exists());
    assert_eq!(user.take_calls(), Vec::<String>::new());
}

/// Parses a property list with Python's plistlib: each key with its Python type and value.
fn plistlib(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let script = r#"
import json, plistlib, sys
with open(sys.argv[1], "rb") as f:
    p = plistlib.load(f)
def typed(v):
    if isinstance(v, dict):
        return {"type": "dict", "value": {k: typed(x) for k, x in v.items()}}
    if isinstance(v, list):
        return {"type": "list", "value": [typed(x) for x in v]}
    return {"type": type(v).__name__, "value": v}
print(json.dumps({k: typed(v) for k, v in p.items()}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 is needed for this test (scripts/test installs it)");
    assert!(out.status.success(), "plistlib: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn typed(v: &serde_json::Value) -> (&str, &serde_json::Value) {
    (v["type"].as_str().unwrap(), &v["value"])
}

fn check_plist(path: &Path, exe: &str, config: &str, home: &str) {
    let p = plistlib(path);
    let keys: Vec<&str> = p.keys().map(String::as_str).collect();
    let mut want = vec![
        "KeepAlive",
        "Label",
        "LimitLoadToSessionType",
        "ProcessType",
        "ProgramArguments",
        "RunAtLoad",
        "StandardErrorPath",
        "StandardOutPath",
        "ThrottleInterval",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(typed(&p["Label"]), ("str", &serde_json::json!("popsync")));
    let (t, args) = typed(&p["ProgramArguments"]);
    assert_eq!(t, "list");
    let args: Vec<(&str, &serde_json::Value)> =
        args.as_array().unwrap().iter().map(typed).collect();
    let want_args = [exe, "daemon", "--config", config];
    assert_eq!(args.len(), want_args.len());
    for ((t, v), w) in args.iter().zip(want_args) {
        assert_eq!((*t, v.as_str().unwrap()), ("str", w));
    }
    assert!(exe.starts_with('/') && config.starts_with('/'));
    assert_eq!(typed(&p["RunAtLoad"]), ("bool", &serde_json::json!(true)));
    let (t, keep) = typed(&p["KeepAlive"]);
    assert_eq!(t, "dict");
    assert_eq!(
        keep.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["SuccessfulExit"]
    );
    assert_eq!(
        typed(&keep["SuccessfulExit"]),
        ("bool", &serde_json::json!(false))
    );
    let (t, throttle) = typed(&p["ThrottleInterval"]);
    assert_eq!(t, "int");
    assert!(throttle.as_i64().unwrap() >= 10, "{throttle}");
    assert_eq!(
        typed(&p["ProcessType"]),
        ("str", &serde_json::json!("Background"))
    );
    assert_eq!(
        typed(&p["LimitLoadToSessionType"]),
        ("str", &serde_json::json!("Aqua"))
    );
    for key in ["StandardOutPath", "StandardErrorPath"] {
        let (t, v) = typed(&p[key]);
        assert_eq!(t, "str");
        assert_eq!(
            v.as_str().unwrap(),
            format!("{home}/Library/Logs/popsync/popsync.log"),
            "{key}"
        );
    }
}

#[test]
fn the_launchd_plist_parses_with_plistlib_and_has_the_keys_launchd_needs() {
    let dir = Home::new();
    for (exe, config, home) in [
        (
            "/Users/me/.cargo/bin/popsync",
            "/Users/me/Library/Application Support/popsync/config.toml",
            "/Users/me",
        ),
        (
            "/Users/a&b <c>/bin dir/popsync",
            "/Users/a&b <c>/Library/Application Support/popsync/\"config\" 100%.toml",
            "/Users/a&b <c>",
        ),
    ] {
        let plist = launchd::plist(Path::new(exe), Path::new(config), Path::new(home)).unwrap();
        let path = dir.path().join("popsync.plist");
        std::fs::write(&path, plist).unwrap();
        check_plist(&path, exe, config, home);
    }
}

/// A packaged example must be what popsync writes for the same paths; on a difference the
/// file popsync writes now is left beside it as NAME.failed.
fn assert_packaged(relative: &str, now: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let packaged = std::fs::read_to_string(&path).unwrap_or_default();
    if packaged != now {
        let failed = path.with_extension(format!(
            "{}.failed",
            path.extension().unwrap().to_string_lossy()
        ));
        std::fs::write(&failed, now).unwrap();
        panic!(
            "{relative} is not what popsync writes now, which is in {}",
            failed.display()
        );
    }
}

const EXAMPLE_MAC_HOME: &str = "/Users/you";
const EXAMPLE_WINDOWS_EXE: &str = r"C:\Users\Jane Doe\.cargo\bin\popsync.exe";
const EXAMPLE_WINDOWS_CONFIG: &str =
    r"C:\Users\Jane Doe\AppData\Roaming\popsync\config\config.toml";

#[test]
fn the_packaged_plist_is_what_install_writes_and_parses() {
    let exe = format!("{EXAMPLE_MAC_HOME}/.cargo/bin/popsync");
    let config = format!("{EXAMPLE_MAC_HOME}/Library/Application Support/popsync/config.toml");
    let now = launchd::plist(
        Path::new(&exe),
        Path::new(&config),
        Path::new(EXAMPLE_MAC_HOME),
    )
    .unwrap();
    assert_packaged("packaging/launchd/popsync.plist", &now);
    check_plist(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/launchd/popsync.plist"),
        &exe,
        &config,
        EXAMPLE_MAC_HOME,
    );
}

/// Splits a command line the way Windows' `CommandLineToArgvW` (and the Microsoft C runtime
/// since 2008) does: the program up to the closing quote (or white space) with no escapes;
/// then arguments where 2n backslashes before a quote are n backslashes and the quote opens
/// or closes quoting, 2n+1 are n and a literal quote, other backslashes are themselves, and
/// `""` inside quotes is a literal quote.
fn windows_split(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut argv = Vec::new();
    let mut program = String::new();
    if chars.first() == Some(&'"') {
        i = 1;
        while i < chars.len() && chars[i] != '"' {
            program.push(chars[i]);
            i += 1;
        }
        i += 1;
    } else {
        while i < chars.len() && chars[i] != ' ' && chars[i] != '\t' {
            program.push(chars[i]);
            i += 1;
        }
    }
    argv.push(program);
    loop {
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut arg = String::new();
        let mut quoted = false;
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' {
                let start = i;
                while i < chars.len() && chars[i] == '\\' {
                    i += 1;
                }
                let n = i - start;
                if i < chars.len() && chars[i] == '"' {
                    arg.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        arg.push('"');
                        i += 1;
                    }
                } else {
                    arg.extend(std::iter::repeat_n('\\', n));
                }
                continue;
            }
            if c == '"' {
                if quoted && chars.get(i + 1) == Some(&'"') {
                    arg.push('"');
                    i += 2;
                    continue;
                }
                quoted = !quoted;
                i += 1;
                continue;
            }
            if !quoted && (c == ' ' || c == '\t') {
                break;
            }
            arg.push(c);
            i += 1;
        }
        argv.push(arg);
    }
    argv
}

#[test]
fn the_splitter_here_agrees_with_microsofts_documented_examples() {
    // The table in Microsoft's "Parsing C command-line arguments".
    for (line, want) in [
        (r#"p "a b c" d e"#, vec!["a b c", "d", "e"]),
        (r#"p "ab\"c" "\\" d"#, vec![r#"ab"c"#, r"\", "d"]),
        (r#"p a\\\b d"e f"g h"#, vec![r"a\\\b", "de fg", "h"]),
        (r#"p a\\\"b c d"#, vec![r#"a\"b"#, "c", "d"]),
        (r#"p a\\\\"b c" d e"#, vec![r"a\\b c", "d", "e"]),
        (r#"p a"b"" c d"#, vec![r#"ab" c d"#]),
    ] {
        assert_eq!(windows_split(line)[1..], want, "{line}");
    }
}

#[test]
fn the_windows_run_command_line_splits_into_the_program_and_its_arguments_intact() {
    for (exe, config) in [
        (
            r"C:\Program Files\popsync\popsync.exe",
            r"C:\Users\Jane Doe\AppData\Roaming\popsync\config\config.toml",
        ),
        (r"C:\bin\popsync.exe", r"C:\cfg\config.toml"),
        (
            r"\\server\share\pop sync\popsync.exe",
            r"\\server\share\odd dir\ends in a backslash\",
        ),
        (
            r"C:\Users\Zoë\popsync.exe",
            r#"C:\a b\\"quoted" \\\"name\config.toml"#,
        ),
        (r"C:\two  spaces\popsync.exe", r"C:\x\ lead and trail "),
    ] {
        let line = windows::run_command_line(Path::new(exe), Path::new(config)).unwrap();
        assert_eq!(
            windows_split(&line),
            [exe, "daemon", "--config", config],
            "{line}"
        );
    }
    // Windows file names hold neither quotes nor control characters: refused, not mangled.
    assert!(windows::run_command_line(Path::new(r#"C:\a"b.exe"#), Path::new("c")).is_err());
    assert!(windows::run_command_line(Path::new("C:\\a\tb.exe"), Path::new("c")).is_err());
}

#[test]
fn the_packaged_reg_file_sets_what_install_sets_and_splits_right() {
    let line = windows::run_command_line(
        Path::new(EXAMPLE_WINDOWS_EXE),
        Path::new(EXAMPLE_WINDOWS_CONFIG),
    )
    .unwrap();
    assert_packaged("packaging/windows/popsync.reg", &windows::reg_file(&line));
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/windows/popsync.reg"),
    )
    .unwrap();
    assert!(text.starts_with("Windows Registry Editor Version 5.00\r\n"));
    // regedit reads a file in ASCII (or UTF-16 with a byte order mark).
    assert!(text.is_ascii());
    let key = "[HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run]\r\n";
    let after = &text[text.find(key).expect("no Run key") + key.len()..];
    let value_line = after.lines().next().unwrap();
    let data = value_line
        .strip_prefix("\"popsync\"=\"")
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a string value: {value_line:?}"));
    // A .reg string escapes backslashes and quotes with a backslash.
    let mut unescaped = String::new();
    let mut cs = data.chars();
    while let Some(c) = cs.next() {
        unescaped.push(if c == '\\' { cs.next().unwrap() } else { c });
    }
    assert_eq!(unescaped, line);
    assert_eq!(
        windows_split(&unescaped),
        [
            EXAMPLE_WINDOWS_EXE,
            "daemon",
            "--config",
            EXAMPLE_WINDOWS_CONFIG
        ]
    );
    assert!(text.contains("[HKEY_CURRENT_USER\\Software\\Classes\\AppUserModelId\\popsync]"));
}
