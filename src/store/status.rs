//! What popsync records about each account as a whole: how its last poll went, when the
//! agent polls it next, and the counts `popsync status` shows.

use rusqlite::{OptionalExtension, params};

use super::{AccountId, Store, StoreError};

/// The outcome of a poll, as recorded for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRecord {
    pub at: i64,
    pub ok: bool,
    pub error: Option<String>,
    pub new_messages: u64,
}

/// An account the agent left alone after a problem that needs the user (a refused login,
/// say): it is tried again at `until`, or at once when the user asks for a poll, stores a
/// password, or changes the account's configuration (`config` is a digest of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub since: i64,
    pub until: i64,
    /// The problem, as told to the user ("popsync: login refused").
    pub problem: String,
    pub config: String,
}

/// What `status` shows about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStatus {
    pub last_poll: Option<PollRecord>,
    pub last_success_at: Option<i64>,
    pub next_poll_at: Option<i64>,
    pub paused: Option<Pause>,
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
    /// The last time the server renumbered the mailbox: when, and how many messages
    /// popsync recognised under new unique-ids.
    pub renumbered: Option<(i64, u64)>,
}

impl Store {
    /// Records how a poll went.
    pub fn record_poll(
        &mut self,
        account: AccountId,
        record: &PollRecord,
    ) -> Result<(), StoreError> {
        let r = self.conn.execute(
            "UPDATE account SET last_poll_at = ?2, last_poll_ok = ?3, last_poll_error = ?4, last_poll_new = ?5,
                                last_success_at = CASE WHEN ?3 THEN ?2 ELSE last_success_at END,
                                paused_since = CASE WHEN ?3 THEN NULL ELSE paused_since END,
                                paused_until = CASE WHEN ?3 THEN NULL ELSE paused_until END,
                                paused_problem = CASE WHEN ?3 THEN NULL ELSE paused_problem END,
                                paused_config = CASE WHEN ?3 THEN NULL ELSE paused_config END
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

    /// Pauses the account (`Some`) or ends its pause (`None`). A good poll ends it too.
    pub fn set_pause(
        &mut self,
        account: AccountId,
        pause: Option<&Pause>,
    ) -> Result<(), StoreError> {
        let r = self.conn.execute(
            "UPDATE account SET paused_since = ?2, paused_until = ?3, paused_problem = ?4,
                                paused_config = ?5
             WHERE id = ?1",
            params![
                account.0,
                pause.map(|p| p.since),
                pause.map(|p| p.until),
                pause.map(|p| p.problem.as_str()),
                pause.map(|p| p.config.as_str())
            ],
        );
        r.map(drop).map_err(|e| self.err(e))
    }

    /// The account's pause, if it is paused.
    pub fn pause(&self, account: AccountId) -> Result<Option<Pause>, StoreError> {
        let r = self
            .conn
            .query_row(
                "SELECT paused_since, paused_until, paused_problem, paused_config FROM account
                 WHERE id = ?1 AND paused_since IS NOT NULL",
                [account.0],
                |r| {
                    Ok(Pause {
                        since: r.get(0)?,
                        until: r.get(1)?,
                        problem: r.get(2)?,
                        config: r.get(3)?,
                    })
                },
            )
            .optional();
        r.map_err(|e| self.err(e))
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
            type Row = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);
            let (last_success_at, next_poll_at, renumbered_at, renumbered_count): Row =
                self.conn.query_row(
                    "SELECT last_success_at, next_poll_at, renumbered_at, renumbered_count
                     FROM account WHERE id = ?1",
                    [id.0],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
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
                paused: None,
                known: known as u64,
                delivered_total: delivered_total as u64,
                delivered_last_day: delivered_last_day as u64,
                oversize_on_server: oversize as u64,
                headers_only: headers_only as u64,
                renumbered: renumbered_at.zip(renumbered_count.map(|n| n as u64)),
            })
        })();
        let mut status = r.map_err(|e| self.err(e))?;
        status.last_poll = self.last_poll(id)?;
        status.paused = self.pause(id)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_what_an_account_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.account_status("home", 1_000_000).unwrap(), None);
        let a = s.account("home", 1).unwrap();
        let place = crate::store::Place {
            kind: "mda".into(),
            ..Default::default()
        };
        s.record_pending(a, &[(b"old", &place), (b"new", &place)], 1, 1, false)
            .unwrap();
        s.mark_delivered(a, &[(b"old", 5, None)], 1, false).unwrap();
        s.mark_delivered(a, &[(b"new", 5, None)], 999_999, false)
            .unwrap();
        s.record_oversize(a, &[(b"big", 1 << 30)], 1).unwrap();
        s.record_seen(a, &[b"seen"], 1).unwrap();
        s.record_poll(
            a,
            &PollRecord {
                at: 999_999,
                ok: false,
                error: Some("refused".into()),
                new_messages: 1,
            },
        )
        .unwrap();
        s.set_next_poll(a, Some(1_000_300)).unwrap();
        let st = s.account_status("home", 1_000_000).unwrap().unwrap();
        assert_eq!(
            st,
            AccountStatus {
                last_poll: Some(PollRecord {
                    at: 999_999,
                    ok: false,
                    error: Some("refused".into()),
                    new_messages: 1,
                }),
                last_success_at: None,
                next_poll_at: Some(1_000_300),
                paused: None,
                known: 4,
                delivered_total: 2,
                delivered_last_day: 1,
                oversize_on_server: 1,
                headers_only: 0,
                renumbered: None,
            }
        );
    }

    #[test]
    fn a_pause_is_kept_until_ended_or_a_good_poll() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let a = s.account("home", 1).unwrap();
        assert_eq!(s.pause(a).unwrap(), None);
        let pause = Pause {
            since: 100,
            until: 21_700,
            problem: "popsync: login refused".into(),
            config: "abc".into(),
        };
        s.set_pause(a, Some(&pause)).unwrap();
        drop(s);
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.pause(a).unwrap(), Some(pause.clone()));
        let failed = PollRecord {
            at: 200,
            ok: false,
            error: Some("refused".into()),
            new_messages: 0,
        };
        s.record_poll(a, &failed).unwrap();
        assert_eq!(
            s.pause(a).unwrap(),
            Some(pause.clone()),
            "a failed poll keeps it"
        );
        s.record_poll(
            a,
            &PollRecord {
                ok: true,
                error: None,
                ..failed.clone()
            },
        )
        .unwrap();
        assert_eq!(s.pause(a).unwrap(), None, "a good poll ends it");
        s.set_pause(a, Some(&pause)).unwrap();
        s.set_pause(a, None).unwrap();
        assert_eq!(s.pause(a).unwrap(), None);
    }
}
