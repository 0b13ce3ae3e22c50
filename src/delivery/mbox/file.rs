//! An mbox file, locked the way other mail programs expect: appending to it, cutting it back,
//! and finding a recorded append again after a crash.
//!
//! Locking interoperates with mutt, procmail, Dovecot and the like: a dotlock (`FILE.lock`,
//! created atomically; a stale one — older than five minutes, or naming a dead process — is
//! broken) plus a kernel lock on the file (POSIX `fcntl` by default, or `flock`), each with a
//! time limit, and an error naming the holder when it cannot be had.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

use super::{KernelLock, Locking};
use crate::delivery::spool::Spooled;

/// A dotlock older than this is stale (procmail and liblockfile use the same age).
pub const STALE_DOTLOCK: Duration = Duration::from_secs(300);

/// An mbox, locked for appending. Unlocked when dropped.
#[derive(Debug)]
pub struct MboxGuard {
    path: PathBuf,
    file: File,
    dotlock: Option<PathBuf>,
}

/// Where a recorded append got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Complete, at this offset.
    At(u64),
    /// Not in the file.
    Absent,
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Locks `path` (creating the mbox, mode 0600, if it does not exist).
pub fn lock(path: &Path, locking: &Locking) -> io::Result<MboxGuard> {
    let deadline = Instant::now() + locking.timeout;
    let dotlock = if locking.dotlock {
        Some(take_dotlock(path, deadline)?)
    } else {
        None
    };
    let opened = (|| {
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(path)
            .map_err(|e| with_path(e, "cannot open", path))?;
        take_kernel_lock(&file, path, locking.kernel, deadline)?;
        Ok(file)
    })();
    match opened {
        Ok(file) => Ok(MboxGuard {
            path: path.to_owned(),
            file,
            dotlock,
        }),
        Err(e) => {
            if let Some(d) = dotlock {
                let _ = std::fs::remove_file(d);
            }
            Err(e)
        }
    }
}

fn dotlock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// Takes `FILE.lock`: a unique file is written and hard-linked to the lock name, which
/// is atomic even over NFS.
fn take_dotlock(path: &Path, deadline: Instant) -> io::Result<PathBuf> {
    let lock = dotlock_path(path);
    let host = gethostname::gethostname()
        .to_string_lossy()
        .replace(['/', '.'], "_");
    let unique = path.with_file_name(format!(
        ".{}.{}.{}.popsync",
        path.file_name().unwrap_or_default().to_string_lossy(),
        host,
        std::process::id()
    ));
    let mut waited = false;
    loop {
        std::fs::write(&unique, format!("{}\n", std::process::id()))
            .map_err(|e| with_path(e, "cannot create a lock file beside", path))?;
        let linked = std::fs::hard_link(&unique, &lock);
        let _ = std::fs::remove_file(&unique);
        match linked {
            Ok(()) => return Ok(lock),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if break_if_stale(&lock) {
                    continue;
                }
                if !waited {
                    waited = true;
                    tracing::info!(
                        "waiting for {} (another program is using the mbox)",
                        lock.display()
                    );
                }
                if Instant::now() >= deadline {
                    let holder = dotlock_pid(&lock)
                        .map(|p| format!(" (held by process {p})"))
                        .unwrap_or_default();
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "{} is locked{holder}: another program is using the mbox",
                            lock.display()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(with_path(e, "cannot take the lock", &lock)),
        }
    }
}

/// The process id written in a dotlock, if it names one.
fn dotlock_pid(lock: &Path) -> Option<u32> {
    std::fs::read_to_string(lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|&pid| pid != 0)
}

/// Removes a dotlock that is older than [`STALE_DOTLOCK`] or names a process that is gone.
fn break_if_stale(lock: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(lock) else {
        return false; // gone already: try again
    };
    let old = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > STALE_DOTLOCK);
    // liblockfile's dotlockfile and procmail's lockfile write "0" (no pid): only a real pid
    // can be checked.
    let dead = dotlock_pid(lock).is_some_and(|pid| !process_alive(pid));
    if old || dead {
        tracing::warn!(
            "breaking the stale lock {} ({})",
            lock.display(),
            if dead {
                "its process is gone"
            } else {
                "older than 5 minutes"
            }
        );
        let _ = std::fs::remove_file(lock);
        return true;
    }
    false
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    // Only a process on this machine can be checked; /proc says.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: u32) -> bool {
    true
}

