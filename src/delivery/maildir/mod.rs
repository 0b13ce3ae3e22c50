//! Maildir delivery (`maildir = "~/Mail/inbox"`), exactly once.
//!
//! The protocol, in the order this module enforces it:
//!
//! 1. a unique file name is chosen for each message of a batch and recorded in the state
//!    database as *pending* (the commit is durable) before any file exists;
//! 2. each message is streamed into `tmp/NAME`, created with `O_EXCL` and mode 0600;
//! 3. the batch's files are fsynced (many at once, so that a batch costs about one disk
//!    flush rather than one per message);
//! 4. each is hard-linked to `new/NAME` — a link never overwrites — (where hard links are
//!    not supported, renamed there after checking the name is free);
//! 5. `new/` is fsynced, making the links durable;
//! 6. only then are the rows marked *delivered* (and only delivered messages are ever
//!    deleted from the server);
//! 7. last, the `tmp/NAME` links are removed.
//!
//! After a crash between any two steps, recovery tells from the disk where each pending
//! message got to ([`Maildir::locate`]). In `new/`, or in `cur/` (moved there by the user's
//! mail reader), or anywhere else on the same file system — the `tmp/` link still counts two
//! names for the file — means delivered. Only in `tmp/` with one name, or nowhere, means not
//! delivered; the partial file is removed and the message downloaded again. Nothing is lost
//! and nothing appears twice. (The one case no file system can tell apart: a message the
//! user deleted in the instant between its link and its commit, which then comes back.)

mod dir;

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::info;

pub use dir::{Finished, Maildir, MessageWriter, PendingLocation};

use super::{Delivery, DeliveryError, Destination, Journal, Kind, Recovery, Setup, Target};
use crate::keys::{Checker, Layered, keys};
use crate::store::{PendingRow, Place};
use crate::summary::Head;

/// The Maildir kind of target.
pub const KIND: Kind = Kind {
    name: "maildir",
    example: "maildir = \"~/Mail/inbox\"",
    keys: MaildirKeys::DOCS,
    configure,
    recover,
};

keys! {
    /// Delivery into a Maildir.
    struct MaildirKeys {
        /// Deliver into this Maildir; `cur/`, `new/` and `tmp/` are created if missing.
        maildir: "maildir" { default: "", example: "\"~/Mail/inbox\"" },
    }
}

fn configure(c: &mut Checker<'_>, layers: &Layered<'_>) -> Option<Delivery> {
    let keys = MaildirKeys::take(layers);
    let path = keys.maildir.nonempty_path(c)?;
    Some(Delivery::new(Settings { path }))
}

/// Where an account's Maildir is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub path: PathBuf,
}

impl Destination for Settings {
    fn describe(&self) -> String {
        format!("the Maildir {}", self.path.display())
    }

    fn hook_env(&self) -> Option<(&'static str, &Path)> {
        Some(("POPSYNC_MAILDIR", &self.path))
    }

    /// Creates the Maildir if it is missing, and removes the `tmp/` links a run left
    /// behind after recording their messages as delivered (step 7 not taken).
    fn open(&self, setup: &Setup<'_>) -> Result<Box<dyn Target>, DeliveryError> {
        let io = |source| DeliveryError::Mailbox {
            path: self.path.clone(),
            source,
        };
        let maildir = Maildir::open(&self.path).map_err(io)?;
        let stale = maildir
            .stale_links(|name| setup.store.is_delivered_under(name).unwrap_or(false))
            .map_err(io)?;
        maildir.release(&stale.iter().map(String::as_str).collect::<Vec<_>>());
        Ok(Box::new(MaildirTarget {
            maildir,
            names: Vec::new(),
            current: None,
            arrived: Vec::new(),
        }))
    }

