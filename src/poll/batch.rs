//! Downloading one batch of messages into the account's mailbox, with the delivery protocol
//! of its kind:
//!
//! - **Maildir**: file names recorded as pending (durable) before any file exists; messages
//!   streamed into `tmp/`; the batch fsynced, linked into `new/`, `new/` fsynced; marked
//!   delivered; `tmp/` links released (see `delivery::maildir`).
//! - **mbox**: messages spooled; the mbox locked; each message's offset, length, hash and
//!   `From ` line recorded as pending (durable); appended and fsynced; marked delivered;
//!   unlocked (see `delivery::mbox`).
//! - **MDA**: messages spooled; each one recorded as pending, handed to the MDA, marked
//!   delivered when it exits 0; any other outcome stops the batch (and the session, before
//!   any DELE). At least once (see `delivery::mda`).
//!
//! In every case what arrived completely before a failure is still delivered and recorded,
//! so no finished work is thrown away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;

use super::{FetchError, MdaFailure, Progress, SUMMARIES_KEPT, SessionCtx};
use crate::config::MboxLocking;
use crate::delivery::maildir::{Finished, Maildir, MessageWriter};
use crate::delivery::mbox;
use crate::delivery::mda::{self, MdaOutcome};
use crate::delivery::spool::{SpoolFormat, SpoolWriter, Spooled};
use crate::failpoint;
use crate::plan::Listed;
use crate::pop3::{self, BodyCommand, MsgNum, RetrieveHandler, Status};
use crate::store::MboxPending;
use crate::summary::{HeaderCapture, MessageSummary};

/// Where a session delivers.
#[derive(Debug)]
pub enum Target {
    Maildir(Maildir),
    Mbox {
        path: PathBuf,
        locking: MboxLocking,
        spool: PathBuf,
    },
    Mda {
        argv: Vec<String>,
        from_line: bool,
        timeout: std::time::Duration,
        spool: PathBuf,
    },
}

impl Target {
    fn spool_format(&self) -> Option<(SpoolFormat, &PathBuf)> {
        match self {
            Self::Maildir(_) => None,
            Self::Mbox { spool, .. } => Some((SpoolFormat::Mboxrd, spool)),
            Self::Mda {
                from_line, spool, ..
            } => Some((
                SpoolFormat::Plain {
                    from_line: *from_line,
                },
                spool,
            )),
        }
    }
}

/// What a batch achieved.
pub struct BatchOutcome<'a> {
    pub delivered: Vec<Listed<'a>>,
    pub refused: Vec<Status>,
    pub result: Result<(), FetchError>,
}

