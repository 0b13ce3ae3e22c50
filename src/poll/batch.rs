//! Downloading one batch of messages into the account's delivery target.
//!
//! The batch is streamed into the target (RETR, or TOP for headers only), each message's
//! header block captured on the way; then the target delivers what arrived whole, by its
//! own protocol (see `delivery`), recording each step. What arrived completely before a
//! failure is still delivered and recorded, so no finished work is thrown away; what did not
//! arrive whole (cut off, refused) leaves nothing behind and is downloaded again next time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;

use super::{FetchError, Progress, SUMMARIES_KEPT, SessionCtx};
use crate::delivery::{Journal, Target};
use crate::failpoint;
use crate::plan::Listed;
use crate::pop3::{self, BodyCommand, MsgNum, RetrieveHandler, Status};
use crate::summary::Head;

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
    let uids: Vec<&[u8]> = batch.iter().map(|l| l.uid).collect();
    let mut journal = Journal::new(sc.store, sc.id, &uids, sc.ctx.clock, headers_only);
    if let Err(e) = sc.target.begin_batch(&mut journal) {
        out.result = Err(e.into());
        return out;
    }
    let mut handler = BatchHandler {
        target: &mut *sc.target,
        account: &sc.account.name,
        progress: sc.ctx.progress,
        index: batch.iter().enumerate().map(|(i, l)| (l.msg, i)).collect(),
        notes: if headers_only {
            batch
                .iter()
                .map(|l| (l.msg, sizes.get(&l.msg).copied().unwrap_or(0)))
                .collect()
        } else {
            HashMap::new()
        },
        current: None,
        heads: batch.iter().map(|_| None).collect(),
        refused: Vec::new(),
        cancel: sc.ctx.cancel,
    };
    let msgs: Vec<MsgNum> = batch.iter().map(|l| l.msg).collect();
    let command = if headers_only {
        BodyCommand::Headers
    } else {
        BodyCommand::Whole
    };
    let retrieved = s.retrieve_with(&msgs, command, &mut handler).await;
    if handler.current.take().is_some() {
        handler.target.abandon();
    }
    let BatchHandler { heads, refused, .. } = handler;
    out.refused = refused;
    failpoint::hit("batch-written");

    // What arrived is recorded with its identity by content (for a renumbered mailbox).
    for (i, head) in heads.iter().enumerate() {
        if let (Some(head), Some(size)) = (head, sizes.get(&batch[i].msg)) {
            journal.identify(i, crate::identity::of(head.block(), *size));
        }
    }
    // Deliver what arrived completely, by the target's protocol.
    let result = sc.target.deliver(&mut journal);
    let delivered = journal.delivered().to_vec();
    out.delivered = delivered.iter().map(|(i, _)| batch[*i]).collect();
    sc.report.new_messages += delivered.len() as u64;
    sc.report.new_bytes += delivered.iter().map(|(_, n)| n).sum::<u64>();
    // Only the newest few are shown, so only they are parsed (if delivery did not already).
    let from = delivered.len().saturating_sub(SUMMARIES_KEPT);
    for (i, _) in &delivered[from..] {
        if let Some(head) = &heads[*i] {
            sc.report.newest.push(head.summary());
        }
    }
    let excess = sc.report.newest.len().saturating_sub(SUMMARIES_KEPT);
    sc.report.newest.drain(..excess);
    if let Err(e) = result {
        // What is left pending is for the next run's recovery to decide from the mailbox.
        out.result = Err(e.into());
        return out;
    }
    // What did not arrive whole (cut off, refused) is forgotten, to be downloaded again.
    let mut was_delivered = vec![false; batch.len()];
    for (i, _) in &delivered {
        was_delivered[*i] = true;
    }
    let missing: Vec<usize> = (0..batch.len()).filter(|i| !was_delivered[*i]).collect();
    if !missing.is_empty() {
        for i in &missing {
            sc.target.discard(*i);
        }
        if let Err(e) = journal.drop_pending(&missing) {
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

/// Streams retrieved messages into the target, capturing each one's header block.
struct BatchHandler<'a> {
    target: &'a mut dyn Target,
    account: &'a str,
    progress: &'a dyn Progress,
    /// Each message's index in the batch.
    index: HashMap<MsgNum, usize>,
    /// For headers-only batches: the full size of each message, for the note.
    notes: HashMap<MsgNum, u64>,
    /// The message being received: its index and header block.
    current: Option<(usize, Head)>,
    /// The header block of each message that arrived whole, by index.
    heads: Vec<Option<Head>>,
    refused: Vec<Status>,
    cancel: Option<&'a AtomicBool>,
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

    /// Passes bytes on to the target; `message` bytes are the message's own (they are
    /// also captured), not a note of popsync's.
    fn write(&mut self, bytes: &[u8], message: bool) -> std::io::Result<()> {
        let Some((_, head)) = &mut self.current else {
            return Err(std::io::Error::other("data outside a message"));
        };
        if message {
            head.feed(bytes);
        }
        self.target.write(bytes, head)
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
        let index = *self
            .index
            .get(&msg)
            .ok_or_else(|| std::io::Error::other("message not in batch"))?;
        self.target.start(index)?;
        self.current = Some((index, Head::default()));
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.check_cancel()?;
        self.progress.bytes(self.account, bytes.len() as u64);
        self.write(bytes, true)
    }

    fn finish(&mut self, msg: MsgNum, _octets: u64) -> std::io::Result<()> {
        if let Some(size) = self.notes.get(&msg).copied() {
            let note = headers_only_note(size);
            self.write(note.as_bytes(), false)?;
        }
        let (index, head) = self
            .current
            .take()
            .ok_or_else(|| std::io::Error::other("no message to finish"))?;
        self.target.finish(&head)?;
        self.heads[index] = Some(head);
        self.progress.message(self.account);
        Ok(())
    }

    fn refused(&mut self, msg: MsgNum, status: Status) -> std::io::Result<()> {
        warn!("the server refused to hand out message {msg}: {status}");
        self.refused.push(status);
        Ok(())
    }
}
