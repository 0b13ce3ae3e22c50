//! A Maildir on disk: unique names, writing into `tmp/`, making a batch durable and visible in
//! `new/`, and finding after a crash where a message got to. The order these steps are taken
//! in, and why it gives exactly-once delivery, is in the [kind's docs](super).
//!
//! Names follow the Maildir convention `TIME.MUSECPPIDQSEQRRAND.HOST` (with `/` and `:` in
//! the host name escaped as `\057` and `\072`); server data never becomes part of a name.

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::delivery::CrlfToLf;

/// A Maildir: `cur/`, `new/` and `tmp/` under one root.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    host: String,
    pid: u32,
    seq: u64,
}

/// Where a pending message was found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingLocation {
    /// Visible to mail readers (in `new/` or `cur/`): delivered. The size in bytes.
    Delivered(u64),
    /// Not visible: not delivered (any partial file in `tmp/` has been removed).
    Absent,
}

/// Buffer for writing one message.
const WRITE_BUFFER: usize = 128 * 1024;

impl Maildir {
    /// Opens the Maildir at `root`, creating it (mode 0700) if needed.
    pub fn open(root: &Path) -> io::Result<Self> {
        for sub in ["tmp", "new", "cur"] {
            let dir = root.join(sub);
            crate::store::create_private_dir(&dir).map_err(|e| {
                // Something in the way that is not a directory: say which.
                match std::fs::metadata(&dir) {
                    Ok(m) if !m.is_dir() => io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} is not a directory, as a Maildir's {sub}/ must be",
                            dir.display()
                        ),
                    ),
                    _ => match std::fs::metadata(root) {
                        Ok(m) if !m.is_dir() => io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!(
                                "{} is not a directory (a Maildir is a directory with cur/, \
                                 new/ and tmp/ in it)",
                                root.display()
                            ),
                        ),
                        _ => with_path(e, "cannot create the Maildir", root),
                    },
                }
            })?;
        }
        Ok(Self::at(root))
    }

    /// The Maildir at `root`, without touching the disk.
    pub fn at(root: &Path) -> Self {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Self {
            root: root.to_owned(),
            host: escape_host(if host.is_empty() { "localhost" } else { &host }),
            pid: std::process::id(),
            seq: 0,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new unique name (not yet used on disk).
    pub fn unique_name(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.seq += 1;
        // Randomness from the standard library's randomly keyed hasher.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.seq);
        let rand = h.finish();
        format!(
            "{}.M{}P{}Q{}R{:016x}.{}",
            now.as_secs(),
            now.subsec_micros(),
            self.pid,
            self.seq,
            rand,
            self.host
        )
    }

    fn tmp(&self, name: &str) -> PathBuf {
        self.root.join("tmp").join(name)
    }

    fn new_path(&self, name: &str) -> PathBuf {
        self.root.join("new").join(name)
    }

    /// Starts writing a message into `tmp/NAME`.
    pub fn create(&self, name: &str) -> io::Result<MessageWriter> {
        let path = self.tmp(name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(&path)
            .map_err(|e| with_path(e, "cannot create", &path))?;
        Ok(MessageWriter {
            name: name.to_owned(),
            path,
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
            crlf: CrlfToLf::default(),
            written: 0,
        })
    }

    /// Makes finished messages durable and visible: fsync them, link them into `new/`,
    /// fsync `new/`. When this returns `Ok`, every message is durably delivered.
    pub fn publish(&self, messages: &[Finished]) -> io::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        sync_files(messages)?;
        crate::failpoint::hit("files-synced");
        for (i, m) in messages.iter().enumerate() {
            if i == messages.len() / 2 {
                crate::failpoint::hit("half-linked");
            }
            let tmp = self.tmp(&m.name);
            let new = self.new_path(&m.name);
            match fs::hard_link(&tmp, &new) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(with_path(e, "refusing to overwrite", &new));
                }
                Err(_) => {
                    // File systems without hard links: rename, after making sure the name is
                    // free (names are unique, so this guards against the impossible).
                    if fs::symlink_metadata(&new).is_ok() {
                        return Err(with_path(
                            io::Error::from(io::ErrorKind::AlreadyExists),
                            "refusing to overwrite",
                            &new,
                        ));
                    }
                    fs::rename(&tmp, &new).map_err(|e| with_path(e, "cannot move", &tmp))?;
                }
            }
        }
        crate::failpoint::hit("linked");
        sync_dir(&self.root.join("new"))
    }

    /// Removes a message that will not be delivered from `tmp/`.
    pub fn discard(&self, name: &str) {
        let _ = fs::remove_file(self.tmp(name));
    }

    /// Removes the `tmp/` links of messages recorded as delivered (the last step).
    pub fn release(&self, names: &[&str]) {
        for name in names {
            let _ = fs::remove_file(self.tmp(name));
        }
    }

    /// `tmp/` links left behind by a run that stopped after recording its messages as
    /// delivered and before removing them: files in `tmp/` with another name elsewhere, for
    /// which `is_delivered` says yes. Returns their names.
    pub fn stale_links(
        &self,
        mut is_delivered: impl FnMut(&str) -> bool,
    ) -> io::Result<Vec<String>> {
        let tmp = self.root.join("tmp");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(with_path(e, "cannot read", &tmp)),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if link_count(&entry.metadata()?) >= 2 && is_delivered(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Where delivered messages are now, by the names they were delivered under: in
    /// `new/`, or in `cur/` with the flags a mail reader adds. `None` for a name not found
    /// (or not given); reading nothing but directories.
    pub fn find_delivered(&self, names: &[Option<&str>]) -> Vec<Option<PathBuf>> {
        let mut found: Vec<Option<PathBuf>> = names
            .iter()
            .map(|n| {
                let path = self.new_path(n.as_ref()?);
                path.is_file().then_some(path)
            })
            .collect();
        let wanted: std::collections::HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| found[*i].is_none())
            .filter_map(|(i, n)| Some((*n.as_ref()?, i)))
            .collect();
        if wanted.is_empty() {
            return found;
        }
        let Ok(entries) = fs::read_dir(self.root.join("cur")) else {
            return found;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            let base = file_name.split([':', '!']).next().unwrap_or(&file_name);
            if let Some(&i) = wanted.get(base) {
                found[i] = Some(entry.path());
            }
        }
        found
    }

    /// Finds where pending messages got to (see the module docs), changing nothing but
    /// making a found link durable. Fails if the Maildir itself is gone (moved, or a disk not
    /// mounted): guessing then could deliver messages twice.
    pub fn locate(&self, names: &[&str]) -> io::Result<Vec<PendingLocation>> {
        let new_dir = self.root.join("new");
        if !new_dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the Maildir {} is gone, but an interrupted run was delivering into it; \
                     put it back (or mount its disk) so popsync can see which messages arrived",
                    self.root.display()
                ),
            ));
        }
        let mut found: Vec<Option<u64>> = Vec::with_capacity(names.len());
        let mut any_new = false;
        for name in names {
            match fs::metadata(self.new_path(name)) {
                Ok(m) => {
                    any_new = true;
                    found.push(Some(m.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => found.push(None),
                Err(e) => return Err(with_path(e, "cannot inspect", &self.new_path(name))),
            }
        }
        if found.iter().any(Option::is_none) {
            // A mail reader may have moved it from new/ to cur/, adding ":2,FLAGS".
            let cur = self.root.join("cur");
            match fs::read_dir(&cur) {
                Ok(entries) => {
                    let wanted: std::collections::HashMap<&str, usize> = names
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| found[*i].is_none())
                        .map(|(i, n)| (*n, i))
                        .collect();
                    for entry in entries {
                        let entry = entry?;
                        let file_name = entry.file_name();
                        let file_name = file_name.to_string_lossy();
                        let base = file_name.split([':', '!']).next().unwrap_or(&file_name);
                        if let Some(&i) = wanted.get(base) {
                            found[i] = Some(entry.metadata()?.len());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(with_path(e, "cannot read", &cur)),
            }
        }
        for (name, f) in names.iter().zip(found.iter_mut()) {
            if f.is_none()
                && let Ok(m) = fs::metadata(self.tmp(name))
                && link_count(&m) >= 2
            {
                // Linked, then moved on by the user or their mail reader.
                *f = Some(m.len());
            }
        }
        if any_new {
            // The link may not have been made durable before the crash.
            sync_dir(&new_dir)?;
        }
        Ok(found
            .into_iter()
            .map(|f| match f {
                Some(size) => PendingLocation::Delivered(size),
                None => PendingLocation::Absent,
            })
            .collect())
    }
}

/// How many names a file has (1 where the platform cannot tell).
fn link_count(m: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        1
    }
}

/// Writes one message into `tmp/`, converting CRLF to LF.
#[derive(Debug)]
pub struct MessageWriter {
    name: String,
    path: PathBuf,
    out: BufWriter<File>,
    crlf: CrlfToLf,
    written: u64,
}

impl MessageWriter {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Message data as received (CRLF line endings).
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let out = &mut self.out;
        let written = &mut self.written;
        self.crlf
            .convert(data, &mut |d| {
                *written += d.len() as u64;
                out.write_all(d)
            })
            .map_err(|e| with_path(e, "cannot write", &self.path))
    }

    /// Ends the message: flushes the buffer (the file is fsynced by
    /// [`Maildir::publish`]).
    pub fn finish(mut self) -> io::Result<Finished> {
        let out = &mut self.out;
        let written = &mut self.written;
        let path = self.path;
        self.crlf
            .finish(&mut |d| {
                *written += d.len() as u64;
                out.write_all(d)
            })
            .map_err(|e| with_path(e, "cannot write", &path))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| with_path(e.into_error(), "cannot write", &path))?;
        Ok(Finished {
            name: self.name,
            file,
            size: self.written,
        })
    }
}

