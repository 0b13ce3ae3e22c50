//! One POP3 session of a fetch: connect, log in, list, plan, record what the listing says,
//! download in batches, delete what the plan says is due, QUIT.

use std::collections::{HashMap, HashSet};

use tracing::{debug, info, warn};

use super::batch::fetch_batch;
use super::{BATCH_BYTES, BATCH_MESSAGES, FetchError, SessionCtx};
use crate::failpoint;
use crate::plan::{self, Listed};
use crate::pop3::{self, ConnectOptions, Credentials, MsgNum, Status};
use crate::store::Listing;

/// What a session found.
pub(super) struct SessionOutcome {
    pub fetched: u64,
    /// The listing may have been one portion of a larger mailbox (see
    /// [`Plan::may_be_partial`](crate::plan::Plan::may_be_partial)).
    pub may_be_partial: bool,
}

/// One POP3 session.
pub(super) async fn session(
    sc: &mut SessionCtx<'_, '_>,
    connect: &ConnectOptions,
    credentials: &Credentials,
) -> Result<SessionOutcome, FetchError> {
    info!(
        "connecting to {}:{} ({})",
        connect.host,
        connect.port,
        match connect.security {
            pop3::Security::Tls => "implicit TLS",
            pop3::Security::StartTls => "STLS",
            pop3::Security::DangerousPlaintext => "no encryption",
        }
    );
    let greeted = sc.ctx.connector.connect(connect).await?;
    let mut s = greeted.login(credentials, sc.account.login.auth).await?;
    info!(
        "logged in as {} ({}{})",
        credentials.username,
        s.auth_method(),
        if s.pipelining() { ", pipelining" } else { "" }
    );
    // Unique-ids from the server, or made from each message's header block and size.
    let (uidl, mut sizes_known) = if sc.account.limits.identify_by_headers {
        super::renumber::listing_by_headers(&mut s, &|| sc.ctx.cancelled()).await?
    } else {
        (s.uidl().await?, HashMap::new())
    };
    sc.report.on_server = uidl.len() as u64;
    let known = sc.store.known(sc.id)?;
    let now = sc.ctx.clock.now();
    let first = plan::plan(&uidl, &known, &sc.policy, now);
    // A renumbered mailbox: what is recognised moves to its new unique-id, and the plan is
    // made again.
    // (Not in a later session of the same fetch: one that asks again for more mail, from
    // a server handing it out in portions, finds what it fetched unlisted and new ones.)
    let suspects = match sc.report.sessions {
        0 => super::renumber::suspects(&first, &known),
        _ => None,
    };
    let known_after;
    let plan = match suspects {
        None => first,
        Some(suspects) => {
            drop(first);
            let (recognised, sizes) =
                super::renumber::recognise(sc, &mut s, &uidl, &known, &suspects).await?;
            sizes_known.extend(sizes);
            if recognised > 0 {
                known_after = sc.store.known(sc.id)?;
                plan::plan(&uidl, &known_after, &sc.policy, now)
            } else {
                plan::plan(&uidl, &known, &sc.policy, now)
            }
        }
    };
    info!(
        "{} message(s) on the server, {} new{}, {} to delete",
        uidl.len(),
        plan.fetch.len() + plan.mark_seen.len(),
        if plan.mark_seen.is_empty() {
            ""
        } else {
            " (to be marked seen)"
        },
        plan.delete.len()
    );
    if plan.duplicates > 0 {
        warn!(
            "the server lists {} unique-id(s) more than once; messages sharing an id cannot be told apart, so nothing is deleted in this session",
            plan.duplicates
        );
    }
    if plan.still_listed_after_delete > 0 {
        debug!(
            "{} deleted message(s) are still listed by the server",
            plan.still_listed_after_delete
        );
    }
    record_listing(sc, &plan, now)?;

    // Sizes (for the size rules, batching and progress) only when there is something new:
    // in the common case of nothing new, a large mailbox's LIST would be wasted work, and
    // when a few are new among many, only theirs are asked for (see `list_each`).
    // (The candidates are not collected first: at 100,000 new messages each list of them
    // is megabytes.)
    let candidates = || plan.fetch.iter().chain(&plan.reconsider).copied();
    let wanted = candidates().count();
    let sizes: HashMap<MsgNum, u64> = if wanted == 0 {
        HashMap::new()
    } else if candidates().all(|l| sizes_known.contains_key(&l.msg)) {
        // Asked for already (to tell messages apart by their headers).
        sizes_known
    } else {
        sizes_of(&mut s, wanted, uidl.len(), || {
            candidates().map(|l| l.msg).collect()
        })
        .await?
    };
    let split = plan::split_by_size(candidates(), &sizes, &sc.policy);
    let reconsidered: HashSet<&[u8]> = plan.reconsider.iter().map(|l| l.uid).collect();
    let too_big: Vec<(&[u8], u64)> = split
        .skip
        .iter()
        .filter(|(l, _)| !reconsidered.contains(l.uid))
        .map(|(l, size)| (l.uid, *size))
        .collect();
    if !too_big.is_empty() {
        sc.store.record_oversize(sc.id, &too_big, now)?;
        sc.report.oversize_skipped += too_big.len() as u64;
        warn!(
            "{} message(s) over max-size stay on the server, not downloaded{}",
            too_big.len(),
            match too_big.iter().map(|(_, s)| *s).max() {
                Some(m) => format!(" (the largest {})", crate::notify::human_size(m)),
                None => String::new(),
            }
        );
    }
    // Deleted without download: recorded as delete-pending first, like any deletion.
    let oversize_delete = plan.oversize_deletions(&split);
    if !oversize_delete.is_empty() {
        let rows: Vec<(&[u8], u64)> = split.delete.iter().map(|(l, n)| (l.uid, *n)).collect();
        sc.store.record_delete_unfetched(sc.id, &rows, now)?;
        info!(
            "{} message(s) over max-size will be deleted without being downloaded (oversize = \"delete\")",
            oversize_delete.len()
        );
    }

    let (delivered_now, headers_only_now, refused) = download(sc, &mut s, &split, &sizes).await?;
    let fetched = delivered_now.len() as u64 + headers_only_now;
    if fetched > 0 {
        info!(
            "stored {fetched} message(s) in {}",
            sc.account.delivery.describe()
        );
    }

    if sc.ctx.cancelled() {
        // Nothing was deleted in this session: the deletions wait for the next run.
        return Err(FetchError::Stopped);
    }

    let to_delete = plan.deletions(&delivered_now, &oversize_delete, &sc.policy, now);
    let dele_ok = delete(sc, &mut s, &to_delete).await?;
    // A server that refuses a new login for a while would refuse asking again for more.
    let login_delay = s.capabilities().login_delay.unwrap_or(0);
    s.quit().await?;
    failpoint::hit("quit-answered");
    if !dele_ok.is_empty() {
        sc.store.confirm_deleted(sc.id, &dele_ok)?;
        sc.report.deleted += dele_ok.len() as u64;
        info!("deleted {} message(s) from the server", dele_ok.len());
    }
    if let Some(first) = refused.first() {
        return Err(FetchError::Refused {
            count: refused.len() as u64,
            first: first.clone(),
        });
    }
    Ok(SessionOutcome {
        fetched,
        may_be_partial: plan.may_be_partial() && login_delay == 0,
    })
}

