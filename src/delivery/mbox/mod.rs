//! mbox delivery (`mbox = "~/Mail/inbox"`), mboxrd, locked, exactly once.
//!
//! The mbox family (RFC 4155 and its history): messages one after another in one file, each
//! starting with a `From sender date` line. The variants differ in how a body line that
//! starts with `From ` is kept from looking like the start of a message: popsync writes
//! *mboxrd*, where every line matching `^>*From ` gets one more `>`, so readers can undo the
//! quoting exactly. Lines end with LF and each message is followed by a blank line.
//!
//! Exactly once: a batch of messages is spooled first (see [`super::spool`]), so that each
//! is complete, and its length and hash known, before it goes near the mbox. Then, with the
//! mbox locked ([`file`]), each message's place (offset, length, SHA-256 and `From ` line)
//! is recorded as *pending* and committed before anything is appended; the messages are
//! appended and the file fsynced; only then are they marked *delivered*. A failed append is
//! cut back to the old length. After a crash, recovery decides from the recorded place and
//! hash whether a message is complete; a torn one at the end of the file is cut off — never
//! a half message in the file, never one twice.

pub mod file;

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use self::file::Found;
use super::spool::{Handover, SpoolFormat, Spooled, SpoolingTarget};
use super::{Delivery, DeliveryError, Destination, Journal, Kind, Recovery, Setup, Target};
use crate::keys::{Checker, Layered, keys};
use crate::store::{PendingRow, Place};

/// The mbox kind of target.
pub const KIND: Kind = Kind {
    name: "mbox",
    example: "mbox = \"~/Mail/inbox.mbox\"",
    keys: MboxKeys::DOCS,
    configure,
    recover,
};

keys! {
    /// Delivery into an mbox file.
    struct MboxKeys {
        /// Deliver into this mbox file (mboxrd), created 0600 if missing.
        mbox: "mbox" { default: "", example: "\"~/Mail/inbox\"" },
        /// How it is locked while popsync appends: "dotlock+fcntl", "dotlock+flock",
        /// "fcntl", "flock" or "dotlock".
        locking: "mbox-locking" { default: "\"dotlock+fcntl\"", example: "\"dotlock+flock\"" },
        /// How long to wait for another program's lock.
        lock_timeout: "mbox-lock-timeout" { default: "\"2m\"", example: "\"30s\"" },
    }
}

fn configure(c: &mut Checker<'_>, layers: &Layered<'_>) -> Option<Delivery> {
    let keys = MboxKeys::take(layers);
    let path = keys.mbox.nonempty_path(c)?;
    let defaults = Locking::default();
    let (dotlock, kernel) = if keys.locking.is_set() {
        keys.locking.one_of(
            c,
            &[
                ("dotlock+fcntl", (true, KernelLock::Fcntl)),
                ("dotlock+flock", (true, KernelLock::Flock)),
                ("fcntl", (false, KernelLock::Fcntl)),
                ("flock", (false, KernelLock::Flock)),
                ("dotlock", (true, KernelLock::None)),
            ],
        )?
    } else {
        (defaults.dotlock, defaults.kernel)
    };
    let timeout = keys
        .lock_timeout
        .duration(c, defaults.timeout, Duration::from_secs(1));
    Some(Delivery::new(Settings {
        path,
        locking: Locking {
            dotlock,
            kernel,
            timeout,
        },
    }))
}

/// An account's mbox and how it is locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub path: PathBuf,
    pub locking: Locking,
}

/// How an mbox is locked while popsync appends to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locking {
    /// `FILE.lock`, created atomically (what procmail, mutt and most MDAs honour).
    pub dotlock: bool,
    /// The kernel lock taken on the file itself.
    pub kernel: KernelLock,
    /// How long to wait for other programs' locks.
    pub timeout: Duration,
}

impl Default for Locking {
    /// A dotlock and an fcntl lock, waiting two minutes: what other mail programs expect.
    fn default() -> Self {
        Self {
            dotlock: true,
            kernel: KernelLock::Fcntl,
            timeout: Duration::from_secs(120),
        }
    }
}

/// A kernel file lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelLock {
    None,
    /// POSIX record locks (`fcntl(F_SETLKW)`), as procmail, mutt and Dovecot use.
    Fcntl,
    /// `flock(2)`.
    Flock,
}

