//! Delivery through an MDA: a program (procmail, maildrop, dovecot-lda ...) that takes each
//! message on its standard input.
//!
//! The message comes from its spool file (LF line endings, a `From ` line in front if the
//! account says `mda-from-line = true`); the program is run as program and arguments, never
//! through a shell, with `POPSYNC_ACCOUNT` and `POPSYNC_SENDER` (the envelope sender) in its
//! environment. Exit status 0 means delivered; 75 (EX_TEMPFAIL) means try again later;
//! anything else is a delivery error. Both stop the session before any DELE. Its standard
//! error is logged. It has a time limit, after which it is killed.
//!
//! popsync cannot see inside an MDA: if popsync is killed after the MDA took a message but
//! before popsync recorded that, the message is handed over again next time. Delivery through
//! an MDA is therefore at least once, not exactly once; procmail users can drop duplicates
//! with `formail -D` (see the README).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::spool::Spooled;

/// How an MDA run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdaOutcome {
    Delivered,
    /// Exit status 75: the MDA asks to be tried again later.
    TryLater {
        stderr: String,
    },
    Failed {
        status: String,
        stderr: String,
    },
    TimedOut,
    NotStarted(String),
}

/// Hands `message` to the MDA `argv`.
pub fn deliver(argv: &[String], message: &Spooled, account: &str, limit: Duration) -> MdaOutcome {
    let stdin = match std::fs::File::open(&message.path) {
        Ok(f) => f,
        Err(e) => return MdaOutcome::NotStarted(format!("cannot read the spooled message: {e}")),
    };
    let mut command = Command::new(&argv[0]);
    // Its own process group, so a timeout ends whatever it started too (a shell's children
    // would otherwise live on, holding the stderr pipe).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = match command
        .args(&argv[1..])
        .env("POPSYNC_ACCOUNT", account)
        .env("POPSYNC_SENDER", &message.sender)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return MdaOutcome::NotStarted(format!("{:?} could not be started: {e}", argv[0]));
        }
    };
    // stderr is read on a thread so a chatty MDA never blocks on a full pipe.
    let mut pipe = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = (&mut pipe).take(64 * 1024).read_to_end(&mut err);
        let _ = tx.send(String::from_utf8_lossy(&err).trim().to_owned());
        // Drain the rest without keeping it.
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return MdaOutcome::NotStarted(e.to_string()),
        }
    };
    // A program that left something running in the background with our stderr pipe must not
    // hold popsync up: what it said by now is enough.
    let stderr = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    match status {
        None => MdaOutcome::TimedOut,
        Some(s) if s.success() => {
            if !stderr.is_empty() {
                tracing::info!("{account}: the MDA said: {stderr}");
            }
            MdaOutcome::Delivered
        }
        Some(s) if s.code() == Some(75) => MdaOutcome::TryLater { stderr },
        Some(s) => MdaOutcome::Failed {
            status: s.to_string(),
            stderr,
        },
    }
}

/// Kills the MDA and everything in its process group.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::delivery::spool::{SpoolFormat, SpoolWriter};

    fn spool(dir: &std::path::Path) -> Spooled {
        let mut w =
            SpoolWriter::create(&dir.join("m"), SpoolFormat::Plain { from_line: false }).unwrap();
        w.write(b"Return-Path: <s@example.org>\r\nSubject: hi\r\n\r\nbody\r\n")
            .unwrap();
        w.finish().unwrap()
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_mda_gets_the_message_and_its_sender() {
        let dir = tempfile::tempdir().unwrap();
        let m = spool(dir.path());
        let out = dir.path().join("out");
        let script = format!(
            "cat > '{}'; printf '%s %s' \"$POPSYNC_ACCOUNT\" \"$POPSYNC_SENDER\" >> '{}'",
            out.display(),
            out.display()
        );
        let r = deliver(
            &argv(&["sh", "-c", &script]),
            &m,
            "home",
            Duration::from_secs(10),
        );
        assert_eq!(r, MdaOutcome::Delivered);
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            "Return-Path: <s@example.org>\nSubject: hi\n\nbody\nhome s@example.org"
        );
    }

    #[test]
    fn exit_75_failure_timeout_and_a_missing_program() {
        let dir = tempfile::tempdir().unwrap();
        let m = spool(dir.path());
        let r = deliver(
            &argv(&["sh", "-c", "cat >/dev/null; echo busy >&2; exit 75"]),
            &m,
            "a",
            Duration::from_secs(10),
        );
        assert_eq!(
            r,
            MdaOutcome::TryLater {
                stderr: "busy".into()
            }
        );
        let r = deliver(
            &argv(&["sh", "-c", "cat >/dev/null; echo nope >&2; exit 1"]),
            &m,
            "a",
            Duration::from_secs(10),
        );
        assert!(
            matches!(&r, MdaOutcome::Failed { stderr, .. } if stderr == "nope"),
            "{r:?}"
        );
        let t = Instant::now();
        let r = deliver(&argv(&["sleep", "30"]), &m, "a", Duration::from_millis(300));
        assert_eq!(r, MdaOutcome::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
        // A shell whose child holds the stderr pipe: the whole group goes.
        let t = Instant::now();
        let r = deliver(
            &argv(&["sh", "-c", "sleep 30; true"]),
            &m,
            "a",
            Duration::from_millis(300),
        );
        assert_eq!(r, MdaOutcome::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Exit 0 with a background child still holding stderr: not waited for.
        let t = Instant::now();
        let r = deliver(
            &argv(&["sh", "-c", "cat >/dev/null; sleep 30 & exit 0"]),
            &m,
            "a",
            Duration::from_secs(10),
        );
        assert_eq!(r, MdaOutcome::Delivered);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let r = deliver(
            &argv(&["/nonexistent/mda"]),
            &m,
            "a",
            Duration::from_secs(1),
        );
        assert!(matches!(r, MdaOutcome::NotStarted(_)), "{r:?}");
    }
}
