//! Lock files: one session per account across processes, and one agent per state directory.
//!
//! A lock file is held with an exclusive OS file lock (`flock` on Unix, `LockFileEx` on
//! Windows) for as long as its holder runs. The lock dies with the process, so a killed
//! popsync never leaves a stale lock. The file names its holder (the process id, and for the
//! agent its configuration file), only to say who is busy.
//!
//! Each account has one, `locks/NAME.lock` in the state directory ([`AccountLock`]), held
//! while a session for it runs — whether in the agent or in a one-off `popsync fetch`. The
//! agent's is `daemon.lock` (see `daemon::control`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A held lock file; released when dropped.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
    path: PathBuf,
}

/// A lock file that could not be opened or locked.
#[derive(Debug)]
pub struct LockFileError {
    /// "cannot open" or "cannot lock".
    pub what: &'static str,
    pub source: std::io::Error,
}

impl LockFile {
    fn open(path: &Path) -> Result<File, LockFileError> {
        let cannot_open = |source| LockFileError {
            what: "cannot open",
            source,
        };
        crate::store::create_private_dir(path.parent().expect("a lock path has a parent"))
            .map_err(cannot_open)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(path).map_err(cannot_open)
    }

    /// Takes the lock at `path` if it is free, and writes `holder` into it. `Ok(Err(text))`
    /// when another holds it: what its holder wrote.
    pub fn try_acquire(path: &Path, holder: &str) -> Result<Result<Self, String>, LockFileError> {
        let mut file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Ok(Self::held(file, path, holder))),
            Err(TryLockError::WouldBlock) => Ok(Err(read_holder(&mut file))),
            Err(TryLockError::Error(source)) => Err(LockFileError {
                what: "cannot lock",
                source,
            }),
        }
    }

    /// Waits until the lock at `path` is free, then takes it. Blocks the calling thread.
    pub fn acquire_blocking(path: &Path, holder: &str) -> Result<Self, LockFileError> {
        let file = Self::open(path)?;
        file.lock().map_err(|source| LockFileError {
            what: "cannot lock",
            source,
        })?;
        Ok(Self::held(file, path, holder))
    }

    /// What the holder of the lock at `path` wrote, if it is held (without taking it).
    pub fn holder(path: &Path) -> Option<String> {
        let mut file = File::open(path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => Some(read_holder(&mut file)),
        }
    }

    fn held(mut file: File, path: &Path, holder: &str) -> Self {
        // Informational only; failure to write it does not matter.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(holder.as_bytes()));
        Self {
            _file: file,
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// A held account lock; released when dropped.
#[derive(Debug)]
pub struct AccountLock(LockFile);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another popsync is already fetching this account{}", holder_note(.holder))]
    Busy { holder: Option<String> },
    #[error("cannot lock {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder_note(holder: &Option<String>) -> String {
    holder
        .as_ref()
        .map(|h| format!(" (process {h})"))
        .unwrap_or_default()
}

impl AccountLock {
    fn path(state_dir: &Path, account: &str) -> PathBuf {
        state_dir.join("locks").join(format!("{account}.lock"))
    }

    fn me() -> String {
        format!("{}\n", std::process::id())
    }

    /// Takes the lock if it is free. Otherwise returns [`LockError::Busy`] naming the holder.
    pub fn try_acquire(state_dir: &Path, account: &str) -> Result<Self, LockError> {
        let path = Self::path(state_dir, account);
        match LockFile::try_acquire(&path, &Self::me()) {
            Ok(Ok(lock)) => Ok(Self(lock)),
            Ok(Err(holder)) => {
                let holder = holder.trim();
                Err(LockError::Busy {
                    holder: (!holder.is_empty()).then(|| holder.chars().take(20).collect()),
                })
            }
            Err(e) => Err(LockError::Io {
                path,
                source: e.source,
            }),
        }
    }

    /// Waits until the lock is free, then takes it. Blocks the calling thread.
    pub fn acquire_blocking(state_dir: &Path, account: &str) -> Result<Self, LockError> {
        let path = Self::path(state_dir, account);
        LockFile::acquire_blocking(&path, &Self::me())
            .map(Self)
            .map_err(|e| LockError::Io {
                path,
                source: e.source,
            })
    }

    /// Whether another process holds the account's lock now (what it wrote, if so), found
    /// without taking the lock or creating its file.
    pub fn holder(state_dir: &Path, account: &str) -> Option<String> {
        LockFile::holder(&Self::path(state_dir, account))
    }

    pub fn file(&self) -> &Path {
        self.0.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_account_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = AccountLock::try_acquire(dir.path(), "home").unwrap();
        let err = AccountLock::try_acquire(dir.path(), "home").unwrap_err();
        let LockError::Busy { holder } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            holder.as_deref(),
            Some(std::process::id().to_string().as_str())
        );
        assert!(err.to_string().contains("already fetching"), "{err}");
        let _other = AccountLock::try_acquire(dir.path(), "work").unwrap();
        drop(first);
        AccountLock::try_acquire(dir.path(), "home").unwrap();
    }
}
