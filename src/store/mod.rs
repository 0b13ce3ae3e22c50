//! The state database: what popsync knows about every message of every account.
//!
//! One SQLite file (`state.db` in the state directory), WAL mode, `synchronous = FULL` so a
//! commit is on disk when it returns — the delivery protocol depends on that: a *pending*
//! row must be durable before the file it names can appear in the Maildir. Every write is
//! one transaction covering a whole batch of messages, so durability costs one flush per
//! batch, not per message. The schema is versioned with `PRAGMA user_version` and migrated
//! forward on open; a database from a newer popsync is refused rather than damaged.
//!
//! Message states (per account and unique-id):
//!
//! - `pending`: a file name was chosen and the message may exist on disk, complete or not;
//!   start-up recovery decides from the disk (see `delivery::maildir::recover`);
//! - `delivered`: the message is durably in the mailbox;
//! - `delete-pending`: DELE was sent in a session whose QUIT has not yet answered +OK;
//! - `deleted`: the server confirmed the deletion; kept until the server stops listing the
//!   uid, so a server that ignores deletions (some providers do) causes no re-download;
//! - `seen`: recorded without downloading (`fetch --mark-seen`); never deleted by popsync.
//!
//! Unique-ids are stored as exact bytes (BLOB); they are never used in file names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

/// Schema migrations; entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE account (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    last_poll_at    INTEGER,
    last_poll_ok    INTEGER,
    last_poll_error TEXT,
    last_poll_new   INTEGER,
    last_success_at INTEGER
);
CREATE TABLE message (
    account_id     INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
    uid            BLOB NOT NULL,
    state          TEXT NOT NULL CHECK (state IN
                       ('pending', 'delivered', 'delete-pending', 'deleted', 'seen')),
    file_name      TEXT,
    pending_dir    TEXT,
    size           INTEGER,
    first_seen     INTEGER NOT NULL,
    delivered_at   INTEGER,
    unlisted_since INTEGER,
    PRIMARY KEY (account_id, uid)
) WITHOUT ROWID;
CREATE INDEX message_pending ON message (account_id) WHERE state = 'pending';
"#,
    r#"
ALTER TABLE account ADD COLUMN next_poll_at INTEGER;
CREATE INDEX message_delivered_at ON message (account_id, delivered_at);
"#,
    r#"
CREATE TABLE message_v3 (
    account_id     INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
    uid            BLOB NOT NULL,
    state          TEXT NOT NULL CHECK (state IN
                       ('pending', 'delivered', 'delete-pending', 'deleted', 'seen',
                        'oversize', 'headers-only')),
    file_name      TEXT,
    pending_dir    TEXT,
    size           INTEGER,
    first_seen     INTEGER NOT NULL,
    delivered_at   INTEGER,
    unlisted_since INTEGER,
    pending_kind   TEXT,
    mbox_offset    INTEGER,
    mbox_length    INTEGER,
    mbox_hash      BLOB,
    mbox_from      TEXT,
    headers_only   INTEGER,
    PRIMARY KEY (account_id, uid)
) WITHOUT ROWID;
INSERT INTO message_v3 (account_id, uid, state, file_name, pending_dir, size, first_seen,
                        delivered_at, unlisted_since, pending_kind)
    SELECT account_id, uid, state, file_name, pending_dir, size, first_seen,
           delivered_at, unlisted_since, CASE WHEN state = 'pending' THEN 'maildir' END
    FROM message;
DROP TABLE message;
ALTER TABLE message_v3 RENAME TO message;
CREATE INDEX message_pending ON message (account_id) WHERE state = 'pending';
CREATE INDEX message_delivered_at ON message (account_id, delivered_at);
"#,
];

pub type Uid = Vec<u8>;

/// A message's state. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    Pending,
    Delivered,
    DeletePending,
    Deleted,
    Seen,
    /// Over the account's `max-size`: remembered, not downloaded.
    Oversize,
    /// Delivered as its headers only (`headers-only-over`); the whole message stays on the
    /// server and is never deleted by popsync.
    HeadersOnly,
}

