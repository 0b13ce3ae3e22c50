//! A server that renumbered its mailbox: the messages popsync knows listed under new
//! unique-ids (a provider's move to new servers or software, a mailbox restored from
//! backup, Dovecot's uidlist lost). Without this, every one of them would look new and be
//! downloaded again.
//!
//! - **Suspected** when, in one listing, known messages have gone missing (for the first
//!   time) at least as many as are still listed, and unknown ones have appeared.
//!   Messages popsync deleted itself, or never downloaded, do not count, nor do later
//!   sessions of one fetch. A mailbox where nothing went missing costs nothing more than
//!   before.
//! - **Confirmed** when one of up to 16 unknown messages, spread over the listing, is one
//!   popsync has. A server that simply lists no more what it has handed out (Gmail)
//!   costs those few `TOP n 0`, once per poll that finds new mail.
//! - **Recognised by content**: each unknown message's header block is asked for
//!   (`TOP n 0`, pipelined) and, with its size, gives its identity (`crate::identity`). A
//!   missing known message's identity is the one recorded at its delivery, or, for one
//!   delivered before identities were recorded, read from its stored copy.
//! - **Matched only where it cannot be wrong**: an unknown message takes over the record of
//!   a missing one when they are the only two with that identity. Messages with the same
//!   header block and size (the same message delivered several times) are paired only when
//!   as many are missing as appeared; otherwise all of them are downloaded: at worst a
//!   duplicate, never a new message taken for one popsync has, and lost.
//! - **Deletion stays as safe as before**: a recognised message whose stored copy was
//!   read and has the same identity keeps its state (and is deleted when retention says
//!   so); one whose copy could not be read (moved away, an MDA's) is recorded as seen,
//!   never deleted by popsync.
//! - The re-keying is one transaction: killed in the middle, nothing has changed, and the
//!   next run recognises them again.

use std::collections::{HashMap, HashSet};

use tracing::{debug, info};

use super::{FetchError, SessionCtx};
use crate::identity::{self, Identity};
use crate::plan::Plan;
use crate::pop3::{self, BodyCommand, MsgNum, RetrieveHandler, Status, Uidl};
use crate::store::{KnownMessages, MessageState, Rekey};
use crate::summary::Head;

/// How many TOP commands one call asks for (they are pipelined within it).
const TOP_CHUNK: usize = 1000;

/// How many stored copies are read at a time.
const COPIES_AT_ONCE: usize = 256;

/// How many unknown messages are looked at first, to see whether any is one popsync has.
const SAMPLE: usize = 16;

/// The states of messages a renumbering can hide: ones popsync has a copy of, or has
/// recorded as handled, and that the server is expected to list still.
fn may_be_renumbered(state: MessageState) -> bool {
    matches!(
        state,
        MessageState::Delivered
            | MessageState::HeadersOnly
            | MessageState::Seen
            | MessageState::DeletePending
    )
}

/// The unknown messages of a listing that may be known ones under new unique-ids, if the
/// listing looks renumbered (see the module docs): their numbers and unique-ids.
pub fn suspects(plan: &Plan<'_>, known: &KnownMessages) -> Option<Vec<(MsgNum, Vec<u8>)>> {
    if plan.fetch.is_empty() {
        return None;
    }
    let newly_missing = plan
        .unlisted
        .iter()
        .filter(|uid| known.get(uid).is_some_and(|k| may_be_renumbered(k.state)))
        .count();
    if newly_missing == 0 || newly_missing < plan.known_listed {
        return None;
    }
    Some(plan.fetch.iter().map(|l| (l.msg, l.uid.to_vec())).collect())
}

