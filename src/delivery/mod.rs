//! Putting messages into the user's mailbox, exactly once: the delivery targets behind one
//! small interface.
//!
//! Each kind of target — [`maildir`], [`mbox`], [`mda`] — is a module of its own that owns
//! everything about it: its configuration keys and settings, how it prepares the mailbox, how a message streams in,
//! how a batch is made durable, what the state database must record before the first byte
//! reaches the mailbox, and how it finishes what an interrupted run left pending. It is
//! registered with one line in [`KINDS`]. The code above (`poll`) knows no target by name:
//! it streams each batch into a [`Target`] and asks it to deliver.
//!
//! The contract every target keeps (the invariants users' mail depends on):
//!
//! - before any byte of a message can be seen in the mailbox, its place is recorded as
//!   *pending* through the [`Journal`] (a durable commit), so that after a crash recovery
//!   can look there;
//! - a message is marked *delivered* through the journal only once it is durably in the
//!   mailbox (or, for an MDA, once the MDA said so);
//! - what arrived completely before a failure is still delivered and recorded; a message
//!   that did not arrive whole leaves nothing in the mailbox;
//! - after a crash, [`Kind::recover`] decides from the mailbox, never by guessing, whether
//!   each pending message got there.
//!
//! Message data arrives as the server sent it (CRLF line endings) and is stored with LF line
//! endings, byte for byte otherwise.

mod crlf;
pub mod imap;
pub mod maildir;
pub mod mbox;
pub mod mda;
pub mod spool;

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crlf::CrlfToLf;

use crate::keys::{Checker, KeyDoc, Layered};
use crate::store::{AccountId, PendingRow, Place, Store, StoreError};
use crate::summary::Head;

/// Every kind of delivery target. A new kind is a module of its own and one line here.
pub const KINDS: &[&Kind] = &[&maildir::KIND, &mbox::KIND, &mda::KIND, &imap::KIND];

/// A kind of delivery target.
#[derive(Debug)]
pub struct Kind {
    /// The account key that chooses it, which is also its name in the state database (a
    /// pending message's [`Place::kind`]).
    pub name: &'static str,
    /// How the key is written, for a message saying where mail can go.
    pub example: &'static str,
    /// Every key it reads (the choosing one first).
    pub keys: &'static [KeyDoc],
    /// Reads its keys from an account chosen to deliver this way.
    pub configure: fn(&mut Checker<'_>, &Layered<'_>) -> Option<Delivery>,
    /// Finishes deliveries an interrupted run left pending: `rows` are this kind's pending
    /// messages of the account; `current` is where the account delivers now.
    pub recover:
        fn(&mut Recovery<'_>, &[&PendingRow], current: &Delivery) -> Result<(), DeliveryError>,
}

/// Where an account's mail goes, as configured.
pub trait Destination: fmt::Debug + Send + Sync + 'static {
    /// A few words for logs: "the Maildir ~/Mail", "the MDA \"procmail\"".
    fn describe(&self) -> String;
    /// What the new-mail hook is told of the mailbox: a variable and its value (`None` when
    /// the mail goes to a program).
    fn hook_env(&self) -> Option<(&'static str, &Path)>;
    /// Gets the mailbox ready for a fetch: created if missing, and what a crash left
    /// behind tidied away.
    fn open(&self, setup: &Setup<'_>) -> Result<Box<dyn Target>, DeliveryError>;
    /// The stored copies of delivered messages, at these places (what this kind recorded:
    /// a Maildir file's name, an mbox message's offset and length), as recognising a
    /// message by content (`crate::identity`) needs them: `None` for each that has no copy
    /// to read (moved away by the user, or a kind that keeps none, as an MDA). Used when the
    /// server renumbers its mailbox.
    fn stored_copies(&self, places: &[&Place]) -> Vec<Option<crate::identity::StoredCopy>> {
        vec![None; places.len()]
    }
    /// Whether a fetch could deliver here, found without delivering anything (for `popsync
    /// check`): what was found, in a few words, or what is wrong and where.
    fn check_local(&self) -> Result<String, DeliveryError>;
    /// For a kind's recovery to read its own settings.
    fn as_any(&self) -> &dyn Any;
}

/// Whether `dir` can be written in: a file made there and removed again.
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".popsync-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// For a path that does not exist yet: the nearest directory above it that does, which must
/// be writable for the path to be created.
pub fn creatable(path: &Path) -> Result<PathBuf, DeliveryError> {
    let mut at = path.parent();
    while let Some(dir) = at {
        if dir.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                probe_writable(dir).map_err(|source| DeliveryError::Mailbox {
                    path: dir.to_owned(),
                    source,
                })?;
                return Ok(dir.to_owned());
            }
            Ok(_) => {
                return Err(DeliveryError::Mailbox {
                    path: dir.to_owned(),
                    source: std::io::Error::other("it is not a directory"),
                });
            }
            Err(_) => at = dir.parent(),
        }
    }
    Ok(PathBuf::from("."))
}

