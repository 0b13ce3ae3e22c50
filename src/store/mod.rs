//! The state database: what popsync knows about every message of every account.
//!
//! One SQLite file (`state.db` in the state directory), WAL mode, `synchronous = FULL` so a
//! commit is on disk when it returns — the delivery protocol depends on that: a *pending*
//! row must be durable before the message it describes can appear in the mailbox. Every
//! write is one transaction covering a whole batch of messages, so durability costs one
//! flush per batch, not per message. The schema and its migrations are in [`schema`].
//!
//! This module owns the message state machine. Per account and unique-id a message is in
//! one of these states, and it moves only by the named transitions of [`messages`], each of
//! which applies only to messages in the states it names (others are left as they are):
//!
//! | state            | meaning | left by |
//! | ---------------- | ------- | ------- |
//! | (unknown)        | never seen | `record_pending`, `record_seen`, `record_oversize`, `record_delete_unfetched` |
//! | `pending`        | being delivered; the place is recorded and the message may be in the mailbox, whole or not (recovery decides from the mailbox) | `mark_delivered`, `drop_pending` |
//! | `delivered`      | durably in the mailbox | `mark_delete_pending` |
//! | `headers-only`   | its headers are in the mailbox (`headers-only-over`); never deleted by popsync | — |
//! | `delete-pending` | DELE was or is about to be sent in a session whose QUIT has not answered +OK | `confirm_deleted`, `undo_deletion` |
//! | `deleted`        | the server confirmed the deletion; kept while the server still lists it, so a server that ignores deletions causes no re-download | — |
//! | `seen`           | recorded without downloading (`fetch --mark-seen`); never deleted by popsync | — |
//! | `oversize`       | over `max-size`, left on the server, not downloaded | `record_pending`, `record_delete_unfetched` |
//!
//! A message the server renumbered (recognised by content, see `poll::renumber`) keeps its
//! state under its new unique-id by `rekey` (in [`renumbering`]); from `delivered`, `headers-only`,
//! `delete-pending` or `seen` only, and to `seen` when its stored copy could not be checked.
//!
//! Any state but `pending` is also left by `record_listing`'s forgetting, once the server has
//! not listed the message for the grace period. Unique-ids are stored as exact bytes
//! (BLOB); they are never used in file names. Account rows and poll outcomes are in
//! [`status`].

pub mod known;
pub mod messages;
pub mod renumbering;
mod schema;
pub mod status;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

pub use known::KnownMessages;
pub use messages::{DeliveredRow, Known, Listing, MessageState, PendingRow, Place, Uid};
pub use renumbering::{IdentityRow, Rekey};
pub use schema::VERSION as SCHEMA_VERSION;
pub use status::{AccountStatus, Pause, PollRecord};

/// Account row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountId(i64);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state directory cannot be used (found by `popsync check`).
    #[error("the state directory {}", .path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the state database {} was written by a newer popsync (schema {found}; this version knows up to {known})",
        .path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the state database {} holds an unknown message state {state:?}", .path.display())]
    Corrupt { path: PathBuf, state: String },
}

/// The state database. One per process and account session; SQLite serialises writers
/// across processes (with a busy timeout).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// The file name of the database inside the state directory.
pub const DB_FILE: &str = "state.db";

