//! The pure heart of a poll: from the server's listing, what popsync already knows, the
//! account's retention policy and the time, decide what to download, what to delete and
//! what to forget. No I/O, so every rule is tested directly.
//!
//! The rules:
//!
//! - a unique-id popsync has never seen is downloaded (or, with `--mark-seen`, only
//!   recorded);
//! - only messages popsync *delivered* are ever deleted, and only when the retention policy
//!   says so: `delete` at once, `"14d"` fourteen days after delivery, `keep` never. A message
//!   already marked delete-pending by an interrupted session is deleted again without being
//!   downloaded again;
//! - if the server lists a unique-id more than once, messages cannot be told apart, so no
//!   message is deleted in that session (and each duplicate is downloaded once);
//! - a known unique-id missing from the listing is remembered as missing from that moment,
//!   and forgotten only once it has been missing for the grace period — a server that lists
//!   nothing for a while does not cause everything to be downloaded again;
//! - what a session deletes is decided here too ([`Plan::oversize_deletions`] before the
//!   download, [`Plan::deletions`] after it), from the plan, what the session delivered
//!   and the policy.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::config::{Oversize, Retention};
use crate::pop3::{MsgNum, Uidl};
use crate::store::{KnownMessages, MessageState};

/// The account's policy for one session.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub retention: Retention,
    pub forget_after: Duration,
    /// Record new messages as seen instead of downloading them.
    pub mark_seen: bool,
    /// Larger messages are not downloaded ...
    pub max_size: Option<u64>,
    /// ... but left on the server or deleted without download.
    pub oversize: Oversize,
    /// Larger messages are delivered as their headers only.
    pub headers_only_over: Option<u64>,
}

impl Policy {
    /// The account's policy; `mark_seen` for `fetch --mark-seen`.
    pub fn of(account: &crate::config::Account, mark_seen: bool) -> Self {
        Self {
            retention: account.limits.retention,
            forget_after: account.timing.forget_after,
            mark_seen,
            max_size: account.limits.max_size,
            oversize: account.limits.oversize,
            headers_only_over: account.limits.headers_only_over,
        }
    }

    /// The same policy deleting nothing: what is due for deletion stays on the server, and
    /// what is too big is left there (`fetch --keep`).
    pub fn keeping_everything(self) -> Self {
        Self {
            retention: Retention::Keep,
            oversize: Oversize::Skip,
            ..self
        }
    }
}

/// A listed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed<'a> {
    pub msg: MsgNum,
    pub uid: &'a [u8],
}

/// The fewest new messages a listing holds when it may be a portion. Servers that portion
/// their mailbox hand out hundreds of messages at a time, and a server's last portion is
/// whatever remains, so a shorter listing can only be a last portion: asking again would
/// cost a login and list nothing. (Were a server to hand out smaller portions, the rest
/// would come with the next poll: nothing is lost, only later.)
pub const PORTION_MIN: usize = 100;

/// What one session will do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// New messages to download, in server order (before the size rules are applied; see
    /// [`split_by_size`]).
    pub fetch: Vec<Listed<'a>>,
    /// Messages recorded as too big that the size rules may now let through.
    pub reconsider: Vec<Listed<'a>>,
    /// New messages to record as seen without downloading.
    pub mark_seen: Vec<&'a [u8]>,
    /// Delivered messages to delete from the server now.
    pub delete: Vec<Listed<'a>>,
    /// Messages left delete-pending by an earlier session that the policy no longer deletes.
    pub undelete: Vec<&'a [u8]>,
    /// Known messages listed again after having been missing.
    pub relisted: Vec<&'a [u8]>,
    /// Known messages missing from the listing for the first time.
    pub unlisted: Vec<&'a [u8]>,
    /// Messages missing for longer than the grace period: forget them.
    pub forget: Vec<&'a [u8]>,
    /// Messages left delete-pending that the server no longer lists: the deletion happened
    /// (the session was cut off after QUIT was answered).
    pub confirmed_deleted: Vec<&'a [u8]>,
    /// How many listing entries repeat an earlier unique-id.
    pub duplicates: usize,
    /// How many listed messages popsync already knew (all states).
    pub known_listed: usize,
    /// Messages deleted earlier that the server still lists (it ignored the deletion).
    pub still_listed_after_delete: usize,
}