/// What `check_local` says of a mailbox at `path` that is not there yet: fine, if it can be
/// made where it is to be.
pub fn not_there_yet(describe: &str, path: &Path) -> Result<String, DeliveryError> {
    let under = creatable(path)?;
    Ok(format!(
        "{describe}: not there yet; the first fetch creates it (in {}, writable)",
        under.display()
    ))
}

/// An account's destination (cheap to clone).
#[derive(Debug, Clone)]
pub struct Delivery(Arc<dyn Destination>);

impl Delivery {
    pub fn new(destination: impl Destination) -> Self {
        Self(Arc::new(destination))
    }

    /// The destination's settings, if it is of kind `T`.
    pub fn settings<T: Destination>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl std::ops::Deref for Delivery {
    type Target = dyn Destination;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// What opening a destination may use.
#[derive(Debug)]
pub struct Setup<'a> {
    pub account: &'a str,
    pub state_dir: &'a Path,
    pub store: &'a Store,
}

impl Setup<'_> {
    /// A spool directory of the account's own in the state directory, emptied of anything
    /// an interrupted run left there (for targets that need a message whole before it goes
    /// on).
    pub fn spool_dir(&self) -> Result<PathBuf, DeliveryError> {
        let dir = self.state_dir.join("spool").join(self.account);
        crate::store::create_private_dir(&dir).map_err(|source| DeliveryError::Mailbox {
            path: dir.clone(),
            source,
        })?;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(dir)
    }
}

/// A mailbox receiving batches of messages.
///
/// For each batch: [`begin_batch`](Self::begin_batch); then for each message that arrives
/// [`start`](Self::start), [`write`](Self::write)…, and [`finish`](Self::finish) (or
/// [`abandon`](Self::abandon) when it did not arrive whole); then
/// [`deliver`](Self::deliver); then [`discard`](Self::discard) for each message of the
/// batch that was not delivered. Messages are named by their index in the batch.
pub trait Target {
    /// Starts a batch of `journal.len()` messages. What must be recorded before any of them
    /// exists (a Maildir's file names) is recorded now.
    fn begin_batch(&mut self, journal: &mut Journal<'_>) -> Result<(), DeliveryError>;
    /// Message `index` of the batch starts arriving.
    fn start(&mut self, index: usize) -> std::io::Result<()>;
    /// Message bytes as received (dot-unstuffed, CRLF line endings). `head` has seen them.
    fn write(&mut self, data: &[u8], head: &Head) -> std::io::Result<()>;
    /// The current message arrived whole.
    fn finish(&mut self, head: &Head) -> std::io::Result<()>;
    /// The current message did not arrive whole: what was written of it goes.
    fn abandon(&mut self);
    /// Makes the messages that arrived durable in the mailbox, recording each as pending
    /// and then as delivered through `journal` as its protocol says. On an error, what was
    /// recorded delivered before it stays delivered; what is left pending is for recovery.
    fn deliver(&mut self, journal: &mut Journal<'_>) -> Result<(), DeliveryError>;
    /// Message `index` was not delivered: anything left of it goes.
    fn discard(&mut self, index: usize);
}

/// The state database, as a target sees it while delivering one batch: the delivery steps
/// of the message state machine, for the batch's messages by index.
pub struct Journal<'a> {
    store: &'a mut Store,
    account: AccountId,
    uids: &'a [&'a [u8]],
    now: i64,
    /// For the time a pending record is written (not the batch's: a destination that may
    /// still be taking the message is waited for from when it was sent).
    clock: &'a dyn crate::clock::Clock,
    headers_only: bool,
    delivered: Vec<(usize, u64)>,
    /// Each message's identity by content, once it has arrived.
    identities: Vec<Option<crate::identity::Identity>>,
}