impl MessageState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::DeletePending => "delete-pending",
            Self::Deleted => "deleted",
            Self::Seen => "seen",
            Self::Oversize => "oversize",
            Self::HeadersOnly => "headers-only",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "delete-pending" => Self::DeletePending,
            "deleted" => Self::Deleted,
            "seen" => Self::Seen,
            "oversize" => Self::Oversize,
            "headers-only" => Self::HeadersOnly,
            _ => return None,
        })
    }
}

/// What is known about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub state: MessageState,
    /// Unix seconds.
    pub delivered_at: Option<i64>,
    /// Unix seconds since when the server has not listed it.
    pub unlisted_since: Option<i64>,
}

/// A message whose delivery was started but not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub uid: Uid,
    pub target: PendingTarget,
    /// Only the headers were being delivered (`headers-only-over`).
    pub headers_only: bool,
}

/// Where a pending message was being delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingTarget {
    /// Into the Maildir `dir`, as `file_name`.
    Maildir { dir: PathBuf, file_name: String },
    /// Appended to the mbox `path` at `offset`: `len` bytes with this SHA-256, starting
    /// with `from_line`.
    Mbox {
        path: PathBuf,
        offset: u64,
        len: u64,
        sha256: Vec<u8>,
        from_line: String,
    },
    /// Handed to an MDA (which popsync cannot look into).
    Mda,
}

/// The outcome of a poll, as recorded for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRecord {
    pub at: i64,
    pub ok: bool,
    pub error: Option<String>,
    pub new_messages: u64,
}

/// A message about to be appended to an mbox.
#[derive(Debug, Clone)]
pub struct MboxPending<'a> {
    pub uid: &'a [u8],
    pub offset: u64,
    pub len: u64,
    pub sha256: [u8; 32],
    pub from_line: &'a str,
}