/// A completely written message in `tmp/`, not yet durable or visible.
#[derive(Debug)]
pub struct Finished {
    pub name: String,
    file: File,
    pub size: u64,
}

/// Makes many files durable at once.
///
/// On Linux, for a batch of several files on a local file system whose `syncfs` is a single
/// commit (ext4, XFS, btrfs, F2FS), one `syncfs` replaces one fsync per file: it writes every
/// dirty file of that file system and commits once, which costs about what two or three
/// fsyncs do (the benchmark's scenario B: 10,000 small messages in half the time and a third
/// of the CPU). Linux reports writeback errors through `syncfs` since 5.8. Elsewhere, and
/// for a single file, the files are fsynced, several at a time, so the file system can commit
/// them together.
fn sync_files(messages: &[Finished]) -> io::Result<()> {
    const THREADS: usize = 4;
    if messages.len() == 1 {
        return messages[0].file.sync_all();
    }
    #[cfg(target_os = "linux")]
    if syncfs_is_one_commit(&messages[0].file) {
        return rustix::fs::syncfs(&messages[0].file).map_err(io::Error::from);
    }
    let per = messages.len().div_ceil(THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = messages
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().try_for_each(|m| m.file.sync_all())))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")))
        })
    })
}

/// Whether `file` is on a local file system where `syncfs` flushes and commits everything
/// at once.
#[cfg(target_os = "linux")]
fn syncfs_is_one_commit(file: &File) -> bool {
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    const F2FS: i64 = 0xF2F5_2010;
    if std::env::var_os("POPSYNC_NO_SYNCFS").is_some() {
        return false;
    }
    // f_type is an i64 on some architectures and narrower on others.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::fstatfs(file)
        .map(|st| [EXT4, XFS, BTRFS, F2FS].contains(&(st.f_type as i64)))
        .unwrap_or(false)
}