/// Recognises `suspects` among the known messages the listing misses, and moves each one
/// recognised to its new unique-id. Returns how many were, and the sizes of the suspects
/// (asked for on the way; `LIST` need not be sent again).
pub(super) async fn recognise(
    sc: &mut SessionCtx<'_, '_>,
    s: &mut pop3::Authenticated,
    listing: &Uidl,
    known: &KnownMessages,
    suspects: &[(MsgNum, Vec<u8>)],
) -> Result<(u64, HashMap<MsgNum, u64>), FetchError> {
    // The known messages missing from this listing for the first time, and their
    // identities.
    let listed: HashSet<&[u8]> = listing.iter().map(|e| e.uid).collect();
    let missing: Vec<&[u8]> = known
        .iter()
        .filter(|(uid, k)| {
            may_be_renumbered(k.state) && k.unlisted_since.is_none() && !listed.contains(uid)
        })
        .map(|(uid, _)| uid)
        .collect();
    let rows = sc.store.identities(sc.id, &missing)?;
    // Each missing message's possible identities: the one recorded at its delivery, or
    // those read from its stored copy (which is then checked already).
    let mut candidates: Vec<Vec<Identity>> = rows
        .iter()
        .map(|r| r.identity.into_iter().collect())
        .collect();
    let mut verified = vec![false; rows.len()];
    let unrecorded: Vec<usize> = (0..rows.len())
        .filter(|i| rows[*i].identity.is_none())
        .collect();
    // (A few at a time: the copies' header blocks are dropped once their identities are
    // made.)
    for chunk in unrecorded.chunks(COPIES_AT_ONCE) {
        let places: Vec<_> = chunk.iter().map(|i| &rows[*i].place).collect();
        let copies = sc.account.delivery.stored_copies(&places);
        for (i, copy) in chunk.iter().zip(copies) {
            if let Some(copy) = copy {
                candidates[*i] = copy.identities().collect();
                verified[*i] = true;
            }
        }
    }

    // The suspects' identities: their sizes and header blocks.
    let msgs: Vec<MsgNum> = suspects.iter().map(|(m, _)| *m).collect();
    let sizes = super::session::sizes_of(s, msgs.len(), listing.len(), || msgs.clone()).await?;
    let identity_of = |heads: &Heads<'_>, msg: &MsgNum| heads.done.get(msg).copied();
    // A few first, spread over the listing: unless one of them is a missing message under
    // a new unique-id, this was no renumbering (a server such as Gmail lists what it has
    // handed out no more), and the rest are not asked for.
    let mut heads = Heads::new(&sizes);
    let step = msgs.len().div_ceil(SAMPLE).max(1);
    let sample: Vec<MsgNum> = msgs.iter().step_by(step).copied().collect();
    s.retrieve_with(&sample, BodyCommand::Headers, &mut heads)
        .await?;
    let known_identities: HashSet<&Identity> = candidates.iter().flatten().collect();
    if !sample
        .iter()
        .any(|m| identity_of(&heads, m).is_some_and(|id| known_identities.contains(&id)))
    {
        debug!(
            "none of {} unknown message(s) sampled is one popsync has: no renumbering",
            sample.len()
        );
        return Ok((0, sizes));
    }
    info!(
        "{} known message(s) are no longer listed and {} unknown one(s) are, some of them \
         ones popsync has: the server renumbered its mailbox; recognising them by their \
         headers",
        missing.len(),
        suspects.len()
    );
    let rest: Vec<MsgNum> = msgs
        .iter()
        .filter(|m| !heads.done.contains_key(m))
        .copied()
        .collect();
    for chunk in rest.chunks(TOP_CHUNK) {
        if sc.ctx.cancelled() {
            return Err(FetchError::Stopped);
        }
        s.retrieve_with(chunk, BodyCommand::Headers, &mut heads)
            .await?;
    }

    let matched = pair(
        &candidates,
        suspects.iter().map(|(msg, _)| identity_of(&heads, msg)),
    );
    // A recorded identity counts for deletion only once the stored copy has it too.
    let to_check: Vec<usize> = matched
        .iter()
        .map(|(i, _, _)| *i)
        .filter(|i| !verified[*i])
        .collect();
    let size_of: HashMap<usize, u64> = matched
        .iter()
        .filter_map(|(i, j, _)| Some((*i, *sizes.get(&suspects[*j].0)?)))
        .collect();
    for chunk in to_check.chunks(COPIES_AT_ONCE) {
        let places: Vec<_> = chunk.iter().map(|i| &rows[*i].place).collect();
        let copies = sc.account.delivery.stored_copies(&places);
        for (i, copy) in chunk.iter().zip(copies) {
            verified[*i] = match (copy, size_of.get(i)) {
                (Some(copy), Some(size)) => {
                    Some(identity::of(&copy.head, *size)) == rows[*i].identity
                }
                _ => false,
            };
        }
    }
    let rekeys: Vec<Rekey<'_>> = matched
        .iter()
        .map(|(i, j, id)| Rekey {
            old: &rows[*i].uid,
            new: &suspects[*j].1,
            identity: id,
            verified: verified[*i],
        })
        .collect();
    if !rekeys.is_empty() {
        sc.store.rekey(sc.id, &rekeys, sc.ctx.clock.now())?;
    }
    let unchecked = rekeys.iter().filter(|r| !r.verified).count();
    let count = rekeys.len() as u64;
    sc.report.renumbered += count;
    info!(
        "the server renumbered {count} message(s) popsync already has: recorded under their \
         new unique-ids, none downloaded again{}; {} unknown message(s) left to download",
        if unchecked > 0 {
            format!(
                " ({unchecked} whose stored copy could not be read are kept on the server, \
                 never deleted)"
            )
        } else {
            String::new()
        },
        suspects.len() - rekeys.len()
    );
    Ok((count, sizes))
}