impl std::fmt::Debug for Journal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("account", &self.account)
            .field("uids", &self.uids.len())
            .field("now", &self.now)
            .field("headers_only", &self.headers_only)
            .finish_non_exhaustive()
    }
}

impl<'a> Journal<'a> {
    /// A journal for a batch of messages with these unique-ids, delivered at `clock`'s time
    /// now; `headers_only` when only their headers are delivered.
    pub fn new(
        store: &'a mut Store,
        account: AccountId,
        uids: &'a [&'a [u8]],
        clock: &'a dyn crate::clock::Clock,
        headers_only: bool,
    ) -> Self {
        Self {
            store,
            account,
            uids,
            now: clock.now(),
            clock,
            headers_only,
            delivered: Vec::new(),
            identities: vec![None; uids.len()],
        }
    }

    /// Message `index` arrived; this is its identity by content, recorded with it when it
    /// is delivered.
    pub fn identify(&mut self, index: usize, identity: crate::identity::Identity) {
        self.identities[index] = Some(identity);
    }

    /// How many messages the batch has.
    pub fn len(&self) -> usize {
        self.uids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
    }

    /// The batch's time (unix seconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Records where these messages are about to be put. Durable when this returns.
    pub fn record_pending(&mut self, places: &[(usize, Place)]) -> Result<(), StoreError> {
        let rows: Vec<(&[u8], &Place)> = places.iter().map(|(i, p)| (self.uids[*i], p)).collect();
        let written = self.clock.now();
        self.store
            .record_pending(self.account, &rows, self.now, written, self.headers_only)?;
        crate::failpoint::hit("pending-committed");
        Ok(())
    }

    /// Records these messages as durably delivered, with the number of bytes written.
    pub fn mark_delivered(&mut self, sizes: &[(usize, u64)]) -> Result<(), StoreError> {
        let rows: Vec<crate::store::DeliveredRow<'_>> = sizes
            .iter()
            .map(|(i, n)| {
                let identity = self.identities[*i].as_ref().map(|id| id.as_slice());
                (self.uids[*i], *n, identity)
            })
            .collect();
        self.store
            .mark_delivered(self.account, &rows, self.now, self.headers_only)?;
        crate::failpoint::hit("delivered-committed");
        self.delivered.extend_from_slice(sizes);
        Ok(())
    }

    /// Records the UIDs these pending messages got in an IMAP mailbox of this UIDVALIDITY
    /// (before they are marked delivered).
    pub fn record_dest_uids(&mut self, uids: &[(usize, u32, u32)]) -> Result<(), StoreError> {
        let rows: Vec<(&[u8], u32, u32)> = uids
            .iter()
            .map(|(i, validity, uid)| (self.uids[*i], *validity, *uid))
            .collect();
        self.store.record_dest_uids(self.account, &rows)?;
        crate::failpoint::hit("imap-uid-recorded");
        Ok(())
    }

    /// Forgets pending records of messages that will not be delivered after all.
    pub fn drop_pending(&mut self, indexes: &[usize]) -> Result<(), StoreError> {
        let uids: Vec<&[u8]> = indexes.iter().map(|i| self.uids[*i]).collect();
        self.store.drop_pending(self.account, &uids)
    }

    /// The messages recorded delivered so far, with their sizes, in the order recorded.
    pub fn delivered(&self) -> &[(usize, u64)] {
        &self.delivered
    }
}