#[cfg(unix)]
fn take_kernel_lock(
    file: &File,
    path: &Path,
    kind: KernelLock,
    deadline: Instant,
) -> io::Result<()> {
    use rustix::fs::FlockOperation;
    let attempt = |op| -> io::Result<()> {
        match kind {
            KernelLock::None => Ok(()),
            KernelLock::Fcntl => rustix::fs::fcntl_lock(file, op).map_err(io::Error::from),
            KernelLock::Flock => rustix::fs::flock(file, op).map_err(io::Error::from),
        }
    };
    let mut waited = false;
    loop {
        match attempt(FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(13)
                    || e.raw_os_error() == Some(11) =>
            {
                if !waited {
                    waited = true;
                    tracing::info!(
                        "waiting for the lock on {} (another program is using it)",
                        path.display()
                    );
                }
                if Instant::now() >= deadline {
                    let holder = kernel_lock_holder(file)
                        .map(|p| format!(", held by process {p}"))
                        .unwrap_or_default();
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "{} is locked by another program ({} lock{holder})",
                            path.display(),
                            if kind == KernelLock::Fcntl {
                                "fcntl"
                            } else {
                                "flock"
                            }
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(with_path(e, "cannot lock", path)),
        }
    }
}

/// The process holding a kernel lock on `file`, from /proc/locks (Linux only).
#[cfg(target_os = "linux")]
fn kernel_lock_holder(file: &File) -> Option<u32> {
    let st = rustix::fs::fstat(file).ok()?;
    let dev = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev),
        st.st_ino
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    parse_lock_holder(&locks, &dev, std::process::id())
}

#[cfg(all(unix, not(target_os = "linux")))]
fn kernel_lock_holder(_file: &File) -> Option<u32> {
    None
}

/// Finds the pid holding a lock on the file `dev` ("MAJOR:MINOR:INODE") in /proc/locks text:
/// `1: POSIX  ADVISORY  WRITE 4242 08:01:1234 0 EOF`; blocked waiters (`->`) and this
/// process are not holders.
#[cfg(any(target_os = "linux", test))]
fn parse_lock_holder(locks: &str, dev: &str, me: u32) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            return None;
        }
        let at = fields.iter().position(|f| *f == dev)?;
        let pid: u32 = fields.get(at.checked_sub(1)?)?.parse().ok()?;
        (pid != me).then_some(pid)
    })
}

#[cfg(not(unix))]
fn take_kernel_lock(
    file: &File,
    path: &Path,
    kind: KernelLock,
    deadline: Instant,
) -> io::Result<()> {
    if kind == KernelLock::None {
        return Ok(());
    }
    // The same time limit as elsewhere (mbox-lock-timeout), not a wait without end.
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another program", path.display()),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(with_path(e, "cannot lock", path));
            }
        }
    }
}

impl MboxGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length now.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Appends the spooled messages in order and fsyncs. On failure the file is cut back
    /// to its old length (and fsynced), so no part of the batch stays.
    pub fn append(&mut self, spooled: &[&Spooled]) -> io::Result<()> {
        let start = self.len()?;
        let result = (|| {
            for s in spooled {
                let mut src = File::open(&s.path)?;
                io::copy(&mut src, &mut self.file)?;
                crate::failpoint::hit("mbox-message-appended");
            }
            self.file.flush()?;
            crate::failpoint::hit("mbox-appended");
            self.file.sync_data()
        })();
        if let Err(e) = result {
            let cut = self.file.set_len(start).and_then(|()| self.file.sync_all());
            let e = with_path(e, "cannot append to", &self.path);
            return Err(match cut {
                Ok(()) => e,
                Err(c) => io::Error::new(
                    e.kind(),
                    format!("{e}; and cutting back the partial append failed: {c}"),
                ),
            });
        }
        Ok(())
    }

    /// Cuts the file to `len` (a torn append from an interrupted run) and fsyncs.
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| with_path(e, "cannot cut back", &self.path))
    }

    fn hash_range(&mut self, offset: u64, len: u64) -> io::Result<[u8; 32]> {
        self.file.seek(SeekFrom::Start(offset))?;
        let mut hasher = Sha256::new();
        let mut left = len;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = self.file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(hasher.finalize().into())
    }

    fn starts_with_at(&mut self, offset: u64, prefix: &[u8]) -> io::Result<bool> {
        self.file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; prefix.len()];
        let mut got = 0;
        while got < buf.len() {
            let n = self.file.read(&mut buf[got..])?;
            if n == 0 {
                return Ok(false);
            }
            got += n;
        }
        Ok(buf == prefix)
    }

    /// Finds a recorded append: at its offset, or — if the file was rewritten since (a mail
    /// reader expunged messages) — wherever a `From ` line equal to the recorded one starts
    /// a range with the recorded hash.
    pub fn locate(
        &mut self,
        offset: u64,
        len: u64,
        sha256: &[u8],
        from_line: &str,
    ) -> io::Result<Found> {
        let file_len = self.len()?;
        if offset + len <= file_len && self.hash_range(offset, len)? == *sha256 {
            return Ok(Found::At(offset));
        }
        // Search: read the file line by line for the From line.
        let needle = format!("{from_line}\n");
        self.file.seek(SeekFrom::Start(0))?;
        let mut reader = io::BufReader::new(&self.file);
        let mut pos = 0u64;
        let mut candidates = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = io::BufRead::read_until(&mut reader, b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if line == needle.as_bytes() {
                candidates.push(pos);
            }
            pos += n as u64;
        }
        drop(reader);
        for c in candidates {
            if c + len <= file_len && self.hash_range(c, len)? == *sha256 {
                return Ok(Found::At(c));
            }
        }
        Ok(Found::Absent)
    }

    /// Whether the file ends with a torn (partial) append that began at `offset` with
    /// `from_line`: the tail is shorter than the message and starts with its From line.
    pub fn torn_tail(&mut self, offset: u64, len: u64, from_line: &str) -> io::Result<bool> {
        let file_len = self.len()?;
        if file_len <= offset || file_len >= offset + len {
            return Ok(false);
        }
        self.starts_with_at(offset, from_line.as_bytes())
    }
}