/// Downloads `batch` (with RETR, or with TOP for headers only) and delivers it.
pub async fn fetch_batch<'p>(
    sc: &mut SessionCtx<'_, '_>,
    s: &mut pop3::Authenticated,
    batch: &[Listed<'p>],
    headers_only: bool,
    sizes: &HashMap<MsgNum, u64>,
) -> BatchOutcome<'p> {
    let mut out = BatchOutcome {
        delivered: Vec::new(),
        refused: Vec::new(),
        result: Ok(()),
    };
    if sc.ctx.cancelled() {
        out.result = Err(FetchError::Stopped);
        return out;
    }
    // Maildir: the names are recorded before any file exists.
    let names: Vec<String> = match &mut sc.target {
        Target::Maildir(md) => batch.iter().map(|_| md.unique_name()).collect(),
        _ => batch
            .iter()
            .enumerate()
            .map(|(i, _)| format!("{}-{}-{i}", std::process::id(), sc.ctx.clock.now()))
            .collect(),
    };
    sc.batch_uids = names
        .iter()
        .zip(batch)
        .map(|(n, l)| (n.clone(), l.uid.to_vec()))
        .collect();
    if let Target::Maildir(md) = &sc.target {
        let rows: Vec<(&[u8], &str)> = batch
            .iter()
            .zip(&names)
            .map(|(l, n)| (l.uid, n.as_str()))
            .collect();
        let now = sc.ctx.clock.now();
        if let Err(e) = sc
            .store
            .insert_pending(sc.id, md.root(), &rows, now, headers_only)
        {
            out.result = Err(e.into());
            return out;
        }
        failpoint::hit("pending-committed");
    }
    let mut handler = BatchHandler {
        target: &sc.target,
        account: &sc.account.name,
        progress: sc.ctx.progress,
        names: batch
            .iter()
            .zip(&names)
            .map(|(l, n)| (l.msg, n.as_str()))
            .collect(),
        notes: if headers_only {
            batch
                .iter()
                .map(|l| (l.msg, sizes.get(&l.msg).copied().unwrap_or(0)))
                .collect()
        } else {
            HashMap::new()
        },
        current: None,
        finished: Vec::new(),
        refused: Vec::new(),
        cancel: sc.ctx.cancel,
        capture: HeaderCapture::default(),
        heads: HashMap::new(),
    };
    let msgs: Vec<MsgNum> = batch.iter().map(|l| l.msg).collect();
    let command = if headers_only {
        BodyCommand::Headers
    } else {
        BodyCommand::Whole
    };
    let retrieved = s.retrieve_with(&msgs, command, &mut handler).await;
    if let Some(partial) = handler.current.take() {
        partial.discard(&sc.target);
    }
    let BatchHandler {
        finished,
        refused,
        heads,
        ..
    } = handler;
    out.refused = refused.into_iter().map(|(_, st)| st).collect();
    failpoint::hit("batch-written");

    // Deliver what arrived completely, by the target's protocol.
    let delivered = match &mut sc.target {
        Target::Maildir(_) => deliver_maildir(sc, finished, headers_only),
        Target::Mbox { .. } => deliver_mbox(sc, finished, headers_only),
        Target::Mda { .. } => deliver_mda(sc, finished, headers_only),
    };
    let (delivered_names, result) = delivered;
    let by_name: HashMap<&str, &Listed<'p>> = names.iter().map(String::as_str).zip(batch).collect();
    for name in &delivered_names {
        if let Some(l) = by_name.get(name.as_str()) {
            out.delivered.push(**l);
        }
    }
    // Only the newest few are shown, so only they are parsed.
    let from = delivered_names.len().saturating_sub(SUMMARIES_KEPT);
    for name in &delivered_names[from..] {
        if let Some(head) = heads.get(name) {
            sc.report.newest.push(MessageSummary::from_headers(head));
        }
    }
    let excess = sc.report.newest.len().saturating_sub(SUMMARIES_KEPT);
    sc.report.newest.drain(..excess);
    if let Err(e) = result {
        out.result = Err(e);
        return out;
    }
    // What did not arrive whole (cut off, refused) is forgotten, to be downloaded again.
    let delivered_set: std::collections::HashSet<&str> =
        delivered_names.iter().map(String::as_str).collect();
    let missing: Vec<(&str, &[u8])> = sc
        .batch_uids
        .iter()
        .filter(|(n, _)| !delivered_set.contains(n.as_str()))
        .map(|(n, u)| (n.as_str(), u.as_slice()))
        .collect();
    if !missing.is_empty() {
        if let Target::Maildir(md) = &sc.target {
            for (name, _) in &missing {
                md.discard(name);
            }
        }
        let uids: Vec<&[u8]> = missing.iter().map(|(_, u)| *u).collect();
        if let Err(e) = sc.store.drop_pending(sc.id, &uids) {
            out.result = Err(e.into());
            return out;
        }
    }
    out.result = match retrieved {
        Err(_) if sc.ctx.cancelled() => Err(FetchError::Stopped),
        other => other.map_err(FetchError::from),
    };
    out
}

/// A finished message, by target.
enum Done {
    Maildir(Finished),
    Spool(String, Spooled),
}

impl Done {
    fn name(&self) -> &str {
        match self {
            Self::Maildir(f) => &f.name,
            Self::Spool(n, _) => n,
        }
    }
}

/// The spooled messages of a batch (mbox and MDA targets spool every message).
fn spooled(finished: Vec<Done>) -> Vec<(String, Spooled)> {
    finished
        .into_iter()
        .filter_map(|d| match d {
            Done::Spool(n, s) => Some((n, s)),
            Done::Maildir(_) => None,
        })
        .collect()
}

/// Maildir: publish (fsync, link, fsync new/), record, release. Returns the names
/// delivered.
fn deliver_maildir(
    sc: &mut SessionCtx<'_, '_>,
    finished: Vec<Done>,
    headers_only: bool,
) -> (Vec<String>, Result<(), FetchError>) {
    let Target::Maildir(md) = &sc.target else {
        unreachable!("maildir target")
    };
    let files: Vec<Finished> = finished
        .into_iter()
        .filter_map(|d| match d {
            Done::Maildir(f) => Some(f),
            Done::Spool(_, s) => {
                s.remove();
                None
            }
        })
        .collect();
    let published = md.publish(&files).map_err(|source| FetchError::Mailbox {
        path: md.root().to_owned(),
        source,
    });
    failpoint::hit("published");
    if let Err(e) = published {
        // Files may or may not have reached new/: the rows stay pending, so the next run
        // decides from the disk.
        return (Vec::new(), Err(e));
    }
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let sizes: Vec<u64> = files.iter().map(|f| f.size).collect();
    match record_delivered(sc, &names, &sizes, headers_only) {
        Ok(()) => {
            let Target::Maildir(md) = &sc.target else {
                unreachable!("maildir target")
            };
            md.release(&names.iter().map(String::as_str).collect::<Vec<_>>());
            (names, Ok(()))
        }
        // The messages are safely in the Maildir; the rows stay pending and the next run
        // confirms them from the disk.
        Err(e) => (Vec::new(), Err(e)),
    }
}

