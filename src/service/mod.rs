//! Running the agent as the user's service: the systemd user unit (Linux and the BSDs with
//! systemd), the launchd agent (macOS) or the Run value (Windows), written for the popsync
//! binary that runs and the configuration in use, and the service manager told to start it.
//!
//! Everything is decided first, as a list of [`Action`]s, by pure functions compiled on every
//! platform (so the plist and the Windows command line are tested on Linux too); `--dry-run`
//! prints that list, and [`execute`] carries it out in order, stopping at the first command
//! that fails so that what is left can be printed as the steps to finish by hand. The service
//! manager's tools are run only through [`Cmd`], looked up on `PATH`.
//!
//! Guarantees: installing twice gives the same files and leaves a running agent alone unless
//! its file changed; uninstalling stops the agent first and then removes what installing
//! created; a file is replaced in one rename, never left half-written.

pub mod command;
pub mod desktop;
pub mod launchd;
pub mod systemd;
pub mod windows;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use command::Cmd;

/// The service managers popsync can install itself into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// A systemd user unit.
    Systemd,
    /// A launchd agent in the user's GUI session.
    Launchd,
    /// A value under the user's Run key.
    Windows,
}

impl Platform {
    /// The one for the platform popsync was built for.
    pub fn current() -> Self {
        if cfg!(windows) {
            Self::Windows
        } else if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }

    /// What it is called in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Systemd => "a systemd user service",
            Self::Launchd => "a launchd agent",
            Self::Windows => "a Windows startup entry (the HKCU Run key)",
        }
    }
}

