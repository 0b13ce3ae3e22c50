//! Talking to a running daemon: who it is, and asking it to poll now.
//!
//! A daemon holds `daemon.lock` in the state directory (an OS lock: it dies with the
//! process), which names its process id and its config file. `popsync poll` leaves a request
//! in `requests/` and sends the daemon SIGUSR1; `popsync status` tries the lock to see
//! whether a daemon runs.

use std::path::{Path, PathBuf};

use crate::lock::LockFile;

const LOCK_FILE: &str = "daemon.lock";
const REQUESTS: &str = "requests";
/// The request file asking for every account.
const ALL: &str = "poll-all";

/// The running daemon's lock; released when dropped.
#[derive(Debug)]
pub struct DaemonLock {
    _lock: LockFile,
}

/// A daemon found running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    pub pid: u32,
    pub config: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("a popsync daemon is already running for this state directory (process {pid}, config {})", .config.display())]
    AlreadyRunning { pid: u32, config: PathBuf },
    #[error("no popsync daemon is running for the state directory {}", .0.display())]
    NotRunning(PathBuf),
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a daemon's lock file says: its process id, then its config file, a line each.
fn parse_info(text: &str) -> Option<DaemonInfo> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let config = PathBuf::from(lines.next()?);
    Some(DaemonInfo { pid, config })
}

impl DaemonLock {
    /// Becomes the daemon for `state_dir`, or says which one already is.
    pub fn acquire(state_dir: &Path, config: &Path) -> Result<Self, ControlError> {
        let path = state_dir.join(LOCK_FILE);
        let me = format!("{}\n{}\n", std::process::id(), config.display());
        match LockFile::try_acquire(&path, &me) {
            Ok(Ok(lock)) => Ok(Self { _lock: lock }),
            Ok(Err(holder)) => {
                let info = parse_info(&holder).unwrap_or(DaemonInfo {
                    pid: 0,
                    config: PathBuf::from("?"),
                });
                Err(ControlError::AlreadyRunning {
                    pid: info.pid,
                    config: info.config,
                })
            }
            Err(e) => Err(ControlError::Io {
                what: e.what,
                path,
                source: e.source,
            }),
        }
    }

    /// The daemon running for `state_dir`, if any.
    pub fn running(state_dir: &Path) -> Option<DaemonInfo> {
        parse_info(&LockFile::holder(&state_dir.join(LOCK_FILE))?)
    }
}

/// Asks the daemon for `state_dir` to poll `accounts` (all if empty) now.
pub fn request_poll(state_dir: &Path, accounts: &[String]) -> Result<DaemonInfo, ControlError> {
    let info = DaemonLock::running(state_dir)
        .ok_or_else(|| ControlError::NotRunning(state_dir.to_owned()))?;
    let dir = state_dir.join(REQUESTS);
    let io = |source| ControlError::Io {
        what: "cannot write a request into",
        path: dir.clone(),
        source,
    };
    crate::store::create_private_dir(&dir).map_err(io)?;
    if accounts.is_empty() {
        std::fs::write(dir.join(ALL), b"").map_err(io)?;
    }
    for a in accounts {
        // Account names are checked to be file-name safe when the config is read.
        std::fs::write(dir.join(format!("poll-{a}")), b"").map_err(io)?;
    }
    signal_poll(info.pid).map_err(|source| ControlError::Io {
        what: "cannot signal the daemon for",
        path: state_dir.to_owned(),
        source,
    })?;
    Ok(info)
}

/// Takes the poll requests waiting: `None` means every account.
pub fn take_requests(state_dir: &Path) -> Option<Vec<String>> {
    let dir = state_dir.join(REQUESTS);
    let mut accounts = Vec::new();
    let mut all = false;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let _ = std::fs::remove_file(entry.path());
        if name == ALL {
            all = true;
        } else if let Some(account) = name.strip_prefix("poll-") {
            accounts.push(account.to_owned());
        }
    }
    (!all).then_some(accounts)
}

#[cfg(unix)]
fn signal_poll(pid: u32) -> std::io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| std::io::Error::other("no process id"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).map_err(std::io::Error::from)
}

#[cfg(not(unix))]
fn signal_poll(_pid: u32) -> std::io::Result<()> {
    // The daemon looks for requests on its own every few seconds.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_daemon_per_state_directory_and_others_can_see_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DaemonLock::running(dir.path()), None);
        let lock = DaemonLock::acquire(dir.path(), Path::new("/c/config.toml")).unwrap();
        let info = DaemonLock::running(dir.path()).unwrap();
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.config, PathBuf::from("/c/config.toml"));
        let err = DaemonLock::acquire(dir.path(), Path::new("/other")).unwrap_err();
        assert!(err.to_string().contains("already running"), "{err}");
        drop(lock);
        assert_eq!(DaemonLock::running(dir.path()), None);
    }

    #[test]
    fn requests_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let rq = dir.path().join(REQUESTS);
        std::fs::create_dir_all(&rq).unwrap();
        std::fs::write(rq.join("poll-home"), b"").unwrap();
        assert_eq!(take_requests(dir.path()), Some(vec!["home".to_owned()]));
        assert_eq!(take_requests(dir.path()), Some(vec![]));
        std::fs::write(rq.join(ALL), b"").unwrap();
        assert_eq!(take_requests(dir.path()), None);
    }

    #[test]
    fn asking_a_daemon_that_is_not_there_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = request_poll(dir.path(), &[]).unwrap_err();
        assert!(
            err.to_string().contains("no popsync daemon is running"),
            "{err}"
        );
    }
}