impl Drop for MboxGuard {
    fn drop(&mut self) {
        // The kernel lock goes with the file; the dotlock is removed.
        if let Some(d) = self.dotlock.take() {
            let _ = std::fs::remove_file(d);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::delivery::spool::{SpoolFormat, SpoolWriter};

    #[test]
    fn the_holder_of_a_kernel_lock_is_found_in_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 4242 08:01:1234 0 EOF\n\
                     1: -> POSIX  ADVISORY  WRITE 777 08:01:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 5151 08:01:99 0 EOF\n";
        assert_eq!(parse_lock_holder(locks, "08:01:1234", 1), Some(4242));
        assert_eq!(parse_lock_holder(locks, "08:01:99", 1), Some(5151));
        assert_eq!(parse_lock_holder(locks, "08:01:99", 5151), None);
        assert_eq!(parse_lock_holder(locks, "08:01:12", 1), None);
    }

    fn locking(dotlock: bool, kernel: KernelLock, secs: u64) -> Locking {
        Locking {
            dotlock,
            kernel,
            timeout: Duration::from_secs(secs),
        }
    }

    fn spooled(dir: &Path, n: usize, body: &str) -> Spooled {
        let mut w = SpoolWriter::create(&dir.join(format!("s{n}")), SpoolFormat::Mboxrd).unwrap();
        let message = format!("From: a@b\r\nSubject: {n}\r\n\r\n{body}\r\n");
        let mut head = crate::summary::Head::default();
        head.feed(message.as_bytes());
        w.write(message.as_bytes(), &head).unwrap();
        w.finish(&head).unwrap()
    }

    #[test]
    fn appends_are_found_where_they_were_recorded_and_after_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (a, b) = (spooled(dir.path(), 1, "one"), spooled(dir.path(), 2, "two"));
        let mut g = lock(&path, &locking(true, KernelLock::Fcntl, 5)).unwrap();
        assert!(dotlock_path(&path).exists());
        g.append(&[&a, &b]).unwrap();
        assert_eq!(
            g.locate(0, a.len, &a.sha256, &a.from_line).unwrap(),
            Found::At(0)
        );
        assert_eq!(
            g.locate(a.len, b.len, &b.sha256, &b.from_line).unwrap(),
            Found::At(a.len)
        );
        drop(g);
        assert!(!dotlock_path(&path).exists(), "unlocked on drop");
        // A mail reader removes the first message: the second is found anyway.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[a.len as usize..]).unwrap();
        let mut g = lock(&path, &locking(false, KernelLock::Fcntl, 5)).unwrap();
        assert_eq!(
            g.locate(a.len, b.len, &b.sha256, &b.from_line).unwrap(),
            Found::At(0)
        );
        assert_eq!(
            g.locate(0, a.len, &a.sha256, &a.from_line).unwrap(),
            Found::Absent
        );
    }

    #[test]
    fn a_torn_tail_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let a = spooled(dir.path(), 1, "a fairly long body line");
        let full = std::fs::read(&a.path).unwrap();
        std::fs::write(&path, b"From x Mon Jan  1 00:00:00 2024\nold\n\n").unwrap();
        let offset = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&full[..full.len() / 2]).unwrap();
        let mut g = lock(&path, &locking(true, KernelLock::Flock, 5)).unwrap();
        assert!(g.torn_tail(offset, a.len, &a.from_line).unwrap());
        assert!(
            !g.torn_tail(0, a.len, &a.from_line).unwrap(),
            "the old message is not ours"
        );
        g.truncate(offset).unwrap();
        assert_eq!(g.len().unwrap(), offset);
    }

    #[test]
    fn a_held_dotlock_makes_popsync_wait_then_give_up_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        std::fs::write(dotlock_path(&path), format!("{}\n", std::process::id())).unwrap();
        let t = Instant::now();
        let err = lock(&path, &locking(true, KernelLock::None, 1)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_secs(1));
        assert!(
            err.to_string()
                .contains(&format!("held by process {}", std::process::id())),
            "{err}"
        );
        // A lock naming a process that is gone is stale and broken at once.
        std::fs::write(dotlock_path(&path), "999999999\n").unwrap();
        lock(&path, &locking(true, KernelLock::None, 1)).unwrap();
    }
}