/// What the service runs, and for whom.
#[derive(Debug, Clone)]
pub struct Target {
    /// The popsync binary, an absolute path.
    pub exe: PathBuf,
    /// The configuration file, an absolute path.
    pub config: PathBuf,
    /// The user's home directory.
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME`, else `~/.config` (systemd's unit directory is below it).
    pub config_home: PathBuf,
    /// `$XDG_DATA_HOME`, else `~/.local/share` (desktop entries are below it).
    pub data_home: PathBuf,
    /// The user's id (launchd's domain is `gui/UID`).
    pub uid: u32,
}

/// Why a service file cannot be written for these paths.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{}: not valid UTF-8, which a service file cannot hold", .0.display())]
    NotUtf8(PathBuf),
    #[error("{}: {why}", .path.display())]
    Unrepresentable { path: PathBuf, why: &'static str },
}

pub(crate) fn utf8(path: &Path) -> Result<&str, ServiceError> {
    path.to_str()
        .ok_or_else(|| ServiceError::NotUtf8(path.to_owned()))
}

/// What is on disk where a file is to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Nothing,
    /// The same content: it is left as it is.
    Same,
    Different,
}

/// One step of installing or uninstalling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Creates the directory and its parents where missing.
    CreateDir {
        path: PathBuf,
        mode: u32,
    },
    /// Writes the file (in one rename), unless it already has this content.
    Write {
        path: PathBuf,
        contents: String,
        mode: u32,
        existing: Existing,
    },
    Remove {
        path: PathBuf,
    },
    /// Removes the directory if nothing is in it (the agent's logs are kept).
    RemoveDirIfEmpty {
        path: PathBuf,
    },
    /// Runs a command; a failure stops everything, unless `may_fail` says why it is fine.
    Run {
        cmd: Cmd,
        may_fail: Option<&'static str>,
    },
    /// Starts the agent without waiting for it.
    Start {
        cmd: Cmd,
    },
}

impl Action {
    fn run(cmd: Cmd) -> Self {
        Self::Run {
            cmd,
            may_fail: None,
        }
    }
}

/// The steps that install the service. `read` gives the current content of a file, if any;
/// `agent` is the process id of an agent already running for this configuration's state.
pub fn install_plan(
    platform: Platform,
    target: &Target,
    read: impl Fn(&Path) -> Option<String>,
    agent: Option<u32>,
) -> Result<Vec<Action>, ServiceError> {
    let write = |path: PathBuf, contents: String| {
        let existing = match read(&path) {
            None => Existing::Nothing,
            Some(old) if old == contents => Existing::Same,
            Some(_) => Existing::Different,
        };
        Action::Write {
            path,
            contents,
            mode: 0o644,
            existing,
        }
    };
    Ok(match platform {
        Platform::Systemd => {
            let path = systemd::unit_path(&target.config_home);
            let unit = systemd::unit(&target.exe, &target.config)?;
            let dir = parent(&path);
            let unit_write = write(path, unit);
            let changed = matches!(
                unit_write,
                Action::Write {
                    existing: Existing::Different,
                    ..
                }
            );
            let entry_path = desktop::entry_path(&target.data_home);
            let entry = desktop::entry(&target.exe, &target.config)?;
            let mut actions = vec![
                Action::CreateDir {
                    path: dir,
                    mode: 0o755,
                },
                unit_write,
                // Notifications name it (desktop-entry=popsync): there before the agent runs.
                Action::CreateDir {
                    path: parent(&entry_path),
                    mode: 0o755,
                },
                write(entry_path, entry),
            ];
            actions.extend(
                systemd::install_commands(changed)
                    .into_iter()
                    .map(Action::run),
            );
            actions
        }
        Platform::Launchd => {
            let path = launchd::plist_path(&target.home);
            let plist = launchd::plist(&target.exe, &target.config, &target.home)?;
            let path_text = utf8(&path)?.to_owned();
            let target_name = launchd::service_target(target.uid);
            vec![
                Action::CreateDir {
                    path: parent(&path),
                    mode: 0o755,
                },
                // launchd does not create the directory of StandardErrorPath.
                Action::CreateDir {
                    path: launchd::log_dir(&target.home),
                    mode: 0o700,
                },
                write(path, plist),
                // Unloads the old job, if any, so that the file just written is the one used.
                Action::Run {
                    cmd: launchd::launchctl(&["bootout", &target_name]),
                    may_fail: Some("not loaded"),
                },
                // Undoes an earlier `launchctl disable`, which bootstrap would trip over.
                Action::run(launchd::launchctl(&["enable", &target_name])),
                Action::run(launchd::launchctl(&[
                    "bootstrap",
                    &launchd::domain(target.uid),
                    &path_text,
                ])),
            ]
        }
        Platform::Windows => {
            let line = windows::run_command_line(&target.exe, &target.config)?;
            let mut actions: Vec<_> = windows::install_commands(&line)
                .into_iter()
                .map(Action::run)
                .collect();
            if agent.is_none() {
                actions.push(Action::Start {
                    cmd: agent_command(target),
                });
            }
            actions
        }
    })
}

/// The steps that remove the service: stop it, then remove what [`install_plan`] created.
/// `exists` tells whether a file is there; `agent` is the process id of a running agent.
pub fn uninstall_plan(
    platform: Platform,
    target: &Target,
    exists: impl Fn(&Path) -> bool,
    agent: Option<u32>,
) -> Vec<Action> {
    match platform {
        Platform::Systemd => {
            let path = systemd::unit_path(&target.config_home);
            let entry = desktop::entry_path(&target.data_home);
            let mut actions = Vec::new();
            if exists(&path) {
                actions.extend([
                    Action::run(systemd::systemctl(&["disable", "--now", systemd::UNIT])),
                    Action::Remove { path },
                    Action::run(systemd::systemctl(&["daemon-reload"])),
                ]);
            }
            if exists(&entry) {
                actions.push(Action::Remove { path: entry });
            }
            actions
        }
        Platform::Launchd => {
            let path = launchd::plist_path(&target.home);
            if !exists(&path) {
                return Vec::new();
            }
            vec![
                Action::Run {
                    cmd: launchd::launchctl(&["bootout", &launchd::service_target(target.uid)]),
                    may_fail: Some("not loaded"),
                },
                Action::Remove { path },
                Action::RemoveDirIfEmpty {
                    path: launchd::log_dir(&target.home),
                },
            ]
        }
        Platform::Windows => {
            let mut actions = vec![
                Action::Run {
                    cmd: windows::reg(&["delete", windows::RUN_KEY, "/v", windows::VALUE, "/f"]),
                    may_fail: Some("not there"),
                },
                Action::Run {
                    cmd: windows::reg(&["delete", windows::APP_ID_KEY, "/f"]),
                    may_fail: Some("not there"),
                },
            ];
            if let Some(pid) = agent {
                // The agent has a console of its own, which another process cannot send
                // Ctrl-C to; a kill is safe (nothing stored is lost, nothing is doubled).
                actions.push(Action::run(Cmd::new(
                    "taskkill",
                    ["/PID".to_owned(), pid.to_string(), "/F".to_owned()],
                )));
            }
            actions
        }
    }
}

/// `exe daemon --config config`.
pub fn agent_command(target: &Target) -> Cmd {
    Cmd::new(
        &target.exe.to_string_lossy(),
        [
            "daemon".to_owned(),
            "--config".to_owned(),
            target.config.to_string_lossy().into_owned(),
        ],
    )
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_owned).unwrap_or_default()
}

/// The steps as `--dry-run` prints them: in order, commands as lines to type, every file
/// whole between a `# ----- begin PATH` and a `# ----- end PATH` line.
pub fn render(actions: &[Action]) -> String {
    let mut out = String::new();
    for action in actions {
        match action {
            Action::Write {
                path,
                contents,
                mode,
                existing,
            } => {
                let state = match existing {
                    Existing::Nothing => "a new file",
                    Existing::Same => "already there with this content: left as it is",
                    Existing::Different => "replacing the file there",
                };
                let _ = writeln!(
                    out,
                    "# write {} (mode {mode:04o}; {state}):",
                    path.display()
                );
                let _ = writeln!(out, "# ----- begin {}", path.display());
                out.push_str(contents);
                if !contents.ends_with('\n') {
                    out.push('\n');
                }
                let _ = writeln!(out, "# ----- end {}", path.display());
            }
            other => {
                out.push_str(&step_line(other));
                out.push('\n');
            }
        }
    }
    out
}

/// One step as a line to type (a file is named, not shown).
pub fn step_line(action: &Action) -> String {
    let quote = |p: &Path| command::shell_quote(&p.to_string_lossy());
    match action {
        Action::CreateDir { path, mode } => format!("mkdir -p -m {mode:o} {}", quote(path)),
        Action::Write { path, mode, .. } => {
            format!("# write {} (mode {mode:04o}; shown above)", path.display())
        }
        Action::Remove { path } => format!("rm -f {}", quote(path)),
        Action::RemoveDirIfEmpty { path } => {
            format!("rmdir {}    # if empty: the logs are kept", quote(path))
        }
        Action::Run {
            cmd,
            may_fail: None,
        } => cmd.display().to_string(),
        Action::Run {
            cmd,
            may_fail: Some(why),
        } => format!("{}    # may fail harmlessly: {why}", cmd.display()),
        Action::Start { cmd } => format!(
            "{}    # started, not waited for: the agent runs in a console window of its own",
            cmd.display()
        ),
    }
}

/// A command that failed, and what it said.
#[derive(Debug)]
pub struct Failed {
    /// Index of the failed step in the plan.
    pub step: usize,
    pub what: FailedHow,
}

#[derive(Debug)]
pub enum FailedHow {
    /// A file could not be written or removed.
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The program could not be started (not installed, say).
    NotStarted { cmd: Cmd, source: std::io::Error },
    /// It ran and failed.
    Status {
        cmd: Cmd,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Carries out `actions` in order, saying what it does on `log`; stops at the first failure.
pub fn execute(actions: &[Action], log: &mut dyn std::io::Write) -> Result<(), Failed> {
    for (step, action) in actions.iter().enumerate() {
        let fail = |what| Failed { step, what };
        match action {
            Action::CreateDir { path, mode } => {
                if !path.is_dir() {
                    create_dir(path, *mode).map_err(|source| {
                        fail(FailedHow::File {
                            path: path.clone(),
                            source,
                        })
                    })?;
                    let _ = writeln!(log, "created {}", path.display());
                }
            }
            Action::Write {
                path,
                contents,
                mode,
                existing,
            } => {
                // The file may have changed since the plan was made: compare again.
                let same = *existing == Existing::Same
                    && std::fs::read_to_string(path).is_ok_and(|old| &old == contents);
                let result = if same {
                    set_mode(path, *mode)
                } else {
                    write_file(path, contents, *mode)
                };
                result.map_err(|source| {
                    fail(FailedHow::File {
                        path: path.clone(),
                        source,
                    })
                })?;
                let _ = if same {
                    writeln!(log, "{} is up to date", path.display())
                } else {
                    writeln!(log, "wrote {}", path.display())
                };
            }
            Action::Remove { path } => match std::fs::remove_file(path) {
                Ok(()) => {
                    let _ = writeln!(log, "removed {}", path.display());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(fail(FailedHow::File {
                        path: path.clone(),
                        source,
                    }));
                }
            },
            Action::RemoveDirIfEmpty { path } => {
                if std::fs::remove_dir(path).is_ok() {
                    let _ = writeln!(log, "removed {}", path.display());
                } else if path.is_dir() {
                    let _ = writeln!(log, "kept {} (the agent's logs)", path.display());
                }
            }
            Action::Run { cmd, may_fail } => {
                let output = cmd.run().map_err(|source| {
                    fail(FailedHow::NotStarted {
                        cmd: cmd.clone(),
                        source,
                    })
                })?;
                if output.status.success() {
                    let _ = writeln!(log, "ran {}", cmd.display());
                } else if let Some(why) = may_fail {
                    let _ = writeln!(
                        log,
                        "ran {} (it failed: {why}, which is fine)",
                        cmd.display()
                    );
                } else {
                    return Err(fail(FailedHow::Status {
                        cmd: cmd.clone(),
                        status: output.status,
                        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    }));
                }
            }
            Action::Start { cmd } => {
                let pid = cmd.spawn_detached().map_err(|source| {
                    fail(FailedHow::NotStarted {
                        cmd: cmd.clone(),
                        source,
                    })
                })?;
                let _ = writeln!(log, "started the agent (process {pid})");
            }
        }
    }
    Ok(())
}

fn create_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(path)
}

/// Writes `contents` beside `path` and renames it into place, so that the service manager
/// never reads half a file.
fn write_file(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.popsync-tmp"));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        drop(file);
        set_mode(&tmp, mode)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            exe: "/home/me/.cargo/bin/popsync".into(),
            config: "/home/me/.config/popsync/config.toml".into(),
            home: "/home/me".into(),
            config_home: "/home/me/.config".into(),
            data_home: "/home/me/.local/share".into(),
            uid: 1000,
        }
    }