impl Destination for Settings {
    fn describe(&self) -> String {
        format!("the mbox {}", self.path.display())
    }

    fn hook_env(&self) -> Option<(&'static str, &Path)> {
        Some(("POPSYNC_MBOX", &self.path))
    }

    /// Creates the mbox's directory if it is missing, and a spool.
    fn open(&self, setup: &Setup<'_>) -> Result<Box<dyn Target>, DeliveryError> {
        if let Some(parent) = self.path.parent()
            && !parent.as_os_str().is_empty()
        {
            crate::store::create_private_dir(parent).map_err(|source| DeliveryError::Mailbox {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(Box::new(SpoolingTarget::new(
            setup.spool_dir()?,
            SpoolFormat::Mboxrd,
            Append {
                settings: self.clone(),
            },
        )))
    }

    /// A regular file that can be appended to; or, where none is yet, a place where one
    /// can be made.
    fn check_local(&self) -> Result<String, DeliveryError> {
        let io = |source| DeliveryError::Mailbox {
            path: self.path.clone(),
            source,
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if !m.is_file() => Err(io(std::io::Error::other(
                "it is not a regular file (an mbox is one file)",
            ))),
            Ok(_) => {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&self.path)
                    .map_err(io)?;
                Ok(format!("{}: writable", self.describe()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                super::not_there_yet(&self.describe(), &self.path)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Each message is read at the place popsync wrote it (its `From ` line, the message
    /// quoted mboxrd-style, the blank line after it). One that is not there any more (the
    /// mbox rewritten by a mail reader since) is not found, or has another identity.
    fn stored_copies(&self, places: &[&Place]) -> Vec<Option<crate::identity::StoredCopy>> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return vec![None; places.len()];
        };
        places
            .iter()
            .map(|p| {
                file.seek(SeekFrom::Start(p.offset?)).ok()?;
                read_back(std::io::BufReader::new((&file).take(p.len?)))
            })
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The longest line read back from an mbox: a copy with a longer one is not read (and so
/// not recognised by it), rather than held whole in memory.
const MAX_LINE: u64 = 1024 * 1024;

/// One message as popsync appended it (its `From ` line, the message quoted mboxrd-style,
/// the blank line after it), read a line at a time as it was before the quoting: one `>`
/// less on every line that matches `^>+From `. `None` if it is not such a message.
fn read_back(mut r: impl std::io::BufRead) -> Option<crate::identity::StoredCopy> {
    let mut line = Vec::new();
    let next_line = |r: &mut dyn std::io::BufRead, line: &mut Vec<u8>| -> Option<bool> {
        line.clear();
        let n = std::io::Read::take(r, MAX_LINE)
            .read_until(b'\n', line)
            .ok()?;
        if n as u64 == MAX_LINE && line.last() != Some(&b'\n') {
            return None;
        }
        Some(n > 0)
    };
    use std::io::BufRead as _;
    if !next_line(&mut r, &mut line)? || !line.starts_with(b"From ") {
        return None;
    }
    let mut copy = crate::identity::Reading::default();
    // Each line goes in once the next is read: the last one is the blank separator.
    // (One buffer, reused: no allocation a line.)
    let (mut held, mut holding) = (Vec::new(), false);
    while next_line(&mut r, &mut line)? {
        if holding {
            copy.feed(&held);
        }
        let arrows = line.iter().take_while(|b| **b == b'>').count();
        let quoted = arrows > 0 && line[arrows..].starts_with(b"From ");
        held.clear();
        held.extend_from_slice(&line[usize::from(quoted)..]);
        holding = true;
    }
    (holding && held == b"\n").then(|| copy.finish())
}

/// Appending a spooled batch to the mbox.
#[derive(Debug)]
struct Append {
    settings: Settings,
}

impl Append {
    fn error(&self, e: std::io::Error) -> DeliveryError {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            DeliveryError::Busy(e.to_string())
        } else {
            DeliveryError::Mailbox {
                path: self.settings.path.clone(),
                source: e,
            }
        }
    }

    /// Lock, record places, append, fsync, record delivered; unlocked when it returns.
    fn append(
        &self,
        arrived: &[(usize, Spooled)],
        journal: &mut Journal<'_>,
    ) -> Result<(), DeliveryError> {
        let mut guard =
            file::lock(&self.settings.path, &self.settings.locking).map_err(|e| self.error(e))?;
        let mut offset = guard.len().map_err(|e| self.error(e))?;
        let mut places = Vec::with_capacity(arrived.len());
        for (i, s) in arrived {
            let place = Place {
                kind: KIND.name.to_owned(),
                mailbox: Some(self.settings.path.clone()),
                offset: Some(offset),
                len: Some(s.len),
                sha256: Some(s.sha256.to_vec()),
                first_line: Some(s.from_line.clone()),
                ..Place::default()
            };
            places.push((*i, place));
            offset += s.len;
        }
        journal.record_pending(&places)?;
        let list: Vec<&Spooled> = arrived.iter().map(|(_, s)| s).collect();
        if let Err(e) = guard.append(&list) {
            // Cut back: nothing of the batch is in the file. Forget the pending rows.
            let indexes: Vec<usize> = arrived.iter().map(|(i, _)| *i).collect();
            let _ = journal.drop_pending(&indexes);
            return Err(self.error(e));
        }
        crate::failpoint::hit("published");
        let sizes: Vec<(usize, u64)> = arrived.iter().map(|(i, s)| (*i, s.len)).collect();
        journal.mark_delivered(&sizes)?;
        Ok(())
    }
}

impl Handover for Append {
    fn deliver(
        &mut self,
        arrived: Vec<(usize, Spooled)>,
        journal: &mut Journal<'_>,
    ) -> Result<(), DeliveryError> {
        if arrived.is_empty() {
            return Ok(());
        }
        let result = self.append(&arrived, journal);
        for (_, s) in &arrived {
            s.remove();
        }
        result
    }
}

/// Finds where each pending append got to, mbox by mbox.
fn recover(
    r: &mut Recovery<'_>,
    rows: &[&PendingRow],
    current: &Delivery,
) -> Result<(), DeliveryError> {
    let mut by_path: BTreeMap<PathBuf, Vec<&PendingRow>> = BTreeMap::new();
    for row in rows {
        by_path
            .entry(row.place.mailbox.clone().unwrap_or_default())
            .or_default()
            .push(row);
    }
    for (path, rows) in by_path {
        // The account's own locking if it still delivers there, else the usual kind.
        let locking = current
            .settings::<Settings>()
            .filter(|s| s.path == path)
            .map(|s| s.locking)
            .unwrap_or_default();
        recover_file(r, &path, &locking, &rows)?;
    }
    Ok(())
}

fn recover_file(
    r: &mut Recovery<'_>,
    path: &Path,
    locking: &Locking,
    rows: &[&PendingRow],
) -> Result<(), DeliveryError> {
    let io = |source| DeliveryError::Mailbox {
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
    let mut guard = file::lock(path, locking).map_err(io)?;
    let mut delivered = Vec::new();
    let mut absent = Vec::new();
    let mut torn_at = None;
    for row in rows {
        let p = &row.place;
        let (offset, len) = (p.offset.unwrap_or(0), p.len.unwrap_or(0));
        let (sha256, from_line) = (
            p.sha256.as_deref().unwrap_or_default(),
            p.first_line.as_deref().unwrap_or_default(),
        );
        match guard.locate(offset, len, sha256, from_line).map_err(io)? {
            Found::At(_) => delivered.push((*row, len)),
            Found::Absent => {
                if torn_at.is_none() && guard.torn_tail(offset, len, from_line).map_err(io)? {
                    torn_at = Some(offset);
                }
                absent.push(*row);
            }
        }
    }
    crate::failpoint::hit("recovery-located");
    if let Some(at) = torn_at {
        warn!(
            "cutting a message left half-written by an interrupted run off the end of {} (at byte {at})",
            path.display()
        );
        guard.truncate(at).map_err(io)?;
    }
    r.delivered(&delivered)?;
    r.not_delivered(&absent)?;
    drop(guard);
    info!(
        "an interrupted run left appends to {} unfinished: {} message(s) were complete, {} will be downloaded again",
        path.display(),
        delivered.len(),
        absent.len()
    );
    Ok(())
}