/// mbox: lock, record places, append, fsync, record delivered, unlock.
fn deliver_mbox(
    sc: &mut SessionCtx<'_, '_>,
    finished: Vec<Done>,
    headers_only: bool,
) -> (Vec<String>, Result<(), FetchError>) {
    let Target::Mbox { path, locking, .. } = &sc.target else {
        unreachable!("mbox target")
    };
    let (path, locking) = (path.clone(), *locking);
    let spools = spooled(finished);
    if spools.is_empty() {
        return (Vec::new(), Ok(()));
    }
    let remove_all = |spools: &[(String, Spooled)]| spools.iter().for_each(|(_, s)| s.remove());
    let mut guard = match mbox::lock(&path, &locking) {
        Ok(g) => g,
        Err(e) => {
            remove_all(&spools);
            return (Vec::new(), Err(mbox_error(&path, e)));
        }
    };
    let result = (|| -> Result<Vec<String>, FetchError> {
        let mut offset = guard.len().map_err(|e| mbox_error(&path, e))?;
        let mut rows = Vec::new();
        for (name, s) in &spools {
            let Some(uid) = sc.batch_uids.get(name) else {
                continue;
            };
            rows.push(MboxPending {
                uid,
                offset,
                len: s.len,
                sha256: s.sha256,
                from_line: &s.from_line,
            });
            offset += s.len;
        }
        let now = sc.ctx.clock.now();
        sc.store
            .insert_pending_mbox(sc.id, &path, &rows, now, headers_only)?;
        failpoint::hit("pending-committed");
        let list: Vec<&Spooled> = spools.iter().map(|(_, s)| s).collect();
        if let Err(e) = guard.append(&list) {
            // Cut back: nothing of the batch is in the file. Forget the pending rows.
            let uids: Vec<&[u8]> = rows.iter().map(|r| r.uid).collect();
            let _ = sc.store.drop_pending(sc.id, &uids);
            return Err(mbox_error(&path, e));
        }
        failpoint::hit("published");
        let names: Vec<String> = spools.iter().map(|(n, _)| n.clone()).collect();
        let sizes: Vec<u64> = spools.iter().map(|(_, s)| s.len).collect();
        record_delivered(sc, &names, &sizes, headers_only)?;
        Ok(names)
    })();
    drop(guard);
    remove_all(&spools);
    match result {
        Ok(names) => (names, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    }
}

fn mbox_error(path: &std::path::Path, e: std::io::Error) -> FetchError {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        FetchError::MboxBusy(e.to_string())
    } else {
        FetchError::Mailbox {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// MDA: one message at a time: pending, hand over, delivered.
fn deliver_mda(
    sc: &mut SessionCtx<'_, '_>,
    finished: Vec<Done>,
    headers_only: bool,
) -> (Vec<String>, Result<(), FetchError>) {
    let Target::Mda { argv, timeout, .. } = &sc.target else {
        unreachable!("mda target")
    };
    let (argv, timeout) = (argv.clone(), *timeout);
    let mut delivered = Vec::new();
    let mut result = Ok(());
    for (name, s) in spooled(finished) {
        if result.is_err() {
            s.remove();
            continue;
        }
        let Some(uid) = sc.batch_uids.get(&name).cloned() else {
            s.remove();
            continue;
        };
        let now = sc.ctx.clock.now();
        if let Err(e) = sc.store.insert_pending_mda(sc.id, &uid, now, headers_only) {
            result = Err(e.into());
            s.remove();
            continue;
        }
        let outcome = mda::deliver(&argv, &s, &sc.account.name, timeout);
        s.remove();
        match outcome {
            MdaOutcome::Delivered => {
                failpoint::hit("published");
                match record_delivered(sc, std::slice::from_ref(&name), &[s.len], headers_only) {
                    Ok(()) => delivered.push(name),
                    Err(e) => result = Err(e),
                }
            }
            other => {
                let _ = sc.store.drop_pending(sc.id, &[uid.as_slice()]);
                result = Err(FetchError::Mda(MdaFailure::from_outcome(
                    &argv[0], other, timeout,
                )));
            }
        }
    }
    (delivered, result)
}

/// Marks the batch's named messages delivered (or headers-only) in one commit.
fn record_delivered(
    sc: &mut SessionCtx<'_, '_>,
    names: &[String],
    sizes: &[u64],
    headers_only: bool,
) -> Result<(), FetchError> {
    let rows: Vec<(&[u8], u64)> = names
        .iter()
        .zip(sizes)
        .filter_map(|(n, size)| sc.batch_uids.get(n).map(|u| (u.as_slice(), *size)))
        .collect();
    let now = sc.ctx.clock.now();
    sc.store.mark_delivered(sc.id, &rows, now, headers_only)?;
    failpoint::hit("delivered-committed");
    sc.report.new_messages += rows.len() as u64;
    sc.report.new_bytes += rows.iter().map(|(_, n)| n).sum::<u64>();
    Ok(())
}

enum Writer {
    Maildir(MessageWriter),
    Spool(String, SpoolWriter),
}

impl Writer {
    fn discard(self, target: &Target) {
        match (self, target) {
            (Self::Maildir(w), Target::Maildir(md)) => md.discard(w.name()),
            (Self::Spool(_, w), _) => w.discard(),
            _ => {}
        }
    }
}

struct BatchHandler<'a> {
    target: &'a Target,
    account: &'a str,
    progress: &'a dyn Progress,
    names: HashMap<MsgNum, &'a str>,
    /// For headers-only batches: the full size of each message, for the note.
    notes: HashMap<MsgNum, u64>,
    current: Option<Writer>,
    finished: Vec<Done>,
    refused: Vec<(MsgNum, Status)>,
    cancel: Option<&'a AtomicBool>,
    capture: HeaderCapture,
    /// The header block of each finished message, by name.
    heads: HashMap<String, Vec<u8>>,
}

impl BatchHandler<'_> {
    fn check_cancel(&self) -> std::io::Result<()> {
        if self.cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "shutting down",
            ));
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.current {
            Some(Writer::Maildir(w)) => w.write(bytes),
            Some(Writer::Spool(_, w)) => w.write(bytes),
            None => Err(std::io::Error::other("data outside a message")),
        }
    }
}