    fn commands(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Run { cmd, .. } => Some(cmd.display().to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_changed_unit_restarts_a_running_agent_and_an_unchanged_one_does_not() {
        let t = target();
        let new = install_plan(Platform::Systemd, &t, |_| None, None).unwrap();
        assert_eq!(
            commands(&new),
            [
                "systemctl --user daemon-reload",
                "systemctl --user enable --now popsync.service"
            ]
        );
        let unit = systemd::unit(&t.exe, &t.config).unwrap();
        let same = install_plan(Platform::Systemd, &t, |_| Some(unit.clone()), None).unwrap();
        assert_eq!(commands(&same), commands(&new));
        assert!(same.iter().any(|a| matches!(
            a,
            Action::Write {
                existing: Existing::Same,
                ..
            }
        )));
        let changed = install_plan(Platform::Systemd, &t, |_| Some("old".into()), None).unwrap();
        assert_eq!(
            commands(&changed),
            [
                "systemctl --user daemon-reload",
                "systemctl --user try-restart popsync.service",
                "systemctl --user enable --now popsync.service"
            ]
        );
    }

    #[test]
    fn uninstalling_what_is_not_installed_does_nothing() {
        let t = target();
        assert!(uninstall_plan(Platform::Systemd, &t, |_| false, None).is_empty());
        assert!(uninstall_plan(Platform::Launchd, &t, |_| false, None).is_empty());
        let steps = uninstall_plan(Platform::Systemd, &t, |_| true, None);
        assert_eq!(
            steps.iter().map(step_line).collect::<Vec<_>>(),
            [
                "systemctl --user disable --now popsync.service",
                "rm -f /home/me/.config/systemd/user/popsync.service",
                "systemctl --user daemon-reload",
                "rm -f /home/me/.local/share/applications/popsync.desktop"
            ]
        );
    }

    #[test]
    fn launchd_unloads_the_old_job_before_loading_the_new_one() {
        let steps = install_plan(Platform::Launchd, &target(), |_| None, None).unwrap();
        assert_eq!(
            commands(&steps),
            [
                "launchctl bootout gui/1000/popsync",
                "launchctl enable gui/1000/popsync",
                "launchctl bootstrap gui/1000 /home/me/Library/LaunchAgents/popsync.plist"
            ]
        );
    }

    #[test]
    fn windows_starts_the_agent_only_when_none_runs() {
        let t = target();
        let starts = |agent| {
            install_plan(Platform::Windows, &t, |_| None, agent)
                .unwrap()
                .iter()
                .filter(|a| matches!(a, Action::Start { .. }))
                .count()
        };
        assert_eq!(starts(None), 1);
        assert_eq!(starts(Some(42)), 0);
        let stops = uninstall_plan(Platform::Windows, &t, |_| false, Some(42));
        assert_eq!(
            commands(&stops).last().map(String::as_str),
            Some("taskkill /PID 42 /F")
        );
    }
}