impl Store {
    /// Opens (creating if needed) the database in `state_dir`, migrating it forward.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut store = Self { conn, path };
        store.setup().map_err(|e| store.err(e))?;
        schema::migrate(&mut store.conn, &store.path)?;
        Ok(store)
    }

    /// The state database opened for reading only, for a state directory popsync cannot
    /// write in (a read-only file system, someone else's files): what `popsync status`
    /// shows then. Changes nothing. Read as SQLite's readers do where it can (commits still
    /// in the write-ahead log included); where even that cannot be (no shared-memory file to
    /// use), as the database file is on disk, without a lock.
    pub fn open_for_reading(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(DB_FILE);
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut uri = String::from("file:");
        for ch in path.to_string_lossy().chars() {
            match ch {
                '%' => uri.push_str("%25"),
                '?' => uri.push_str("%3f"),
                '#' => uri.push_str("%23"),
                c => uri.push(c),
            }
        }
        let open = |query: &str| -> rusqlite::Result<(Connection, i64)> {
            let conn = Connection::open_with_flags(
                format!("{uri}?{query}"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )?;
            let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            Ok((conn, version))
        };
        // `immutable`: no -shm file, no lock, no WAL recovery (none is possible there).
        let (conn, version) = open("mode=ro")
            .or_else(|_| open("immutable=1"))
            .map_err(err)?;
        if version > schema::VERSION {
            return Err(StoreError::TooNew {
                path: path.clone(),
                found: version,
                known: schema::VERSION,
            });
        }
        if version < schema::VERSION {
            return Err(StoreError::StateDir {
                path: state_dir.to_owned(),
                source: std::io::Error::other(
                    "its database is from an older popsync, and cannot be brought up to date \
                     where it cannot be written",
                ),
            });
        }
        Ok(Self { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn setup(&mut self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // Switching a new database to WAL answers SQLITE_BUSY at once, without waiting for
        // the busy timeout, when another process is doing the same: retry for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match self
                .conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other?,
            }
        }
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        // A small page cache (512 KiB, not SQLite's 2 MiB): popsync reads each table once per
        // poll, and the operating system caches the file anyway; the agent stays small.
        self.conn.pragma_update(None, "cache_size", -512)?;
        Ok(())
    }

    /// The id of the account called `name`, creating its row if needed.
    pub fn account(&mut self, name: &str, now: i64) -> Result<AccountId, StoreError> {
        let r = (|| {
            self.conn.execute(
                "INSERT INTO account (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, now],
            )?;
            self.conn
                .query_row("SELECT id FROM account WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
        })();
        r.map(AccountId).map_err(|e| self.err(e))
    }

    /// The id of the account called `name`, if popsync has ever fetched it.
    pub fn find_account(&self, name: &str) -> Result<Option<AccountId>, StoreError> {
        let r = self
            .conn
            .query_row("SELECT id FROM account WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional();
        r.map(|id| id.map(AccountId)).map_err(|e| self.err(e))
    }

    /// Runs `work` in one transaction: all of it is durable when this returns `Ok`, none of
    /// it otherwise.
    fn batch(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        work(&tx).map_err(err)?;
        tx.commit().map_err(err)
    }
}

/// A path as the bytes the OS uses (exact on Unix, where paths need not be UTF-8).
fn path_to_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(std::ffi::OsString::from_vec(bytes))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Creates a directory (and parents) readable only by the user.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader sees what a running agent committed, even while it is still in the
    /// write-ahead log (not yet in the database file).
    #[test]
    fn reading_only_sees_commits_still_in_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Store::open(dir.path()).unwrap();
        writer.account("home", 1).unwrap();
        assert!(dir.path().join(format!("{DB_FILE}-wal")).exists());
        let reader = Store::open_for_reading(dir.path()).unwrap();
        assert!(reader.find_account("home").unwrap().is_some());
        drop(writer);
    }

    #[test]
    fn many_processes_opening_a_new_database_at_once_all_succeed() {
        for _round in 0..60 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(8);
            let errors: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|i| {
                        let path = dir.path();
                        let barrier = &barrier;
                        s.spawn(move || {
                            barrier.wait();
                            let mut store = Store::open(path).map_err(|e| e.to_string())?;
                            store
                                .account(&format!("a{i}"), 1)
                                .map_err(|e| e.to_string())?;
                            Ok::<(), String>(())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap().err())
                    .collect()
            });
            assert!(errors.is_empty(), "{errors:?}");
        }
    }

    #[test]
    fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            let a = s.account("x", 1).unwrap();
            s.record_seen(a, &[b"u"], 1).unwrap();
            s.record_poll(
                a,
                &PollRecord {
                    at: 5,
                    ok: true,
                    error: None,
                    new_messages: 3,
                },
            )
            .unwrap();
        }
        {
            let mut s = Store::open(dir.path()).unwrap();
            let a = s.account("x", 1).unwrap();
            assert_eq!(s.known(a).unwrap().len(), 1);
            assert_eq!(s.last_poll(a).unwrap().unwrap().new_messages, 3);
            s.conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("newer popsync"), "{err}");
    }
}
