//! One session per account, across processes.
//!
//! Each account has a lock file, `locks/NAME.lock` in the state directory, held with an
//! exclusive OS file lock (`flock` on Unix, `LockFileEx` on Windows) for as long as a
//! session for it runs — whether in the daemon or in a one-off `popsync fetch`. The lock
//! dies with the process, so a killed popsync never leaves a stale lock. The file holds the
//! holder's process id, only to say who is busy.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A held account lock; released when dropped.
#[derive(Debug)]
pub struct AccountLock {
    _file: File,
    path: PathBuf,
}

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

    fn open(path: &Path) -> Result<File, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        crate::store::create_private_dir(path.parent().expect("lock path has a parent"))
            .map_err(io)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(path).map_err(io)
    }

    /// Takes the lock if it is free. Otherwise returns [`LockError::Busy`] naming the holder.
    pub fn try_acquire(state_dir: &Path, account: &str) -> Result<Self, LockError> {
        let path = Self::path(state_dir, account);
        let mut file = Self::open(&path)?;
        match file.try_lock() {
            Ok(()) => Self::held(file, path),
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                Err(LockError::Busy {
                    holder: (!holder.is_empty()).then(|| holder.chars().take(20).collect()),
                })
            }
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }

    /// Waits until the lock is free, then takes it. Blocks the calling thread.
    pub fn acquire_blocking(state_dir: &Path, account: &str) -> Result<Self, LockError> {
        let path = Self::path(state_dir, account);
        let file = Self::open(&path)?;
        match file.lock() {
            Ok(()) => Self::held(file, path),
            Err(source) => Err(LockError::Io { path, source }),
        }
    }

    fn held(mut file: File, path: PathBuf) -> Result<Self, LockError> {
        // Informational only; failure to write it does not matter.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self { _file: file, path })
    }

    pub fn file(&self) -> &Path {
        &self.path
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