/// Pairs missing messages (each with its possible identities) with suspects (each with its
/// identity, if it could be had): `(missing, suspect, identity)`. An identity that `k`
/// missing messages and `k` suspects have pairs them in order: the same message delivered
/// `k` times, all stored. An identity with more suspects than missing messages pairs none
/// of them (one of them may be new), nor does one with more missing messages (one of them
/// may be gone). A missing message or suspect that would be paired twice is paired with
/// nothing.
fn pair(
    candidates: &[Vec<Identity>],
    suspects: impl Iterator<Item = Option<Identity>>,
) -> Vec<(usize, usize, Identity)> {
    let mut by_identity: HashMap<Identity, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, ids) in candidates.iter().enumerate() {
        for id in ids {
            by_identity.entry(*id).or_default().0.push(i);
        }
    }
    for (j, id) in suspects.enumerate() {
        if let Some(entry) = id.and_then(|id| by_identity.get_mut(&id)) {
            entry.1.push(j);
        }
    }
    let mut pairs: Vec<(usize, usize, Identity)> = Vec::new();
    let mut unpaired = 0usize;
    for (id, (missing, found)) in &by_identity {
        if missing.len() == found.len() {
            pairs.extend(missing.iter().zip(found).map(|(i, j)| (*i, *j, *id)));
        } else {
            unpaired += found.len();
        }
    }
    let mut uses: HashMap<(bool, usize), usize> = HashMap::new();
    for (i, j, _) in &pairs {
        *uses.entry((false, *i)).or_default() += 1;
        *uses.entry((true, *j)).or_default() += 1;
    }
    pairs.retain(|(i, j, _)| uses[&(false, *i)] == 1 && uses[&(true, *j)] == 1);
    if unpaired > 0 {
        info!(
            "{unpaired} message(s) have the same header block and size as others, more or \
             fewer than popsync has: downloaded again rather than taken for one another"
        );
    }
    pairs.sort_by_key(|(_, j, _)| *j);
    pairs
}

/// For `identify-by = "headers"`: a listing made from each message's header block and size
/// (`LIST`, then `TOP n 0` of each, pipelined), with unique-ids of popsync's own: `h:` and
/// the identity in hex, and `#k` after it for the k-th message of one identity (the same
/// message delivered k times is k messages). Also the sizes.
pub async fn listing_by_headers(
    s: &mut pop3::Authenticated,
    cancelled: &dyn Fn() -> bool,
) -> Result<(Uidl, HashMap<MsgNum, u64>), FetchError> {
    use std::fmt::Write as _;
    let list = s.list().await?;
    let msgs: Vec<MsgNum> = list.iter().map(|e| e.msg).collect();
    let sizes: HashMap<MsgNum, u64> = list.iter().map(|e| (e.msg, e.size)).collect();
    let mut heads = Heads::new(&sizes);
    for chunk in msgs.chunks(TOP_CHUNK) {
        if cancelled() {
            return Err(FetchError::Stopped);
        }
        s.retrieve_with(chunk, BodyCommand::Headers, &mut heads)
            .await?;
    }
    let mut seen: HashMap<Identity, usize> = HashMap::new();
    let mut uidl = Uidl::default();
    let mut unshown = 0usize;
    for e in &list {
        let Some(&id) = heads.done.get(&e.msg) else {
            unshown += 1;
            continue;
        };
        let k = seen.entry(id).or_default();
        *k += 1;
        let mut uid = String::with_capacity(2 + 2 * identity::LEN + 4);
        uid.push_str("h:");
        for b in id {
            let _ = write!(uid, "{b:02x}");
        }
        if *k > 1 {
            let _ = write!(uid, "#{k}");
        }
        uidl.push(pop3::UidlEntry {
            msg: e.msg,
            uid: uid.as_bytes(),
        })
        .map_err(|_| {
            FetchError::Pop3(pop3::ErrorKind::Protocol("the listing is too long".into()).into())
        })?;
    }
    if unshown > 0 {
        tracing::warn!(
            "the server would not show the headers of {unshown} message(s) (TOP): they are \
             left for the next poll"
        );
    }
    drop(heads);
    Ok((uidl, sizes))
}

/// The identities of messages from their header blocks, as `TOP n 0` gives them, and
/// their sizes (each header block is dropped once its identity is made: at 100,000
/// messages they would be hundreds of megabytes).
struct Heads<'a> {
    sizes: &'a HashMap<MsgNum, u64>,
    current: Option<(MsgNum, Head)>,
    done: HashMap<MsgNum, Identity>,
}

impl<'a> Heads<'a> {
    fn new(sizes: &'a HashMap<MsgNum, u64>) -> Self {
        Self {
            sizes,
            current: None,
            done: HashMap::new(),
        }
    }
}

impl RetrieveHandler for Heads<'_> {
    fn start(&mut self, msg: MsgNum) -> std::io::Result<()> {
        self.current = Some((msg, Head::default()));
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some((_, head)) = &mut self.current {
            head.feed(bytes);
        }
        Ok(())
    }

    fn finish(&mut self, msg: MsgNum, _octets: u64) -> std::io::Result<()> {
        if let Some((m, head)) = self.current.take()
            && m == msg
            && let Some(size) = self.sizes.get(&msg)
        {
            self.done.insert(msg, identity::of(head.block(), *size));
        }
        Ok(())
    }

    fn refused(&mut self, _msg: MsgNum, _status: Status) -> std::io::Result<()> {
        // Not recognised, so downloaded as new.
        Ok(())
    }
}