    /// A directory with `cur/`, `new/` and `tmp/` (each a directory where it exists) in
    /// which a file can be made; or, where none is yet, a place where one can be made.
    fn check_local(&self) -> Result<String, DeliveryError> {
        let wrong = |path: PathBuf, what: &str| DeliveryError::Mailbox {
            path,
            source: std::io::Error::other(what.to_owned()),
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DeliveryError::Mailbox { path, source }
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if !m.is_dir() => Err(wrong(
                self.path.clone(),
                "it is not a directory (a Maildir is a directory with cur/, new/ and tmp/ in it)",
            )),
            Ok(_) => {
                for sub in ["cur", "new", "tmp"] {
                    let path = self.path.join(sub);
                    match std::fs::metadata(&path) {
                        Ok(m) if !m.is_dir() => {
                            return Err(wrong(
                                path,
                                "it is not a directory, as a Maildir's must be",
                            ));
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(&path)(e)),
                    }
                }
                let tmp = self.path.join("tmp");
                let probe = if tmp.is_dir() { tmp } else { self.path.clone() };
                super::probe_writable(&probe).map_err(io(&probe))?;
                Ok(format!("{}: writable", self.describe()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                super::not_there_yet(&self.describe(), &self.path)
            }
            Err(e) => Err(io(&self.path)(e)),
        }
    }

    /// Each message is looked for in `new/`, then in `cur/` (where a mail reader moves it,
    /// adding ":2,FLAGS" to its name); one moved anywhere else is not found.
    fn stored_copies(&self, places: &[&Place]) -> Vec<Option<crate::identity::StoredCopy>> {
        let maildir = Maildir::at(&self.path);
        let names: Vec<Option<&str>> = places.iter().map(|p| p.name.as_deref()).collect();
        maildir
            .find_delivered(&names)
            .into_iter()
            .map(|path| {
                let file = std::fs::File::open(path?).ok()?;
                crate::identity::StoredCopy::read_lf(std::io::BufReader::new(file)).ok()
            })
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A Maildir receiving a batch.
#[derive(Debug)]
struct MaildirTarget {
    maildir: Maildir,
    /// The batch's file names, by index.
    names: Vec<String>,
    current: Option<(usize, MessageWriter)>,
    arrived: Vec<(usize, Finished)>,
}

impl Target for MaildirTarget {
    fn begin_batch(&mut self, journal: &mut Journal<'_>) -> Result<(), DeliveryError> {
        self.names = (0..journal.len())
            .map(|_| self.maildir.unique_name())
            .collect();
        self.arrived.clear();
        let places: Vec<(usize, Place)> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let place = Place {
                    kind: KIND.name.to_owned(),
                    mailbox: Some(self.maildir.root().to_owned()),
                    name: Some(name.clone()),
                    ..Place::default()
                };
                (i, place)
            })
            .collect();
        journal.record_pending(&places)?;
        Ok(())
    }

    fn start(&mut self, index: usize) -> std::io::Result<()> {
        let writer = self.maildir.create(&self.names[index])?;
        self.current = Some((index, writer));
        Ok(())
    }

    fn write(&mut self, data: &[u8], _head: &Head) -> std::io::Result<()> {
        match &mut self.current {
            Some((_, w)) => w.write(data),
            None => Err(std::io::Error::other("data outside a message")),
        }
    }

    fn finish(&mut self, _head: &Head) -> std::io::Result<()> {
        let (index, writer) = self
            .current
            .take()
            .ok_or_else(|| std::io::Error::other("no message to finish"))?;
        match writer.finish() {
            Ok(file) => {
                self.arrived.push((index, file));
                Ok(())
            }
            Err(e) => {
                self.maildir.discard(&self.names[index]);
                Err(e)
            }
        }
    }

    fn abandon(&mut self) {
        if let Some((index, _)) = self.current.take() {
            self.maildir.discard(&self.names[index]);
        }
    }

    /// Steps 3 to 7. Should the files not all reach `new/`, or the commit fail, the rows
    /// stay pending and the next run decides from the disk.
    fn deliver(&mut self, journal: &mut Journal<'_>) -> Result<(), DeliveryError> {
        let (indexes, files): (Vec<usize>, Vec<Finished>) =
            std::mem::take(&mut self.arrived).into_iter().unzip();
        let published = self
            .maildir
            .publish(&files)
            .map_err(|source| DeliveryError::Mailbox {
                path: self.maildir.root().to_owned(),
                source,
            });
        crate::failpoint::hit("published");
        published?;
        let sizes: Vec<(usize, u64)> = indexes
            .iter()
            .zip(&files)
            .map(|(i, f)| (*i, f.size))
            .collect();
        journal.mark_delivered(&sizes)?;
        let names: Vec<&str> = indexes.iter().map(|i| self.names[*i].as_str()).collect();
        self.maildir.release(&names);
        Ok(())
    }

    fn discard(&mut self, index: usize) {
        self.maildir.discard(&self.names[index]);
    }
}

/// Finds where each pending message got to, Maildir by Maildir.
fn recover(
    r: &mut Recovery<'_>,
    rows: &[&PendingRow],
    _current: &Delivery,
) -> Result<(), DeliveryError> {
    let mut by_dir: BTreeMap<PathBuf, Vec<&PendingRow>> = BTreeMap::new();
    for row in rows {
        by_dir
            .entry(row.place.mailbox.clone().unwrap_or_default())
            .or_default()
            .push(row);
    }
    for (dir, rows) in by_dir {
        recover_dir(r, &dir, &rows)?;
    }
    Ok(())
}

fn recover_dir(
    r: &mut Recovery<'_>,
    dir: &Path,
    rows: &[&PendingRow],
) -> Result<(), DeliveryError> {
    let maildir = Maildir::at(dir);
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r.place.name.as_deref().unwrap_or_default())
        .collect();
    let found = maildir
        .locate(&names)
        .map_err(|source| DeliveryError::Mailbox {
            path: dir.to_owned(),
            source,
        })?;
    let mut delivered = Vec::new();
    let mut delivered_names = Vec::new();
    let mut absent = Vec::new();
    for ((row, name), f) in rows.iter().zip(&names).zip(found) {
        match f {
            PendingLocation::Delivered(size) => {
                delivered.push((*row, size));
                delivered_names.push(*name);
            }
            PendingLocation::Absent => {
                maildir.discard(name);
                absent.push(*row);
            }
        }
    }
    crate::failpoint::hit("recovery-located");
    r.delivered(&delivered)?;
    r.not_delivered(&absent)?;
    maildir.release(&delivered_names);
    info!(
        "an interrupted run left deliveries into {} unfinished: {} message(s) were complete, {} will be downloaded again",
        dir.display(),
        delivered.len(),
        absent.len()
    );
    Ok(())
}