/// What `status` shows about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStatus {
    pub last_poll: Option<PollRecord>,
    pub last_success_at: Option<i64>,
    pub next_poll_at: Option<i64>,
    /// Messages popsync knows (in any state).
    pub known: u64,
    /// Messages downloaded and still remembered (including those since deleted from the
    /// server).
    pub delivered_total: u64,
    pub delivered_last_day: u64,
    /// Messages over max-size left on the server, not downloaded.
    pub oversize_on_server: u64,
    /// Messages delivered as headers only, the whole message left on the server.
    pub headers_only: u64,
}

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
        store.migrate()?;
        Ok(store)
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

    fn migrate(&mut self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        // An immediate transaction takes the write lock before reading the version, so two
        // processes opening a new database at once do not both migrate it.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for sql in MIGRATIONS.iter().skip(version as usize) {
            tx.execute_batch(sql).map_err(err)?;
        }
        if version < known {
            tx.pragma_update(None, "user_version", known).map_err(err)?;
        }
        tx.commit().map_err(err)
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

    /// Everything known about the account's messages, by unique-id.
    pub fn known(&self, account: AccountId) -> Result<HashMap<Uid, Known>, StoreError> {
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(
                "SELECT uid, state, delivered_at, unlisted_since FROM message WHERE account_id = ?1",
            )?;
            let mut rows = stmt.query([account.0])?;
            let mut map = HashMap::new();
            while let Some(row) = rows.next()? {
                let uid: Vec<u8> = row.get(0)?;
                let state: String = row.get(1)?;
                let state = MessageState::parse(&state).ok_or_else(|| {
                    rusqlite::Error::InvalidColumnType(
                        1,
                        state.clone(),
                        rusqlite::types::Type::Text,
                    )
                })?;
                map.insert(
                    uid,
                    Known {
                        state,
                        delivered_at: row.get(2)?,
                        unlisted_since: row.get(3)?,
                    },
                );
            }
            Ok(map)
        })();
        r.map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(1, state, _) => StoreError::Corrupt {
                path: self.path.clone(),
                state,
            },
            e => self.err(e),
        })
    }

    /// Whether some account's message was delivered under this file name.
    pub fn is_delivered_file(&self, file_name: &str) -> Result<bool, StoreError> {
        let r = self
            .conn
            .query_row(
                "SELECT 1 FROM message WHERE file_name = ?1 AND state != 'pending' LIMIT 1",
                [file_name],
                |_| Ok(()),
            )
            .optional();
        r.map(|o| o.is_some()).map_err(|e| self.err(e))
    }

    /// Messages whose delivery was started but not confirmed.
    pub fn pending(&self, account: AccountId) -> Result<Vec<PendingRow>, StoreError> {
        let r = (|| -> rusqlite::Result<Vec<PendingRow>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT uid, pending_kind, file_name, pending_dir, mbox_offset, mbox_length, mbox_hash, mbox_from,
                        COALESCE(headers_only, 0)
                 FROM message WHERE account_id = ?1 AND state = 'pending' ORDER BY mbox_offset",
            )?;
            stmt.query_map([account.0], |r| {
                let kind: Option<String> = r.get(1)?;
                let target = match kind.as_deref() {
                    Some("mbox") => PendingTarget::Mbox {
                        path: path_from_bytes(r.get::<_, Vec<u8>>(3)?),
                        offset: r.get::<_, i64>(4)? as u64,
                        len: r.get::<_, i64>(5)? as u64,
                        sha256: r.get(6)?,
                        from_line: r.get(7)?,
                    },
                    Some("mda") => PendingTarget::Mda,
                    _ => PendingTarget::Maildir {
                        dir: path_from_bytes(r.get::<_, Vec<u8>>(3)?),
                        file_name: r.get(2)?,
                    },
                };
                Ok(PendingRow {
                    uid: r.get(0)?,
                    target,
                    headers_only: r.get::<_, i64>(8)? != 0,
                })
            })?
            .collect()
        })();
        r.map_err(|e| self.err(e))
    }

    /// Records that these messages are about to be appended to the mbox `path`: each with
    /// its offset, length, SHA-256 and `From ` line. Durable when this returns.
    pub fn insert_pending_mbox(
        &mut self,
        account: AccountId,
        path: &Path,
        rows: &[MboxPending<'_>],
        now: i64,
        headers_only: bool,
    ) -> Result<(), StoreError> {
        let path = path_to_bytes(path);
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO message (account_id, uid, state, pending_kind, pending_dir, mbox_offset,
                                      mbox_length, mbox_hash, mbox_from, first_seen, headers_only)
                 VALUES (?1, ?2, 'pending', 'mbox', ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (account_id, uid) DO UPDATE SET state = 'pending', pending_kind = 'mbox',
                     pending_dir = ?3, mbox_offset = ?4, mbox_length = ?5, mbox_hash = ?6,
                     mbox_from = ?7, headers_only = ?9",
            )?;
            for r in rows {
                stmt.execute(params![
                    account.0,
                    r.uid,
                    path,
                    r.offset as i64,
                    r.len as i64,
                    &r.sha256[..],
                    r.from_line,
                    now,
                    headers_only
                ])?;
            }
            Ok(())
        })
    }

    /// Records that a message is about to be handed to an MDA.
    pub fn insert_pending_mda(
        &mut self,
        account: AccountId,
        uid: &[u8],
        now: i64,
        headers_only: bool,
    ) -> Result<(), StoreError> {
        self.batch(|tx| {
            tx.prepare_cached(
                "INSERT INTO message (account_id, uid, state, pending_kind, first_seen, headers_only)
                 VALUES (?1, ?2, 'pending', 'mda', ?3, ?4)
                 ON CONFLICT (account_id, uid) DO UPDATE SET state = 'pending', pending_kind = 'mda',
                     headers_only = ?4",
            )?
            .execute(params![account.0, uid, now, headers_only])?;
            Ok(())
        })
    }

    /// Records new messages in `state` without delivering them (oversize, headers-only,
    /// or to be deleted without download).
    pub fn insert_with_state(
        &mut self,
        account: AccountId,
        rows: &[(&[u8], Option<u64>)],
        state: MessageState,
        now: i64,
    ) -> Result<(), StoreError> {
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO message (account_id, uid, state, size, first_seen, delivered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?3 = 'headers-only' THEN ?5 END)
                 ON CONFLICT (account_id, uid) DO UPDATE SET state = excluded.state, size = excluded.size",
            )?;
            for (uid, size) in rows {
                stmt.execute(params![
                    account.0,
                    uid,
                    state.as_str(),
                    size.map(|s| s as i64),
                    now
                ])?;
            }
            Ok(())
        })
    }

    /// Records that delivery of these messages is starting, under these file names, into
    /// `dir`. Durable when this returns.
    pub fn insert_pending(
        &mut self,
        account: AccountId,
        dir: &Path,
        rows: &[(&[u8], &str)],
        now: i64,
        headers_only: bool,
    ) -> Result<(), StoreError> {
        let dir = path_to_bytes(dir);
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO message (account_id, uid, state, file_name, pending_dir, first_seen, pending_kind, headers_only)
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, 'maildir', ?6)
                 ON CONFLICT (account_id, uid) DO UPDATE SET state = 'pending', file_name = ?3,
                     pending_dir = ?4, pending_kind = 'maildir', headers_only = ?6",
            )?;
            for (uid, name) in rows {
                stmt.execute(params![account.0, uid, name, dir, now, headers_only])?;
            }
            Ok(())
        })
    }

    /// Marks pending messages delivered, with the size written.
    /// `headers_only`: they were delivered as their headers only (never to be deleted).
    pub fn mark_delivered(
        &mut self,
        account: AccountId,
        rows: &[(&[u8], u64)],
        now: i64,
        headers_only: bool,
    ) -> Result<(), StoreError> {
        let state = if headers_only {
            MessageState::HeadersOnly
        } else {
            MessageState::Delivered
        };
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE message SET state = ?5, size = ?3, delivered_at = ?4, pending_dir = NULL,
                                    pending_kind = NULL, mbox_hash = NULL, mbox_from = NULL
                 WHERE account_id = ?1 AND uid = ?2 AND state = 'pending'",
            )?;
            for (uid, size) in rows {
                stmt.execute(params![account.0, uid, *size as i64, now, state.as_str()])?;
            }
            Ok(())
        })
    }

    /// Forgets pending rows whose delivery did not happen (nothing of them is on disk).
    pub fn drop_pending(&mut self, account: AccountId, uids: &[&[u8]]) -> Result<(), StoreError> {
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM message WHERE account_id = ?1 AND uid = ?2 AND state = 'pending'",
            )?;
            for uid in uids {
                stmt.execute(params![account.0, uid])?;
            }
            Ok(())
        })
    }

    /// Records messages as seen without downloading them.
    pub fn insert_seen(
        &mut self,
        account: AccountId,
        uids: &[&[u8]],
        now: i64,
    ) -> Result<(), StoreError> {
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO message (account_id, uid, state, first_seen) VALUES (?1, ?2, 'seen', ?3)
                 ON CONFLICT DO NOTHING",
            )?;
            for uid in uids {
                stmt.execute(params![account.0, uid, now])?;
            }
            Ok(())
        })
    }

    /// Moves messages from one state to another (only those currently in `from`).
    pub fn set_state(
        &mut self,
        account: AccountId,
        uids: &[&[u8]],
        from: &[MessageState],
        to: MessageState,
    ) -> Result<(), StoreError> {
        // States are our own constants, never user or server text.
        let from: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "UPDATE message SET state = ?3 WHERE account_id = ?1 AND uid = ?2 AND state IN ({})",
            from.join(", ")
        );
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(&sql)?;
            for uid in uids {
                stmt.execute(params![account.0, uid, to.as_str()])?;
            }
            Ok(())
        })
    }

    /// Bookkeeping from a listing: uids listed again, uids no longer listed (from `now`),
    /// and uids to forget.
    pub fn apply_listing(
        &mut self,
        account: AccountId,
        relisted: &[&[u8]],
        unlisted: &[&[u8]],
        forget: &[&[u8]],
        now: i64,
    ) -> Result<(), StoreError> {
        if relisted.is_empty() && unlisted.is_empty() && forget.is_empty() {
            return Ok(());
        }
        self.batch(|tx| {
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE message SET unlisted_since = NULL WHERE account_id = ?1 AND uid = ?2",
                )?;
                for uid in relisted {
                    stmt.execute(params![account.0, uid])?;
                }
            }
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE message SET unlisted_since = ?3 WHERE account_id = ?1 AND uid = ?2 AND unlisted_since IS NULL",
                )?;
                for uid in unlisted {
                    stmt.execute(params![account.0, uid, now])?;
                }
            }
            let mut stmt = tx.prepare_cached(
                "DELETE FROM message WHERE account_id = ?1 AND uid = ?2 AND state != 'pending'",
            )?;
            for uid in forget {
                stmt.execute(params![account.0, uid])?;
            }
            Ok(())
        })
    }

    /// Records how a poll went.
    pub fn record_poll(
        &mut self,
        account: AccountId,
        record: &PollRecord,
    ) -> Result<(), StoreError> {
        let r = self.conn.execute(
            "UPDATE account SET last_poll_at = ?2, last_poll_ok = ?3, last_poll_error = ?4, last_poll_new = ?5,
                                last_success_at = CASE WHEN ?3 THEN ?2 ELSE last_success_at END
             WHERE id = ?1",
            params![
                account.0,
                record.at,
                record.ok,
                record.error,
                record.new_messages as i64
            ],
        );
        r.map(drop).map_err(|e| self.err(e))
    }

    /// When the daemon will poll the account next (unix seconds), for `status`.
    pub fn set_next_poll(&mut self, account: AccountId, at: Option<i64>) -> Result<(), StoreError> {
        let r = self.conn.execute(
            "UPDATE account SET next_poll_at = ?2 WHERE id = ?1",
            params![account.0, at],
        );
        r.map(drop).map_err(|e| self.err(e))
    }

    /// Everything `popsync status` shows about an account, if popsync knows it.
    pub fn account_status(
        &self,
        name: &str,
        now: i64,
    ) -> Result<Option<AccountStatus>, StoreError> {
        let Some(id) = self.find_account(name)? else {
            return Ok(None);
        };
        let r = (|| -> rusqlite::Result<AccountStatus> {
            let (last_success_at, next_poll_at): (Option<i64>, Option<i64>) = self.conn.query_row(
                "SELECT last_success_at, next_poll_at FROM account WHERE id = ?1",
                [id.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (known, delivered_total, delivered_last_day, oversize, headers_only): (
                i64,
                i64,
                i64,
                i64,
                i64,
            ) = self.conn.query_row(
                "SELECT COUNT(*),
                        COUNT(delivered_at),
                        COUNT(CASE WHEN delivered_at >= ?2 THEN 1 END),
                        COUNT(CASE WHEN state = 'oversize' THEN 1 END),
                        COUNT(CASE WHEN state = 'headers-only' THEN 1 END)
                 FROM message WHERE account_id = ?1",
                params![id.0, now - 86_400],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            Ok(AccountStatus {
                last_poll: None,
                last_success_at,
                next_poll_at,
                known: known as u64,
                delivered_total: delivered_total as u64,
                delivered_last_day: delivered_last_day as u64,
                oversize_on_server: oversize as u64,
                headers_only: headers_only as u64,
            })
        })();
        let mut status = r.map_err(|e| self.err(e))?;
        status.last_poll = self.last_poll(id)?;
        Ok(Some(status))
    }

    /// The last recorded poll of an account.
    pub fn last_poll(&self, account: AccountId) -> Result<Option<PollRecord>, StoreError> {
        let r = self
            .conn
            .query_row(
                "SELECT last_poll_at, last_poll_ok, last_poll_error, last_poll_new FROM account
                 WHERE id = ?1 AND last_poll_at IS NOT NULL",
                [account.0],
                |r| {
                    Ok(PollRecord {
                        at: r.get(0)?,
                        ok: r.get(1)?,
                        error: r.get(2)?,
                        new_messages: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional();
        r.map_err(|e| self.err(e))
    }

    /// Counts of the account's messages by state.
    pub fn counts(&self, account: AccountId) -> Result<HashMap<MessageState, u64>, StoreError> {
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(
                "SELECT state, COUNT(*) FROM message WHERE account_id = ?1 GROUP BY state",
            )?;
            let rows = stmt.query_map([account.0], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut out = HashMap::new();
            for row in rows {
                let (s, n) = row?;
                if let Some(state) = MessageState::parse(&s) {
                    out.insert(state, n as u64);
                }
            }
            Ok(out)
        })();
        r.map_err(|e| self.err(e))
    }

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

impl std::hash::Hash for MessageState {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
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

    #[test]
    fn messages_move_through_their_states() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let a = s.account("home", 100).unwrap();
        assert_eq!(
            s.account("home", 200).unwrap(),
            a,
            "the same id for the same name"
        );
        let md = dir.path().join("Mail");
        s.insert_pending(a, &md, &[(b"u1", "n1"), (b"u2", "n2")], 100, false)
            .unwrap();
        let pending = s.pending(a).unwrap();
        assert_eq!(pending.len(), 2);
        assert!(matches!(&pending[0].target, PendingTarget::Maildir { dir, .. } if *dir == md));
        s.mark_delivered(a, &[(b"u1", 42)], 110, false).unwrap();
        s.drop_pending(a, &[b"u2"]).unwrap();
        let known = s.known(a).unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(known[&b"u1".to_vec()].state, MessageState::Delivered);
        assert_eq!(known[&b"u1".to_vec()].delivered_at, Some(110));
        s.set_state(
            a,
            &[b"u1"],
            &[MessageState::Delivered],
            MessageState::DeletePending,
        )
        .unwrap();
        s.set_state(
            a,
            &[b"u1"],
            &[MessageState::DeletePending],
            MessageState::Deleted,
        )
        .unwrap();
        assert_eq!(
            s.known(a).unwrap()[&b"u1".to_vec()].state,
            MessageState::Deleted
        );
        s.apply_listing(a, &[], &[b"u1"], &[], 120).unwrap();
        assert_eq!(
            s.known(a).unwrap()[&b"u1".to_vec()].unlisted_since,
            Some(120)
        );
        s.apply_listing(a, &[], &[b"u1"], &[], 130).unwrap();
        assert_eq!(
            s.known(a).unwrap()[&b"u1".to_vec()].unlisted_since,
            Some(120),
            "first time kept"
        );
        s.apply_listing(a, &[], &[], &[b"u1"], 140).unwrap();
        assert!(s.known(a).unwrap().is_empty());
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
    fn uids_are_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let a = s.account("x", 1).unwrap();
        let odd: &[u8] = b"\xff\x00../../etc/passwd";
        s.insert_seen(a, &[odd, b"A", b"a"], 1).unwrap();
        let known = s.known(a).unwrap();
        assert_eq!(known.len(), 3);
        assert!(known.contains_key(odd));
    }

    #[test]
    fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            let a = s.account("x", 1).unwrap();
            s.insert_seen(a, &[b"u"], 1).unwrap();
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