impl<'a> Plan<'a> {
    /// Deletion is off for this session because unique-ids are not unique.
    pub fn deletion_refused(&self) -> bool {
        self.duplicates > 0
    }

    /// Whether the listing looks like one portion of a larger mailbox: at least
    /// [`PORTION_MIN`] new messages, and nothing the server listed was known before.
    /// Servers that hand out mail in portions (Gmail: about 250 messages per session) list
    /// only messages not yet handed out, so after such a session another one may bring more.
    /// A server that keeps the mail it handed out lists known messages alongside new ones;
    /// a listing of a few new messages (every poll that finds mail, when mail is deleted as
    /// it is fetched) is all there is: one session is enough.
    pub fn may_be_partial(&self) -> bool {
        self.fetch.len() >= PORTION_MIN && self.known_listed == 0
    }

    /// Of the messages too big to download, those to delete without downloading them
    /// (`oversize = "delete"`): none when deletion is off for this session.
    pub fn oversize_deletions(&self, split: &SizeSplit<'a>) -> Vec<Listed<'a>> {
        if self.deletion_refused() {
            return Vec::new();
        }
        split.delete.iter().map(|(l, _)| *l).collect()
    }

    /// Everything the session deletes, once its downloads are done: what the plan found
    /// due, the messages it delivered when the policy deletes them at once, and the ones too
    /// big to download that the account asks to delete (`oversize`, from
    /// [`oversize_deletions`](Self::oversize_deletions)). Nothing downloaded is deleted when
    /// unique-ids are not unique, and nothing at all with `retention = "keep"` but the
    /// oversize ones the account asked for explicitly.
    pub fn deletions(
        &self,
        delivered_now: &[Listed<'a>],
        oversize: &[Listed<'a>],
        policy: &Policy,
        now: i64,
    ) -> Vec<Listed<'a>> {
        let mut out = Vec::new();
        if !self.deletion_refused() && policy.retention != Retention::Keep {
            out.extend_from_slice(&self.delete);
            if due_for_deletion(policy.retention, Some(now), now) {
                out.extend_from_slice(delivered_now);
            }
        }
        out.extend_from_slice(oversize);
        out
    }
}

/// New messages sorted by the size rules, using the server's (approximate) LIST sizes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SizeSplit<'a> {
    /// Download whole.
    pub fetch: Vec<Listed<'a>>,
    /// Download the headers only.
    pub headers_only: Vec<Listed<'a>>,
    /// Too big: remember, leave on the server.
    pub skip: Vec<(Listed<'a>, u64)>,
    /// Too big: delete from the server without downloading (asked for explicitly).
    pub delete: Vec<(Listed<'a>, u64)>,
}

/// Applies `max-size`, `oversize` and `headers-only-over` to `candidates`. A message whose
/// size the server did not list is downloaded whole.
pub fn split_by_size<'a>(
    candidates: impl IntoIterator<Item = Listed<'a>>,
    sizes: &HashMap<MsgNum, u64>,
    policy: &Policy,
) -> SizeSplit<'a> {
    let mut split = SizeSplit::default();
    for l in candidates {
        let Some(&size) = sizes.get(&l.msg) else {
            split.fetch.push(l);
            continue;
        };
        if policy.max_size.is_some_and(|max| size > max) {
            match policy.oversize {
                Oversize::Skip => split.skip.push((l, size)),
                Oversize::Delete => split.delete.push((l, size)),
            }
        } else if policy.headers_only_over.is_some_and(|h| size > h) {
            split.headers_only.push(l);
        } else {
            split.fetch.push(l);
        }
    }
    split
}

/// Whether a message delivered at `delivered_at` (unix seconds) is due for deletion.
pub fn due_for_deletion(retention: Retention, delivered_at: Option<i64>, now: i64) -> bool {
    match retention {
        Retention::Keep => false,
        Retention::Delete => true,
        Retention::After(age) => {
            delivered_at.is_some_and(|at| now.saturating_sub(at) >= age.as_secs() as i64)
        }
    }
}

/// Makes the plan for one session. `now` is unix seconds.
pub fn plan<'a>(
    listing: &'a Uidl,
    known: &'a KnownMessages,
    policy: &Policy,
    now: i64,
) -> Plan<'a> {
    let mut p = Plan::default();
    let mut listed: HashSet<&[u8]> = HashSet::with_capacity(listing.len());
    let mut numbers: HashSet<MsgNum> = HashSet::with_capacity(listing.len());
    let mut delete = Vec::new();
    for entry in listing.iter() {
        let uid = entry.uid;
        // A repeated unique-id, or a repeated message number (a broken or hostile listing):
        // the entries cannot be told apart.
        if !numbers.insert(entry.msg) || !listed.insert(uid) {
            p.duplicates += 1;
            continue;
        }
        let here = Listed {
            msg: entry.msg,
            uid,
        };
        match known.get(uid) {
            None if policy.mark_seen => p.mark_seen.push(uid),
            None => p.fetch.push(here),
            Some(k) => {
                p.known_listed += 1;
                if k.unlisted_since.is_some() {
                    p.relisted.push(uid);
                }
                match k.state {
                    MessageState::Delivered | MessageState::DeletePending => {
                        if due_for_deletion(policy.retention, k.delivered_at, now) {
                            delete.push(here);
                        } else if k.state == MessageState::DeletePending {
                            p.undelete.push(uid);
                        }
                    }
                    MessageState::Deleted => p.still_listed_after_delete += 1,
                    MessageState::Oversize => p.reconsider.push(here),
                    MessageState::Seen | MessageState::Pending | MessageState::HeadersOnly => {}
                }
            }
        }
    }
    if p.duplicates == 0 {
        p.delete = delete;
    }
    let grace = policy.forget_after.as_secs() as i64;
    for (uid, k) in known.iter() {
        if listed.contains(uid) || k.state == MessageState::Pending {
            continue;
        }
        if k.state == MessageState::DeletePending {
            p.confirmed_deleted.push(uid);
        }
        match k.unlisted_since {
            None => p.unlisted.push(uid),
            Some(since) if now.saturating_sub(since) >= grace => p.forget.push(uid),
            Some(_) => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::UidlEntry;
    use crate::store::Known;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn listing(uids: &[&str]) -> Uidl {
        uids.iter()
            .enumerate()
            .map(|(i, u)| UidlEntry {
                msg: MsgNum(i as u32 + 1),
                uid: u.as_bytes(),
            })
            .collect()
    }

    fn known(entries: &[(&str, MessageState, Option<i64>, Option<i64>)]) -> KnownMessages {
        let mut set = KnownMessages::default();
        for (u, state, delivered_at, unlisted_since) in entries {
            let k = Known {
                state: *state,
                delivered_at: *delivered_at,
                unlisted_since: *unlisted_since,
            };
            set.insert(u.as_bytes(), k).unwrap();
        }
        set
    }

    fn policy(retention: Retention) -> Policy {
        Policy {
            retention,
            forget_after: Duration::from_secs(7 * DAY as u64),
            mark_seen: false,
            max_size: None,
            oversize: crate::config::Oversize::Skip,
            headers_only_over: None,
        }
    }

    fn uids<'a>(l: &[Listed<'a>]) -> Vec<&'a [u8]> {
        l.iter().map(|x| x.uid).collect()
    }

    use MessageState::{DeletePending, Deleted, Delivered, HeadersOnly, Pending, Seen};
    #[allow(non_upper_case_globals)]
    const Oversize_: MessageState = MessageState::Oversize;

    #[test]
    fn unknown_messages_are_fetched_in_server_order_and_known_ones_are_not() {
        let l = listing(&["a", "b", "c"]);
        let k = known(&[("b", Delivered, Some(NOW), None)]);
        let p = plan(&l, &k, &policy(Retention::Keep), NOW);
        assert_eq!(
            p.fetch,
            vec![
                Listed {
                    msg: MsgNum(1),
                    uid: b"a"
                },
                Listed {
                    msg: MsgNum(3),
                    uid: b"c"
                }
            ]
        );
        assert!(p.delete.is_empty());
    }

    #[test]
    fn mark_seen_records_new_messages_instead_of_fetching_them() {
        let l = listing(&["a", "b"]);
        let k = known(&[("b", Delivered, Some(NOW), None)]);
        let p = plan(
            &l,
            &k,
            &Policy {
                mark_seen: true,
                ..policy(Retention::Keep)
            },
            NOW,
        );
        assert!(p.fetch.is_empty());
        assert_eq!(p.mark_seen, vec![b"a".as_slice()]);
    }

    #[test]
    fn keep_never_deletes() {
        let l = listing(&["a"]);
        let k = known(&[("a", Delivered, Some(NOW - 1000 * DAY), None)]);
        assert!(
            plan(&l, &k, &policy(Retention::Keep), NOW)
                .delete
                .is_empty()
        );
    }

    #[test]
    fn delete_removes_every_delivered_message_but_not_seen_ones() {
        let l = listing(&["a", "b", "c"]);
        let k = known(&[
            ("a", Delivered, Some(NOW), None),
            ("b", Seen, None, None),
            ("c", DeletePending, Some(NOW), None),
        ]);
        let p = plan(&l, &k, &policy(Retention::Delete), NOW);
        assert_eq!(uids(&p.delete), vec![b"a".as_slice(), b"c"]);
        assert!(
            p.fetch.is_empty(),
            "delete-pending messages are not downloaded again"
        );
    }

    #[test]
    fn delete_after_days_removes_only_what_is_old_enough() {
        let l = listing(&["old", "young", "exact"]);
        let k = known(&[
            ("old", Delivered, Some(NOW - 15 * DAY), None),
            ("young", Delivered, Some(NOW - 13 * DAY), None),
            ("exact", Delivered, Some(NOW - 14 * DAY), None),
        ]);
        let p = plan(
            &l,
            &k,
            &policy(Retention::After(Duration::from_secs(14 * DAY as u64))),
            NOW,
        );
        assert_eq!(uids(&p.delete), vec![b"old".as_slice(), b"exact"]);
    }

    #[test]
    fn a_delete_pending_message_the_policy_now_keeps_is_undeleted() {
        let l = listing(&["a"]);
        let k = known(&[("a", DeletePending, Some(NOW), None)]);
        let p = plan(&l, &k, &policy(Retention::Keep), NOW);
        assert!(p.delete.is_empty());
        assert_eq!(p.undelete, vec![b"a".as_slice()]);
    }

    #[test]
    fn duplicate_uids_switch_deletion_off_and_are_fetched_once() {
        let l = listing(&["a", "dup", "dup", "b"]);
        let k = known(&[("a", Delivered, Some(NOW), None)]);
        let p = plan(&l, &k, &policy(Retention::Delete), NOW);
        assert_eq!(p.duplicates, 1);
        assert!(p.deletion_refused());
        assert!(p.delete.is_empty());
        assert_eq!(uids(&p.fetch), vec![b"dup".as_slice(), b"b"]);
    }

    #[test]
    fn a_repeated_message_number_counts_as_a_duplicate() {
        let l: Uidl = [(1, "a"), (1, "b")]
            .into_iter()
            .map(|(msg, uid)| UidlEntry {
                msg: MsgNum(msg),
                uid: uid.as_bytes(),
            })
            .collect();
        let none = KnownMessages::default();
        let p = plan(&l, &none, &policy(Retention::Delete), NOW);
        assert_eq!(uids(&p.fetch), vec![b"a".as_slice()]);
        assert!(p.deletion_refused());
    }

    #[test]
    fn a_vanished_message_is_remembered_for_the_grace_period_then_forgotten() {
        let l = listing(&[]);
        let k = known(&[
            ("new-gone", Delivered, Some(NOW), None),
            ("gone-6d", Delivered, Some(NOW), Some(NOW - 6 * DAY)),
            ("gone-8d", Deleted, Some(NOW), Some(NOW - 8 * DAY)),
        ]);
        let p = plan(&l, &k, &policy(Retention::Keep), NOW);
        assert_eq!(p.unlisted, vec![b"new-gone".as_slice()]);
        assert!(p.confirmed_deleted.is_empty());
        assert_eq!(p.forget, vec![b"gone-8d".as_slice()]);
        assert!(p.fetch.is_empty());
    }

    #[test]
    fn a_message_listed_again_within_the_grace_period_is_not_downloaded_again() {
        let l = listing(&["back"]);
        let k = known(&[("back", Delivered, Some(NOW), Some(NOW - DAY))]);
        let p = plan(&l, &k, &policy(Retention::Keep), NOW);
        assert!(p.fetch.is_empty());
        assert_eq!(p.relisted, vec![b"back".as_slice()]);
    }

    #[test]
    fn a_deleted_message_the_server_still_lists_is_neither_fetched_nor_deleted_again() {
        let l = listing(&["a"]);
        let k = known(&[("a", Deleted, Some(NOW), None)]);
        let p = plan(&l, &k, &policy(Retention::Delete), NOW);
        assert!(p.fetch.is_empty() && p.delete.is_empty());
        assert_eq!(p.still_listed_after_delete, 1);
    }

    #[test]
    fn a_delete_pending_message_the_server_no_longer_lists_was_deleted() {
        let l = listing(&[]);
        let k = known(&[("a", DeletePending, Some(NOW), None)]);
        let p = plan(&l, &k, &policy(Retention::Delete), NOW);
        assert_eq!(p.confirmed_deleted, vec![b"a".as_slice()]);
        assert_eq!(
            p.unlisted,
            vec![b"a".as_slice()],
            "and it is forgotten after the grace period"
        );
    }

    #[test]
    fn only_a_listing_of_nothing_but_new_mail_may_be_a_portion() {
        let k = known(&[("old", Delivered, Some(NOW), None)]);
        let many: Vec<String> = (0..PORTION_MIN).map(|i| format!("new-{i}")).collect();
        let names = |extra: &[&'static str]| -> Vec<&str> {
            extra
                .iter()
                .copied()
                .chain(many.iter().map(String::as_str))
                .collect()
        };
        let l = listing(&names(&[]));
        assert!(plan(&l, &k, &policy(Retention::Keep), NOW).may_be_partial());
        // Something known among them: the server keeps what it handed out.
        let l = listing(&names(&["old"]));
        assert!(!plan(&l, &k, &policy(Retention::Keep), NOW).may_be_partial());
        // A few new messages, as every poll in delete mode finds them: all there is.
        let l = listing(&["a", "b"]);
        assert!(!plan(&l, &k, &policy(Retention::Keep), NOW).may_be_partial());
        let l = listing(&many[1..].iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!plan(&l, &k, &policy(Retention::Keep), NOW).may_be_partial());
        let l = listing(&[]);
        assert!(!plan(&l, &k, &policy(Retention::Keep), NOW).may_be_partial());
    }

    #[test]
    fn size_rules_sort_new_messages_and_unknown_sizes_are_downloaded() {
        let l = listing(&["small", "mid", "huge", "nosize"]);
        let listed: Vec<Listed<'_>> = l
            .iter()
            .map(|e| Listed {
                msg: e.msg,
                uid: e.uid,
            })
            .collect();
        let sizes: HashMap<MsgNum, u64> = [
            (MsgNum(1), 1_000),
            (MsgNum(2), 6_000_000),
            (MsgNum(3), 30_000_000),
        ]
        .into();
        let mut p = policy(Retention::Keep);
        p.max_size = Some(20_000_000);
        p.headers_only_over = Some(5_000_000);
        let split = split_by_size(listed.clone(), &sizes, &p);
        assert_eq!(uids(&split.fetch), vec![b"small".as_slice(), b"nosize"]);
        assert_eq!(uids(&split.headers_only), vec![b"mid".as_slice()]);
        assert_eq!(split.skip, vec![(listed[2], 30_000_000)]);
        assert!(split.delete.is_empty());
        p.oversize = crate::config::Oversize::Delete;
        let split = split_by_size(listed.clone(), &sizes, &p);
        assert_eq!(split.delete, vec![(listed[2], 30_000_000)]);
    }

    #[test]
    fn an_oversize_message_is_reconsidered_and_never_fetched_as_new() {
        let l = listing(&["big"]);
        let k = known(&[("big", Oversize_, None, None)]);
        let p = plan(&l, &k, &policy(Retention::Delete), NOW);
        assert!(p.fetch.is_empty() && p.delete.is_empty());
        assert_eq!(uids(&p.reconsider), vec![b"big".as_slice()]);
    }

    #[test]
    fn a_headers_only_message_is_never_deleted() {
        let l = listing(&["h"]);
        let k = known(&[("h", HeadersOnly, Some(NOW - 100 * DAY), None)]);
        let p = plan(&l, &k, &policy(Retention::Delete), NOW);
        assert!(p.delete.is_empty() && p.fetch.is_empty());
    }

    #[test]
    fn pending_rows_are_left_alone() {
        let l = listing(&["p"]);
        let k = known(&[("p", Pending, None, None), ("q", Pending, None, None)]);
        let p = plan(&l, &k, &policy(Retention::Delete), NOW);
        assert_eq!(
            p,
            Plan {
                known_listed: 1,
                ..Plan::default()
            }
        );
    }

    fn listed(l: &Uidl) -> Vec<Listed<'_>> {
        l.iter()
            .map(|e| Listed {
                msg: e.msg,
                uid: e.uid,
            })
            .collect()
    }

    #[test]
    fn delete_at_once_removes_what_was_due_and_what_this_session_delivered() {
        let l = listing(&["old", "new"]);
        let k = known(&[("old", Delivered, Some(NOW - DAY), None)]);
        let p = plan(&l, &k, &policy(Retention::Delete), NOW);
        let delivered = listed(&l)[1..].to_vec();
        let d = p.deletions(&delivered, &[], &policy(Retention::Delete), NOW);
        assert_eq!(uids(&d), vec![b"old".as_slice(), b"new"]);
    }

    #[test]
    fn delete_after_days_keeps_what_this_session_delivered() {
        let l = listing(&["new"]);
        let none = KnownMessages::default();
        let fourteen = policy(Retention::After(Duration::from_secs(14 * DAY as u64)));
        let p = plan(&l, &none, &fourteen, NOW);
        assert!(p.deletions(&listed(&l), &[], &fourteen, NOW).is_empty());
        let zero = policy(Retention::After(Duration::ZERO));
        let p = plan(&l, &none, &zero, NOW);
        assert_eq!(
            uids(&p.deletions(&listed(&l), &[], &zero, NOW)),
            vec![b"new".as_slice()],
            "a zero age is due at once"
        );
    }

    #[test]
    fn keep_deletes_only_oversize_messages_the_account_asked_to_delete() {
        let l = listing(&["new", "huge"]);
        let none = KnownMessages::default();
        let mut keep = policy(Retention::Keep);
        keep.max_size = Some(1_000);
        keep.oversize = crate::config::Oversize::Delete;
        let p = plan(&l, &none, &keep, NOW);
        let sizes: HashMap<MsgNum, u64> = [(MsgNum(1), 10), (MsgNum(2), 5_000)].into();
        let split = split_by_size(p.fetch.clone(), &sizes, &keep);
        let oversize = p.oversize_deletions(&split);
        assert_eq!(uids(&oversize), vec![b"huge".as_slice()]);
        let d = p.deletions(&split.fetch, &oversize, &keep, NOW);
        assert_eq!(uids(&d), vec![b"huge".as_slice()]);
    }

    #[test]
    fn duplicate_uids_delete_nothing_not_even_oversize_messages() {
        let l = listing(&["dup", "dup", "huge"]);
        let none = KnownMessages::default();
        let mut del = policy(Retention::Delete);
        del.max_size = Some(1_000);
        del.oversize = crate::config::Oversize::Delete;
        let p = plan(&l, &none, &del, NOW);
        let sizes: HashMap<MsgNum, u64> = [(MsgNum(1), 10), (MsgNum(3), 5_000)].into();
        let split = split_by_size(p.fetch.clone(), &sizes, &del);
        assert_eq!(split.delete.len(), 1);
        let oversize = p.oversize_deletions(&split);
        assert!(oversize.is_empty());
        assert!(p.deletions(&split.fetch, &oversize, &del, NOW).is_empty());
    }
}
