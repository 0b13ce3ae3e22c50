//! The state database's schema and its migrations.
//!
//! The schema is versioned with `PRAGMA user_version`; opening a database migrates it
//! forward, one step at a time, in one transaction that holds the write lock from the start
//! (two processes opening a new database at once do not both migrate it). A database from a
//! newer popsync is refused rather than damaged. Migrations are only ever appended: a step,
//! once released, is never changed.

use rusqlite::Connection;

use super::StoreError;

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
    r#"
ALTER TABLE account ADD COLUMN paused_since INTEGER;
ALTER TABLE account ADD COLUMN paused_until INTEGER;
ALTER TABLE account ADD COLUMN paused_problem TEXT;
ALTER TABLE account ADD COLUMN paused_config TEXT;
"#,
    // A message's identity by content (`crate::identity`), recorded at delivery, for
    // recognising it when the server renumbers its mailbox (rows from before have none;
    // theirs is read from the stored copy when it is needed); and the account's last
    // renumbering, for `status`.
    r#"
ALTER TABLE message ADD COLUMN identity BLOB;
ALTER TABLE account ADD COLUMN renumbered_at INTEGER;
ALTER TABLE account ADD COLUMN renumbered_count INTEGER;
"#,
    // Delivery into an IMAP mailbox: the mailbox's UIDVALIDITY when the message was
    // appended, and the UID the server gave it (UIDPLUS), kept after delivery; and when a
    // delivery was started (recovery waits for a server that may still be finishing it).
    r#"
ALTER TABLE message ADD COLUMN dest_uidvalidity INTEGER;
ALTER TABLE message ADD COLUMN dest_uid INTEGER;
ALTER TABLE message ADD COLUMN pending_at INTEGER;
"#,
];

/// The schema version this popsync writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database at `path` (open as `conn`) up to [`VERSION`].
pub(super) fn migrate(conn: &mut Connection, path: &std::path::Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version > VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known: VERSION,
        });
    }
    for sql in MIGRATIONS.iter().skip(version as usize) {
        tx.execute_batch(sql).map_err(err)?;
    }
    if version < VERSION {
        tx.pragma_update(None, "user_version", VERSION)
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made by the first schema, with a message in each state it knew, comes
    /// forward with every row and every value intact.
    #[test]
    fn a_first_version_database_migrates_forward_keeping_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO account (id, name, created_at) VALUES (1, 'home', 10);
                 INSERT INTO message (account_id, uid, state, file_name, pending_dir, size, first_seen, delivered_at)
                     VALUES (1, X'61', 'pending', 'n1', '/m', NULL, 11, NULL),
                            (1, X'62', 'delivered', 'n2', NULL, 42, 12, 13),
                            (1, X'63', 'seen', NULL, NULL, NULL, 14, NULL);",
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        type Row = (Vec<u8>, String, Option<String>, Option<String>, Option<i64>);
        let rows: Vec<Row> = conn
            .prepare("SELECT uid, state, file_name, pending_kind, size FROM message ORDER BY uid")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    b"a".to_vec(),
                    "pending".into(),
                    Some("n1".into()),
                    Some("maildir".into()),
                    None
                ),
                (
                    b"b".to_vec(),
                    "delivered".into(),
                    Some("n2".into()),
                    None,
                    Some(42)
                ),
                (b"c".to_vec(), "seen".into(), None, None, None),
            ]
        );
        // Opening it again changes nothing.
        migrate(&mut conn, &path).unwrap();
    }
}
