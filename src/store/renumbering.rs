//! What recognising a renumbered mailbox (`poll::renumber`) reads and writes: the
//! identities of known messages, and the `rekey` transition that moves a message's record to
//! its new unique-id.

use rusqlite::{OptionalExtension, params};

use super::messages::{MessageState, Place};
use super::{AccountId, Store, StoreError};

/// A known message as recognising it by content needs it (see [`Store::identities`]).
#[derive(Debug, Clone)]
pub struct IdentityRow {
    pub uid: Vec<u8>,
    pub state: MessageState,
    pub identity: Option<crate::identity::Identity>,
    /// Where its copy was put (the name and offsets only).
    pub place: Place,
}

/// One renumbered message (see [`Store::rekey`]).
#[derive(Debug, Clone, Copy)]
pub struct Rekey<'a> {
    pub old: &'a [u8],
    pub new: &'a [u8],
    pub identity: &'a crate::identity::Identity,
    /// Its stored copy was read and has this identity.
    pub verified: bool,
}

impl Store {
    /// What is known of these messages for recognising them by content after the server
    /// renumbered its mailbox: each one's identity as recorded at delivery (`None` for
    /// messages delivered before identities were recorded) and where its copy was put.
    /// Unique-ids not known are left out.
    pub fn identities(
        &self,
        account: AccountId,
        uids: &[&[u8]],
    ) -> Result<Vec<IdentityRow>, StoreError> {
        let r = (|| -> rusqlite::Result<Vec<IdentityRow>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT state, identity, file_name, mbox_offset, mbox_length
                 FROM message WHERE account_id = ?1 AND uid = ?2",
            )?;
            let mut out = Vec::with_capacity(uids.len());
            for uid in uids {
                let row = stmt
                    .query_row(params![account.0, uid], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<Vec<u8>>>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    })
                    .optional()?;
                let Some((state, identity, name, offset, len)) = row else {
                    continue;
                };
                let Some(state) = MessageState::parse(&state) else {
                    continue;
                };
                out.push(IdentityRow {
                    uid: uid.to_vec(),
                    state,
                    identity: identity.and_then(|b| b.try_into().ok()),
                    place: Place {
                        name,
                        offset: offset.map(|n| n as u64),
                        len: len.map(|n| n as u64),
                        ..Place::default()
                    },
                });
            }
            Ok(out)
        })();
        r.map_err(|e| self.err(e))
    }

    /// Messages the server renumbered, recognised by content (recorded as the account's last
    /// renumbering, at `now`). Each one's row moves from the old
    /// unique-id to the new one, keeping its state and times (retention by age counts from
    /// the first download), with its identity recorded. One whose stored copy could not be
    /// checked (`verified` false) becomes `seen`: never deleted by popsync. Only messages in
    /// the states a renumbering can find (`delivered`, `headers-only`, `seen`,
    /// `delete-pending`) move; all in one transaction.
    pub fn rekey(
        &mut self,
        account: AccountId,
        rows: &[Rekey<'_>],
        now: i64,
    ) -> Result<(), StoreError> {
        self.batch(|tx| {
            tx.execute(
                "UPDATE account SET renumbered_at = ?2, renumbered_count = ?3 WHERE id = ?1",
                params![account.0, now, rows.len() as i64],
            )?;
            let mut stmt = tx.prepare_cached(
                "UPDATE message SET uid = ?3, identity = ?4, unlisted_since = NULL,
                                    state = CASE WHEN ?5 THEN state ELSE 'seen' END
                 WHERE account_id = ?1 AND uid = ?2
                   AND state IN ('delivered', 'headers-only', 'seen', 'delete-pending')",
            )?;
            for r in rows {
                stmt.execute(params![
                    account.0,
                    r.old,
                    r.new,
                    r.identity.as_slice(),
                    r.verified
                ])?;
                crate::failpoint::hit("rekeyed-one");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renumbering_moves_rows_keeps_their_times_and_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let a = s.account("home", 1).unwrap();
        let place = Place {
            kind: "maildir".into(),
            name: Some("n".into()),
            ..Place::default()
        };
        s.record_pending(a, &[(b"u1", &place), (b"u2", &place)], 10, 10, false)
            .unwrap();
        s.mark_delivered(
            a,
            &[(b"u1", 5, Some(&[1; 16])), (b"u2", 5, None)],
            20,
            false,
        )
        .unwrap();
        let id = [1u8; 16];
        s.rekey(
            a,
            &[
                Rekey {
                    old: b"u1",
                    new: b"v1",
                    identity: &id,
                    verified: true,
                },
                Rekey {
                    old: b"u2",
                    new: b"v2",
                    identity: &id,
                    verified: false,
                },
            ],
            30,
        )
        .unwrap();
        let known = s.known(a).unwrap();
        assert!(known.get(b"u1").is_none() && known.get(b"u2").is_none());
        let v1 = known.get(b"v1").unwrap();
        assert_eq!(
            (v1.state, v1.delivered_at),
            (MessageState::Delivered, Some(20))
        );
        // Its stored copy unchecked: never deleted by popsync.
        assert_eq!(known.get(b"v2").unwrap().state, MessageState::Seen);
        let st = s.account_status("home", 40).unwrap().unwrap();
        assert_eq!(st.renumbered, Some((30, 2)));
    }
}
