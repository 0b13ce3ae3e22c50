//! The message state machine: what popsync knows of each message, and the named
//! transitions that change it (see the table in the [module docs](super)).
//!
//! Each transition is one transaction over a batch of messages and applies only to messages
//! in the states it names; a message in any other state is left as it is. Callers therefore
//! cannot move a message along a path the delivery protocol does not have.

use std::path::PathBuf;

use rusqlite::{OptionalExtension, params};

use super::known::KnownMessages;
use super::{AccountId, Store, StoreError, path_from_bytes, path_to_bytes};

pub type Uid = Vec<u8>;

/// A message's state. See the [module docs](super).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    pub(super) fn parse(s: &str) -> Option<Self> {
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

/// A message recorded delivered: its unique-id, the bytes written, and its identity by
/// content (`crate::identity`) when it is known.
pub type DeliveredRow<'a> = (&'a [u8], u64, Option<&'a [u8]>);

/// Where a message is being put, in its delivery target's own terms. The store keeps these
/// fields without interpreting them; after a crash the target named by `kind` reads them
/// back to see how far the delivery got. A field a target does not use stays `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// The delivery target that recorded it (its registered name: `maildir`, `mbox`, ...).
    pub kind: String,
    /// The mailbox it goes into (a Maildir's root, an mbox file).
    pub mailbox: Option<PathBuf>,
    /// Its own name in the mailbox (a Maildir file name). Kept after delivery.
    pub name: Option<String>,
    /// Where in the mailbox file it starts, and how many bytes it takes. Kept after delivery.
    pub offset: Option<u64>,
    pub len: Option<u64>,
    /// The SHA-256 of exactly the bytes written.
    pub sha256: Option<Vec<u8>>,
    /// The line it starts with (an mbox `From ` line).
    pub first_line: Option<String>,
    /// An IMAP mailbox's UIDVALIDITY, and the UID the message got there (once the server
    /// said). Kept after delivery.
    pub uidvalidity: Option<u32>,
    pub dest_uid: Option<u32>,
}

/// A message whose delivery was started but not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub uid: Uid,
    pub place: Place,
    /// Only the headers were being delivered (`headers-only-over`).
    pub headers_only: bool,
    /// When the delivery was started (unix seconds), if recorded.
    pub pending_at: Option<i64>,
}

/// The bookkeeping one listing brings (see [`Store::record_listing`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Listing<'a> {
    /// Known messages listed again after having been missing.
    pub relisted: &'a [&'a [u8]],
    /// Known messages missing from the listing, from now (the first time only).
    pub unlisted: &'a [&'a [u8]],
    /// Messages missing for longer than the grace period: forgotten (any state but pending).
    pub forget: &'a [&'a [u8]],
}