/// The state database, as a kind's recovery sees it.
#[derive(Debug)]
pub struct Recovery<'a> {
    store: &'a mut Store,
    account: AccountId,
    now: i64,
    /// Pending messages found complete and confirmed.
    pub recovered: u64,
}

impl<'a> Recovery<'a> {
    pub fn new(store: &'a mut Store, account: AccountId, now: i64) -> Self {
        Self {
            store,
            account,
            now,
            recovered: 0,
        }
    }

    /// The time of this recovery (unix seconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// These pending messages were found in the mailbox whole, with these sizes: they are
    /// delivered (or headers-only, where only the headers were being delivered).
    pub fn delivered(&mut self, found: &[(&PendingRow, u64)]) -> Result<(), StoreError> {
        let rows = |headers_only: bool| -> Vec<crate::store::DeliveredRow<'_>> {
            found
                .iter()
                .filter(|(row, _)| row.headers_only == headers_only)
                .map(|(row, size)| (row.uid.as_slice(), *size, None))
                .collect()
        };
        let (whole, headers) = (rows(false), rows(true));
        self.store
            .mark_delivered(self.account, &whole, self.now, false)?;
        self.store
            .mark_delivered(self.account, &headers, self.now, true)?;
        self.recovered += found.len() as u64;
        Ok(())
    }

    /// These pending messages were found in an IMAP mailbox of this UIDVALIDITY, at these
    /// UIDs (recorded, then the messages are delivered as [`Self::delivered`] says).
    pub fn found_at(&mut self, found: &[(&PendingRow, u32, u32)]) -> Result<(), StoreError> {
        let rows: Vec<(&[u8], u32, u32)> = found
            .iter()
            .map(|(row, validity, uid)| (row.uid.as_slice(), *validity, *uid))
            .collect();
        self.store.record_dest_uids(self.account, &rows)
    }

    /// These pending messages did not get into the mailbox: they are downloaded again.
    pub fn not_delivered(&mut self, rows: &[&PendingRow]) -> Result<(), StoreError> {
        let uids: Vec<&[u8]> = rows.iter().map(|r| r.uid.as_slice()).collect();
        self.store.drop_pending(self.account, &uids)
    }
}

/// Why a delivery did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The mailbox could not be read or written.
    #[error("mailbox {}", .path.display())]
    Mailbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another program holds the mailbox's lock (try again later).
    #[error("{0}")]
    Busy(String),
    /// The MDA did not take a message.
    #[error(transparent)]
    Mda(#[from] mda::MdaFailure),
    /// The IMAP mailbox could not be reached, or did not take a message.
    #[error(transparent)]
    Imap(Box<imap::ImapFailure>),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A pending message recorded by a kind of target this popsync does not know.
    #[error(
        "the state database records an unfinished delivery of an unknown kind {0:?} (written by a newer popsync?)"
    )]
    UnknownKind(String),
}

impl From<imap::ImapFailure> for DeliveryError {
    fn from(e: imap::ImapFailure) -> Self {
        Self::Imap(Box::new(e))
    }
}

impl DeliveryError {
    pub fn class(&self) -> crate::exit::ErrorClass {
        use crate::exit::ErrorClass;
        match self {
            Self::Busy(_) => ErrorClass::Temporary,
            Self::Mda(m) => m.class(),
            Self::Imap(m) => m.class(),
            Self::Mailbox { .. } | Self::Store(_) | Self::UnknownKind(_) => ErrorClass::Local,
        }
    }
}