/// The sizes of `wanted` messages of a listing of `listed`: each by `LIST n` when they are
/// few among many (see [`list_each`]; `msgs` gives them then), else all by one `LIST`.
pub(super) async fn sizes_of(
    s: &mut pop3::Authenticated,
    wanted: usize,
    listed: usize,
    msgs: impl FnOnce() -> Vec<MsgNum>,
) -> Result<HashMap<MsgNum, u64>, FetchError> {
    let entries = if list_each(wanted, listed, s.pipelining()) {
        s.list_some(&msgs()).await?
    } else {
        s.list().await?
    };
    Ok(entries.iter().map(|e| (e.msg, e.size)).collect())
}

/// Whether to ask for the sizes of the `wanted` messages one `LIST n` at a time rather than
/// listing all `listed`: when they are few among many (a poll of a large mailbox kept on
/// the server finds a handful new), where the whole listing would cost the server and the
/// line a line per message for nothing. With pipelining up to 256 commands go out together
/// (about one round trip), so this pays once the listing is four times longer; without
/// it, each costs a round trip of its own, worth it only instead of a listing of thousands.
fn list_each(wanted: usize, listed: usize, pipelining: bool) -> bool {
    let (most, ratio) = if pipelining {
        (pop3::session::LIST_WINDOW, 4)
    } else {
        (4, 1000)
    };
    wanted <= most && wanted.saturating_mul(ratio) <= listed
}