/// The body that stands in for one not downloaded (`headers-only-over`).
fn headers_only_note(size: u64) -> String {
    format!(
        "[popsync: the body of this message ({}) was not downloaded because it is larger than\r\nheaders-only-over; the whole message stays on the server.]\r\n",
        crate::notify::human_size(size)
    )
}

impl RetrieveHandler for BatchHandler<'_> {
    fn start(&mut self, msg: MsgNum) -> std::io::Result<()> {
        self.check_cancel()?;
        self.capture = HeaderCapture::default();
        let name = self
            .names
            .get(&msg)
            .ok_or_else(|| std::io::Error::other("message not in batch"))?;
        self.current = Some(match (self.target, self.target.spool_format()) {
            (Target::Maildir(md), _) => Writer::Maildir(md.create(name)?),
            (_, Some((format, dir))) => Writer::Spool(
                (*name).to_owned(),
                SpoolWriter::create(&dir.join(name), format)?,
            ),
            (_, None) => unreachable!("spooling targets have a format"),
        });
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.check_cancel()?;
        self.capture.feed(bytes);
        self.progress.bytes(self.account, bytes.len() as u64);
        self.write(bytes)
    }

    fn finish(&mut self, msg: MsgNum, _octets: u64) -> std::io::Result<()> {
        if let Some(size) = self.notes.get(&msg).copied() {
            let note = headers_only_note(size);
            self.write(note.as_bytes())?;
        }
        let writer = self
            .current
            .take()
            .ok_or_else(|| std::io::Error::other("no message to finish"))?;
        let done = match writer {
            Writer::Maildir(w) => {
                let name = w.name().to_owned();
                match w.finish() {
                    Ok(f) => Done::Maildir(f),
                    Err(e) => {
                        if let Target::Maildir(md) = self.target {
                            md.discard(&name);
                        }
                        return Err(e);
                    }
                }
            }
            Writer::Spool(name, w) => Done::Spool(name, w.finish()?),
        };
        self.heads.insert(
            done.name().to_owned(),
            std::mem::take(&mut self.capture).into_head(),
        );
        self.finished.push(done);
        self.progress.message(self.account);
        Ok(())
    }

    fn refused(&mut self, msg: MsgNum, status: Status) -> std::io::Result<()> {
        warn!(
            "{}: the server refused to hand out message {msg}: {status}",
            self.account
        );
        self.refused.push((msg, status));
        Ok(())
    }
}