impl Store {
    /// Everything known about the account's messages, by unique-id.
    pub fn known(&self, account: AccountId) -> Result<KnownMessages, StoreError> {
        let r = (|| {
            // Sized once: growing a table of 100,000 entries holds the old and the new
            // table at once, which would be the session's peak of memory.
            let count: i64 = self.conn.query_row(
                "SELECT count(*) FROM message WHERE account_id = ?1",
                [account.0],
                |row| row.get(0),
            )?;
            let count = usize::try_from(count).unwrap_or(0);
            let mut set = KnownMessages::with_capacity(count, count.saturating_mul(16));
            let mut stmt = self.conn.prepare_cached(
                "SELECT uid, state, delivered_at, unlisted_since FROM message WHERE account_id = ?1",
            )?;
            let mut rows = stmt.query([account.0])?;
            while let Some(row) = rows.next()? {
                let uid = row.get_ref(0)?.as_blob()?;
                let state = row.get_ref(1)?.as_str()?;
                let state = MessageState::parse(state).ok_or_else(|| {
                    rusqlite::Error::InvalidColumnType(
                        1,
                        state.to_owned(),
                        rusqlite::types::Type::Text,
                    )
                })?;
                let known = Known {
                    state,
                    delivered_at: row.get(2)?,
                    unlisted_since: row.get(3)?,
                };
                set.insert(uid, known).map_err(|_| {
                    rusqlite::Error::InvalidColumnType(
                        0,
                        "more messages than one account can hold".to_owned(),
                        rusqlite::types::Type::Blob,
                    )
                })?;
            }
            Ok(set)
        })();
        r.map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(1, state, _) => StoreError::Corrupt {
                path: self.path.clone(),
                state,
            },
            e => self.err(e),
        })
    }

    /// Whether some account's message was delivered (is past *pending*) under this name.
    pub fn is_delivered_under(&self, name: &str) -> Result<bool, StoreError> {
        let r = self
            .conn
            .query_row(
                "SELECT 1 FROM message WHERE file_name = ?1 AND state != 'pending' LIMIT 1",
                [name],
                |_| Ok(()),
            )
            .optional();
        r.map(|o| o.is_some()).map_err(|e| self.err(e))
    }

    /// Messages whose delivery was started but not confirmed, in the order of their places
    /// in the mailbox file where they have one.
    pub fn pending(&self, account: AccountId) -> Result<Vec<PendingRow>, StoreError> {
        let r = (|| -> rusqlite::Result<Vec<PendingRow>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT uid, pending_kind, file_name, pending_dir, mbox_offset, mbox_length, mbox_hash, mbox_from,
                        COALESCE(headers_only, 0), dest_uidvalidity, dest_uid, pending_at
                 FROM message WHERE account_id = ?1 AND state = 'pending' ORDER BY mbox_offset",
            )?;
            stmt.query_map([account.0], |r| {
                Ok(PendingRow {
                    uid: r.get(0)?,
                    place: Place {
                        // Rows from before the kind was recorded were Maildir deliveries.
                        kind: r
                            .get::<_, Option<String>>(1)?
                            .unwrap_or_else(|| "maildir".to_owned()),
                        name: r.get(2)?,
                        mailbox: r.get::<_, Option<Vec<u8>>>(3)?.map(path_from_bytes),
                        offset: r.get::<_, Option<i64>>(4)?.map(|n| n as u64),
                        len: r.get::<_, Option<i64>>(5)?.map(|n| n as u64),
                        sha256: r.get(6)?,
                        first_line: r.get(7)?,
                        uidvalidity: r.get::<_, Option<i64>>(9)?.map(|n| n as u32),
                        dest_uid: r.get::<_, Option<i64>>(10)?.map(|n| n as u32),
                    },
                    headers_only: r.get::<_, i64>(8)? != 0,
                    pending_at: r.get(11)?,
                })
            })?
            .collect()
        })();
        r.map_err(|e| self.err(e))
    }

    /// (unknown or `oversize`) → `pending`: delivery of these messages is starting, at these
    /// places. Durable when this returns, so call it before the first byte of a message can
    /// reach its mailbox. `headers_only`: only their headers will be delivered. `now` is
    /// the batch's time (when first seen), `written` this record's (when it went pending).
    pub fn record_pending(
        &mut self,
        account: AccountId,
        rows: &[(&[u8], &Place)],
        now: i64,
        written: i64,
        headers_only: bool,
    ) -> Result<(), StoreError> {
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO message (account_id, uid, state, pending_kind, pending_dir, file_name, mbox_offset,
                                      mbox_length, mbox_hash, mbox_from, first_seen, headers_only,
                                      dest_uidvalidity, dest_uid, pending_at)
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (account_id, uid) DO UPDATE SET state = 'pending',
                     pending_kind = ?3, pending_dir = ?4, file_name = ?5, mbox_offset = ?6,
                     mbox_length = ?7, mbox_hash = ?8, mbox_from = ?9, headers_only = ?11,
                     dest_uidvalidity = ?12, dest_uid = ?13, pending_at = ?14
                 WHERE state = 'oversize'",
            )?;
            for (uid, p) in rows {
                stmt.execute(params![
                    account.0,
                    uid,
                    p.kind,
                    p.mailbox.as_deref().map(path_to_bytes),
                    p.name,
                    p.offset.map(|n| n as i64),
                    p.len.map(|n| n as i64),
                    p.sha256,
                    p.first_line,
                    now,
                    headers_only,
                    p.uidvalidity,
                    p.dest_uid,
                    written
                ])?;
            }
            Ok(())
        })
    }

    /// `pending` → `delivered` (or `headers-only` when `headers_only`): the messages are
    /// durably in the mailbox; the size is what was written. Their name, offset and length
    /// stay recorded; what only recovery needed goes.
    pub fn mark_delivered(
        &mut self,
        account: AccountId,
        rows: &[DeliveredRow<'_>],
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
                                    pending_kind = NULL, mbox_hash = NULL, mbox_from = NULL,
                                    identity = ?6
                 WHERE account_id = ?1 AND uid = ?2 AND state = 'pending'",
            )?;
            for (uid, size, identity) in rows {
                stmt.execute(params![
                    account.0,
                    uid,
                    *size as i64,
                    now,
                    state.as_str(),
                    identity
                ])?;
            }
            Ok(())
        })
    }

    /// Pending messages got these UIDs in the IMAP mailbox they were appended to (whose
    /// UIDVALIDITY is given): recorded before they are marked delivered.
    pub fn record_dest_uids(
        &mut self,
        account: AccountId,
        rows: &[(&[u8], u32, u32)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE message SET dest_uidvalidity = ?3, dest_uid = ?4
                 WHERE account_id = ?1 AND uid = ?2 AND state = 'pending'",
            )?;
            for (uid, validity, dest_uid) in rows {
                stmt.execute(params![account.0, uid, validity, dest_uid])?;
            }
            Ok(())
        })
    }

    /// `pending` → unknown: the delivery did not happen (nothing of the message is in the
    /// mailbox), so it is downloaded again next time.
    pub fn drop_pending(&mut self, account: AccountId, uids: &[&[u8]]) -> Result<(), StoreError> {
        if uids.is_empty() {
            return Ok(());
        }
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

    /// unknown → `seen`: recorded without downloading (`fetch --mark-seen`).
    pub fn record_seen(
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

    /// (unknown or `oversize`) → `oversize`: over `max-size`, left on the server; `size` is
    /// the server's.
    pub fn record_oversize(
        &mut self,
        account: AccountId,
        rows: &[(&[u8], u64)],
        now: i64,
    ) -> Result<(), StoreError> {
        self.insert_undelivered(account, rows, MessageState::Oversize, now)
    }

    /// (unknown or `oversize`) → `delete-pending`: over `max-size` with `oversize =
    /// "delete"`, to be deleted without being downloaded.
    pub fn record_delete_unfetched(
        &mut self,
        account: AccountId,
        rows: &[(&[u8], u64)],
        now: i64,
    ) -> Result<(), StoreError> {
        self.insert_undelivered(account, rows, MessageState::DeletePending, now)
    }

    fn insert_undelivered(
        &mut self,
        account: AccountId,
        rows: &[(&[u8], u64)],
        state: MessageState,
        now: i64,
    ) -> Result<(), StoreError> {
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO message (account_id, uid, state, size, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account_id, uid) DO UPDATE SET state = excluded.state, size = excluded.size
                 WHERE state = 'oversize'",
            )?;
            for (uid, size) in rows {
                stmt.execute(params![account.0, uid, state.as_str(), *size as i64, now])?;
            }
            Ok(())
        })
    }

    /// (`delivered` or `delete-pending`) → `delete-pending`: DELE is about to be sent.
    pub fn mark_delete_pending(
        &mut self,
        account: AccountId,
        uids: &[&[u8]],
    ) -> Result<(), StoreError> {
        self.move_state(
            account,
            uids,
            "state IN ('delivered', 'delete-pending')",
            MessageState::DeletePending,
        )
    }

    /// `delete-pending` → `deleted`: QUIT was answered +OK after the DELE (or the server no
    /// longer lists a message left delete-pending by a session that was cut off after it).
    pub fn confirm_deleted(
        &mut self,
        account: AccountId,
        uids: &[&[u8]],
    ) -> Result<(), StoreError> {
        self.move_state(
            account,
            uids,
            "state = 'delete-pending'",
            MessageState::Deleted,
        )
    }

    /// `delete-pending` → `delivered`: a deletion that was never confirmed and that the
    /// retention policy no longer asks for.
    pub fn undo_deletion(&mut self, account: AccountId, uids: &[&[u8]]) -> Result<(), StoreError> {
        self.move_state(
            account,
            uids,
            "state = 'delete-pending'",
            MessageState::Delivered,
        )
    }

    /// Moves the messages that match `from` (an SQL condition on `state`, one of this
    /// module's constants) to `to`.
    fn move_state(
        &mut self,
        account: AccountId,
        uids: &[&[u8]],
        from: &'static str,
        to: MessageState,
    ) -> Result<(), StoreError> {
        if uids.is_empty() {
            return Ok(());
        }
        let sql =
            format!("UPDATE message SET state = ?3 WHERE account_id = ?1 AND uid = ?2 AND {from}");
        self.batch(|tx| {
            let mut stmt = tx.prepare_cached(&sql)?;
            for uid in uids {
                stmt.execute(params![account.0, uid, to.as_str()])?;
            }
            Ok(())
        })
    }

    /// Bookkeeping from a listing, in one commit: messages listed again, messages missing
    /// from `now` (the first time only: the grace period counts from then), and messages to
    /// forget (in any state but `pending`).
    pub fn record_listing(
        &mut self,
        account: AccountId,
        listing: &Listing<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        let Listing {
            relisted,
            unlisted,
            forget,
        } = *listing;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store, AccountId) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let a = s.account("home", 100).unwrap();
        (dir, s, a)
    }

    fn state(s: &Store, a: AccountId, uid: &[u8]) -> Option<MessageState> {
        s.known(a).unwrap().get(uid).map(|k| k.state)
    }

    fn maildir_place(name: &str) -> Place {
        Place {
            kind: "maildir".into(),
            mailbox: Some("/m".into()),
            name: Some(name.into()),
            ..Place::default()
        }
    }

    #[test]
    fn a_message_goes_from_pending_to_delivered_to_deleted() {
        let (_d, mut s, a) = open();
        assert_eq!(
            s.account("home", 200).unwrap(),
            a,
            "the same id for the same name"
        );
        let (p1, p2) = (maildir_place("n1"), maildir_place("n2"));
        s.record_pending(a, &[(b"u1", &p1), (b"u2", &p2)], 100, 100, false)
            .unwrap();
        let pending = s.pending(a).unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].place, p1);
        s.mark_delivered(a, &[(b"u1", 42, None)], 110, false)
            .unwrap();
        s.drop_pending(a, &[b"u2"]).unwrap();
        let known = s.known(a).unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(known.get(b"u1").unwrap().state, MessageState::Delivered);
        assert_eq!(known.get(b"u1").unwrap().delivered_at, Some(110));
        assert!(s.is_delivered_under("n1").unwrap());
        assert!(!s.is_delivered_under("n2").unwrap());
        s.mark_delete_pending(a, &[b"u1"]).unwrap();
        assert_eq!(state(&s, a, b"u1"), Some(MessageState::DeletePending));
        s.undo_deletion(a, &[b"u1"]).unwrap();
        assert_eq!(state(&s, a, b"u1"), Some(MessageState::Delivered));
        s.mark_delete_pending(a, &[b"u1"]).unwrap();
        s.confirm_deleted(a, &[b"u1"]).unwrap();
        assert_eq!(state(&s, a, b"u1"), Some(MessageState::Deleted));
    }

    #[test]
    fn a_transition_leaves_messages_in_other_states_alone() {
        let (_d, mut s, a) = open();
        s.record_seen(a, &[b"seen"], 1).unwrap();
        s.record_pending(a, &[(b"p", &maildir_place("n"))], 1, 1, false)
            .unwrap();
        // Seen messages are never deleted, delivered or re-delivered.
        s.mark_delete_pending(a, &[b"seen"]).unwrap();
        s.mark_delivered(a, &[(b"seen", 1, None)], 1, false)
            .unwrap();
        s.record_pending(a, &[(b"seen", &maildir_place("x"))], 1, 1, false)
            .unwrap();
        s.drop_pending(a, &[b"seen"]).unwrap();
        assert_eq!(state(&s, a, b"seen"), Some(MessageState::Seen));
        assert!(!s.is_delivered_under("x").unwrap());
        // A pending message is neither deleted nor confirmed nor forgotten.
        s.mark_delete_pending(a, &[b"p"]).unwrap();
        s.confirm_deleted(a, &[b"p"]).unwrap();
        s.record_listing(
            a,
            &Listing {
                forget: &[b"p"],
                ..Listing::default()
            },
            5,
        )
        .unwrap();
        assert_eq!(state(&s, a, b"p"), Some(MessageState::Pending));
        // A delivered message cannot be confirmed deleted without being delete-pending.
        s.mark_delivered(a, &[(b"p", 3, None)], 2, false).unwrap();
        s.confirm_deleted(a, &[b"p"]).unwrap();
        assert_eq!(state(&s, a, b"p"), Some(MessageState::Delivered));
    }

    #[test]
    fn an_oversize_message_can_later_be_delivered_or_deleted_unfetched() {
        let (_d, mut s, a) = open();
        s.record_oversize(a, &[(b"big", 9_000_000), (b"huge", 10)], 1)
            .unwrap();
        assert_eq!(state(&s, a, b"big"), Some(MessageState::Oversize));
        let place = Place {
            kind: "mbox".into(),
            mailbox: Some("/mbox".into()),
            offset: Some(10),
            len: Some(20),
            sha256: Some(vec![7; 32]),
            first_line: Some("From x Thu Jan  1 00:00:00 1970".into()),
            ..Place::default()
        };
        s.record_pending(a, &[(b"big", &place)], 2, 2, true)
            .unwrap();
        let pending = s.pending(a).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].place, place);
        assert!(pending[0].headers_only);
        s.mark_delivered(a, &[(b"big", 20, None)], 3, true).unwrap();
        assert_eq!(state(&s, a, b"big"), Some(MessageState::HeadersOnly));
        s.record_delete_unfetched(a, &[(b"huge", 10), (b"new", 11)], 4)
            .unwrap();
        assert_eq!(state(&s, a, b"huge"), Some(MessageState::DeletePending));
        assert_eq!(state(&s, a, b"new"), Some(MessageState::DeletePending));
        // A headers-only message is not recorded oversize again.
        s.record_oversize(a, &[(b"big", 1)], 5).unwrap();
        assert_eq!(state(&s, a, b"big"), Some(MessageState::HeadersOnly));
    }

    #[test]
    fn a_listing_records_when_a_message_went_missing_and_forgets_it_later() {
        let (_d, mut s, a) = open();
        s.record_seen(a, &[b"u1"], 1).unwrap();
        let missing = Listing {
            unlisted: &[b"u1"],
            ..Listing::default()
        };
        s.record_listing(a, &missing, 120).unwrap();
        assert_eq!(
            s.known(a).unwrap().get(b"u1").unwrap().unlisted_since,
            Some(120)
        );
        s.record_listing(a, &missing, 130).unwrap();
        assert_eq!(
            s.known(a).unwrap().get(b"u1").unwrap().unlisted_since,
            Some(120),
            "first time kept"
        );
        let back = Listing {
            relisted: &[b"u1"],
            ..Listing::default()
        };
        s.record_listing(a, &back, 135).unwrap();
        assert_eq!(s.known(a).unwrap().get(b"u1").unwrap().unlisted_since, None);
        let forget = Listing {
            forget: &[b"u1"],
            ..Listing::default()
        };
        s.record_listing(a, &forget, 140).unwrap();
        assert!(s.known(a).unwrap().is_empty());
    }

    #[test]
    fn uids_are_exact_bytes() {
        let (_d, mut s, a) = open();
        let odd: &[u8] = b"\xff\x00../../etc/passwd";
        s.record_seen(a, &[odd, b"A", b"a"], 1).unwrap();
        let known = s.known(a).unwrap();
        assert_eq!(known.len(), 3);
        assert!(known.contains(odd));
    }
}