/// Records what the listing says: messages back, gone, to forget; deletions an interrupted
/// session made that took effect, or that the policy no longer wants; new messages to
/// record as seen.
fn record_listing(
    sc: &mut SessionCtx<'_, '_>,
    plan: &plan::Plan<'_>,
    now: i64,
) -> Result<(), FetchError> {
    let listing = Listing {
        relisted: &plan.relisted,
        unlisted: &plan.unlisted,
        forget: &plan.forget,
    };
    sc.store.record_listing(sc.id, &listing, now)?;
    if !plan.forget.is_empty() {
        info!(
            "forgot {} message(s) gone from the server for longer than forget-after",
            plan.forget.len()
        );
    }
    if !plan.confirmed_deleted.is_empty() {
        debug!(
            "{} deletion(s) from an interrupted session took effect",
            plan.confirmed_deleted.len()
        );
        sc.store.confirm_deleted(sc.id, &plan.confirmed_deleted)?;
    }
    sc.store.undo_deletion(sc.id, &plan.undelete)?;
    if !plan.mark_seen.is_empty() {
        sc.store.record_seen(sc.id, &plan.mark_seen, now)?;
        sc.report.marked_seen += plan.mark_seen.len() as u64;
    }
    Ok(())
}

/// Downloads what the size rules let through, whole messages first, in batches. Returns the
/// whole messages delivered, how many were delivered as their headers, and the server's
/// refusals.
async fn download<'p>(
    sc: &mut SessionCtx<'_, '_>,
    s: &mut pop3::Authenticated,
    split: &plan::SizeSplit<'p>,
    sizes: &HashMap<MsgNum, u64>,
) -> Result<(Vec<Listed<'p>>, u64, Vec<Status>), FetchError> {
    // LIST sizes are the server's word (a hostile one may claim u64::MAX for every
    // message): they are added up saturating, never trusted to fit.
    let total: u64 = split
        .fetch
        .iter()
        .map(|l| sizes.get(&l.msg).copied().unwrap_or(0))
        .fold(0, u64::saturating_add);
    let count = split.fetch.len() + split.headers_only.len();
    if count > 0 {
        sc.ctx.progress.downloading(&sc.account.name, count, total);
    }
    let mut delivered_now: Vec<Listed<'p>> = Vec::new();
    let mut headers_only_now = 0u64;
    let mut refused: Vec<Status> = Vec::new();
    for (list, headers_only) in [(&split.fetch, false), (&split.headers_only, true)] {
        let mut remaining = &list[..];
        while !remaining.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < remaining.len() && n < BATCH_MESSAGES && (n == 0 || bytes < BATCH_BYTES) {
                if !headers_only {
                    bytes =
                        bytes.saturating_add(sizes.get(&remaining[n].msg).copied().unwrap_or(0));
                }
                n += 1;
            }
            let (batch, rest) = remaining.split_at(n);
            remaining = rest;
            let outcome = fetch_batch(sc, s, batch, headers_only, sizes).await;
            if headers_only {
                headers_only_now += outcome.delivered.len() as u64;
                sc.report.headers_only += outcome.delivered.len() as u64;
            } else {
                delivered_now.extend(outcome.delivered);
            }
            refused.extend(outcome.refused);
            outcome.result?;
        }
    }
    Ok((delivered_now, headers_only_now, refused))
}

/// Marks `to_delete` delete-pending, sends DELE for each, and returns the unique-ids the
/// server said yes to (they are deleted once QUIT is answered).
async fn delete<'p>(
    sc: &mut SessionCtx<'_, '_>,
    s: &mut pop3::Authenticated,
    to_delete: &[Listed<'p>],
) -> Result<Vec<&'p [u8]>, FetchError> {
    let mut dele_ok = Vec::new();
    if to_delete.is_empty() {
        return Ok(dele_ok);
    }
    let uids: Vec<&[u8]> = to_delete.iter().map(|l| l.uid).collect();
    sc.store.mark_delete_pending(sc.id, &uids)?;
    let msgs: Vec<MsgNum> = to_delete.iter().map(|l| l.msg).collect();
    failpoint::hit("delete-pending-committed");
    let answers = s.delete(&msgs).await?;
    failpoint::hit("dele-answered");
    for (listed, (_, status)) in to_delete.iter().zip(answers) {
        if status.is_ok() {
            dele_ok.push(listed.uid);
        } else {
            warn!(
                "the server refused to delete message {}: {status}",
                listed.msg
            );
        }
    }
    Ok(dele_ok)
}
