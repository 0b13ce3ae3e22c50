//! Finishing what an interrupted run left pending, from what is on disk.
//!
//! - Maildir: a message in `new/`, in `cur/`, or moved on (its `tmp/` link still counts two
//!   names) was delivered; otherwise it is downloaded again (see `delivery::maildir`).
//! - mbox: a message found complete at its recorded offset (or, after the file was
//!   rewritten, wherever its `From ` line and hash are) was delivered; a torn append at the
//!   end of the file is cut off; otherwise it is downloaded again (see `delivery::mbox`).
//! - MDA: popsync cannot know whether the MDA took it: it is handed over again (at least
//!   once).

use std::collections::BTreeMap;
use std::path::PathBuf;

use tracing::{info, warn};

use super::{FetchError, Report};
use crate::config::{Account, Delivery, KernelLock, MboxLocking};
use crate::delivery::maildir::{Maildir, PendingLocation};
use crate::delivery::mbox::{self, Found};
use crate::failpoint;
use crate::store::{AccountId, PendingRow, PendingTarget, Store};

pub fn recover(
    store: &mut Store,
    id: AccountId,
    account: &Account,
    now: i64,
    report: &mut Report,
) -> Result<(), FetchError> {
    let pending = store.pending(id)?;
    if pending.is_empty() {
        return Ok(());
    }
    let mut maildirs: BTreeMap<PathBuf, Vec<&PendingRow>> = BTreeMap::new();
    let mut mboxes: BTreeMap<PathBuf, Vec<&PendingRow>> = BTreeMap::new();
    let mut mda: Vec<&[u8]> = Vec::new();
    for row in &pending {
        match &row.target {
            PendingTarget::Maildir { dir, .. } => {
                maildirs.entry(dir.clone()).or_default().push(row)
            }
            PendingTarget::Mbox { path, .. } => mboxes.entry(path.clone()).or_default().push(row),
            PendingTarget::Mda => mda.push(&row.uid),
        }
    }
    for (dir, rows) in maildirs {
        recover_maildir(store, id, &dir, &rows, now, report)?;
    }
    for (path, rows) in mboxes {
        // The account's own locking if it still delivers there, else the usual kind.
        let locking = match &account.delivery {
            Delivery::Mbox { path: p, locking } if *p == path => *locking,
            _ => MboxLocking {
                dotlock: true,
                kernel: KernelLock::Fcntl,
                timeout: std::time::Duration::from_secs(120),
            },
        };
        recover_mbox(store, id, &path, &locking, &rows, now, report)?;
    }
    if !mda.is_empty() {
        store.drop_pending(id, &mda)?;
        warn!(
            "{}: {} message(s) were being handed to the MDA when popsync stopped; they will be handed over again (an MDA gets each message at least once)",
            account.name,
            mda.len()
        );
    }
    Ok(())
}

fn recover_maildir(
    store: &mut Store,
    id: AccountId,
    dir: &std::path::Path,
    rows: &[&PendingRow],
    now: i64,
    report: &mut Report,
) -> Result<(), FetchError> {
    let maildir = Maildir::at(dir);
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| match &r.target {
            PendingTarget::Maildir { file_name, .. } => Some(file_name.as_str()),
            _ => None,
        })
        .collect();
    let found = maildir
        .locate(&names)
        .map_err(|source| FetchError::Mailbox {
            path: dir.to_owned(),
            source,
        })?;
    let mut delivered = Vec::new();
    let mut delivered_names = Vec::new();
    let mut absent = Vec::new();
    for ((row, name), f) in rows.iter().zip(&names).zip(found) {
        match f {
            PendingLocation::Delivered(size) => {
                delivered.push((row.uid.as_slice(), size));
                delivered_names.push(*name);
            }
            PendingLocation::Absent => {
                maildir.discard(name);
                absent.push(row.uid.as_slice());
            }
        }
    }
    failpoint::hit("recovery-located");
    mark(store, id, rows, &delivered, now)?;
    store.drop_pending(id, &absent)?;
    maildir.release(&delivered_names);
    report.recovered += delivered.len() as u64;
    info!(
        "an interrupted run left deliveries into {} unfinished: {} message(s) were complete, {} will be downloaded again",
        dir.display(),
        delivered.len(),
        absent.len()
    );
    Ok(())
}

fn recover_mbox(
    store: &mut Store,
    id: AccountId,
    path: &std::path::Path,
    locking: &MboxLocking,
    rows: &[&PendingRow],
    now: i64,
    report: &mut Report,
) -> Result<(), FetchError> {
    let io = |source| FetchError::Mailbox {
        path: path.to_owned(),
        source,
    };
    if !path.exists() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "the mbox {} is gone, but an interrupted run was appending to it; put it back so popsync can see which messages arrived",
                path.display()
            ),
        )));
    }
    let mut guard = mbox::lock(path, locking).map_err(io)?;
    let mut delivered = Vec::new();
    let mut absent = Vec::new();
    let mut torn_at = None;
    for row in rows {
        let PendingTarget::Mbox {
            offset,
            len,
            sha256,
            from_line,
            ..
        } = &row.target
        else {
            continue;
        };
        match guard.locate(*offset, *len, sha256, from_line).map_err(io)? {
            Found::At(_) => delivered.push((row.uid.as_slice(), *len)),
            Found::Absent => {
                if torn_at.is_none() && guard.torn_tail(*offset, *len, from_line).map_err(io)? {
                    torn_at = Some(*offset);
                }
                absent.push(row.uid.as_slice());
            }
        }
    }
    failpoint::hit("recovery-located");
    if let Some(at) = torn_at {
        warn!(
            "cutting a message left half-written by an interrupted run off the end of {} (at byte {at})",
            path.display()
        );
        guard.truncate(at).map_err(io)?;
    }
    mark(store, id, rows, &delivered, now)?;
    store.drop_pending(id, &absent)?;
    drop(guard);
    report.recovered += delivered.len() as u64;
    info!(
        "an interrupted run left appends to {} unfinished: {} message(s) were complete, {} will be downloaded again",
        path.display(),
        delivered.len(),
        absent.len()
    );
    Ok(())
}

/// Marks recovered messages delivered, or headers-only where that is what was delivered.
fn mark(
    store: &mut Store,
    id: AccountId,
    rows: &[&PendingRow],
    delivered: &[(&[u8], u64)],
    now: i64,
) -> Result<(), FetchError> {
    let headers_only: std::collections::HashSet<&[u8]> = rows
        .iter()
        .filter(|r| r.headers_only)
        .map(|r| r.uid.as_slice())
        .collect();
    type Rows<'a> = Vec<(&'a [u8], u64)>;
    let (h, whole): (Rows<'_>, Rows<'_>) = delivered
        .iter()
        .partition(|(uid, _)| headers_only.contains(uid));
    store.mark_delivered(id, &whole, now, false)?;
    store.mark_delivered(id, &h, now, true)?;
    Ok(())
}