/// fsyncs a directory, making the names in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| with_path(e, "cannot sync", dir))
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; NTFS journals its metadata.
        let _ = dir;
        Ok(())
    }
}

/// The host part of a Maildir name. Elsewhere the usual escapes (`\057` for `/`, `\072` for
/// `:`) apply; Windows forbids `\`, `:` and several other characters in file names, so there
/// any character outside `[A-Za-z0-9._-]` becomes `_`.
fn escape_host(host: &str) -> String {
    if cfg!(windows) {
        host.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    } else {
        host.replace('/', "\\057").replace(':', "\\072")
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(md: &mut Maildir, data: &[u8]) -> String {
        let name = md.unique_name();
        let mut w = md.create(&name).unwrap();
        w.write(data).unwrap();
        let f = w.finish().unwrap();
        md.publish(&[f]).unwrap();
        md.release(&[&name]);
        name
    }

    #[test]
    fn a_published_message_is_in_new_with_lf_endings_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut md = Maildir::open(&dir.path().join("Mail")).unwrap();
        let name = deliver(&mut md, b"Subject: x\r\n\r\nbody\r\n");
        let path = dir.path().join("Mail/new").join(&name);
        assert_eq!(fs::read(&path).unwrap(), b"Subject: x\n\nbody\n");
        assert_eq!(
            fs::read_dir(dir.path().join("Mail/tmp")).unwrap().count(),
            0
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::metadata(dir.path().join("Mail/new"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o700
            );
        }
    }

    #[test]
    fn names_are_unique_and_carry_no_separators() {
        let mut md = Maildir::at(Path::new("/nonexistent"));
        let a = md.unique_name();
        let b = md.unique_name();
        assert_ne!(a, b);
        assert!(!a.contains('/') && !a.contains(':'), "{a}");
        assert_eq!(escape_host("a/b:c"), "a\\057b\\072c");
    }

    #[test]
    fn publishing_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        fs::write(dir.path().join("new/taken"), b"theirs").unwrap();
        let mut w = md.create("taken").unwrap();
        w.write(b"ours\r\n").unwrap();
        let f = w.finish().unwrap();
        assert!(md.publish(&[f]).is_err());
        assert_eq!(fs::read(dir.path().join("new/taken")).unwrap(), b"theirs");
    }

    #[test]
    fn locate_finds_messages_in_new_cur_or_moved_away_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        // in new/, its tmp/ link still there (crash before the commit)
        fs::write(dir.path().join("new/a"), b"12345").unwrap();
        fs::hard_link(dir.path().join("new/a"), dir.path().join("tmp/a")).unwrap();
        // moved to cur/ by a mail reader
        fs::write(dir.path().join("cur/b:2,S"), b"123").unwrap();
        // partial, only in tmp/
        fs::write(dir.path().join("tmp/c"), b"par").unwrap();
        // linked, then moved to another folder by the user: tmp/ still has two names
        fs::create_dir(dir.path().join("elsewhere")).unwrap();
        fs::write(dir.path().join("elsewhere/e"), b"1234").unwrap();
        fs::hard_link(dir.path().join("elsewhere/e"), dir.path().join("tmp/e")).unwrap();
        let found = md.locate(&["a", "b", "c", "d", "e"]).unwrap();
        assert_eq!(
            found,
            vec![
                PendingLocation::Delivered(5),
                PendingLocation::Delivered(3),
                PendingLocation::Absent,
                PendingLocation::Absent,
                PendingLocation::Delivered(4),
            ]
        );
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            3,
            "locate removes nothing"
        );
    }

    #[test]
    fn locate_refuses_to_guess_when_the_maildir_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::at(&dir.path().join("unmounted"));
        let err = md.locate(&["a"]).unwrap_err();
        assert!(err.to_string().contains("is gone"), "{err}");
    }

    #[test]
    fn stale_tmp_links_of_delivered_messages_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        fs::write(dir.path().join("new/x"), b"1").unwrap();
        fs::hard_link(dir.path().join("new/x"), dir.path().join("tmp/x")).unwrap();
        fs::write(dir.path().join("new/y"), b"1").unwrap();
        fs::hard_link(dir.path().join("new/y"), dir.path().join("tmp/y")).unwrap();
        fs::write(dir.path().join("tmp/z"), b"1").unwrap();
        let stale = md.stale_links(|n| n == "x" || n == "z").unwrap();
        assert_eq!(
            stale,
            vec!["x".to_owned()],
            "only linked files that are recorded delivered"
        );
    }
}
