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

use std::any::Any;
use std::path::Path;
use std::time::Duration;

use tracing::warn;

use super::spool::{Handover, SpoolFormat, Spooled, SpoolingTarget};
use super::{Delivery, DeliveryError, Destination, Journal, Kind, Recovery, Setup, Target};
use crate::child;
use crate::keys::{Checker, Layered, keys};
use crate::store::{PendingRow, Place};

/// The MDA kind of target.
pub const KIND: Kind = Kind {
    name: "mda",
    example: "mda = [\"procmail\"]",
    keys: MdaKeys::DOCS,
    configure,
    recover,
};

keys! {
    /// Delivery through an MDA.
    struct MdaKeys {
        /// Hand each message to this program on its standard input (program and arguments,
        /// no shell); exit status 0 means delivered, 75 try again later.
        mda: "mda" { default: "", example: "[\"procmail\"] or [\"/usr/lib/dovecot/deliver\"]" },
        /// Put an mbox `From ` line before the message.
        from_line: "mda-from-line" { default: "false", example: "true" },
        /// How long the MDA may take for one message before it is stopped.
        timeout: "mda-timeout" { default: "\"5m\"", example: "\"1m\"" },
    }
}

fn configure(c: &mut Checker<'_>, layers: &Layered<'_>) -> Option<Delivery> {
    let keys = MdaKeys::take(layers);
    let argv = keys.mda.argv(c)?;
    let (from_line, _) = keys.from_line.boolean(c, false);
    let timeout = keys
        .timeout
        .duration(c, Duration::from_secs(300), Duration::from_secs(1));
    Some(Delivery::new(Settings {
        argv,
        from_line,
        timeout,
    }))
}

/// The program an account's mail is handed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Put an mbox `From ` line before the message (`mda-from-line`).
    pub from_line: bool,
    /// How long it may take for one message (`mda-timeout`).
    pub timeout: Duration,
}

impl Destination for Settings {
    fn describe(&self) -> String {
        format!("the MDA {:?}", self.argv[0])
    }

    fn hook_env(&self) -> Option<(&'static str, &Path)> {
        None
    }

    fn open(&self, setup: &Setup<'_>) -> Result<Box<dyn Target>, DeliveryError> {
        let format = SpoolFormat::Plain {
            from_line: self.from_line,
        };
        Ok(Box::new(SpoolingTarget::new(
            setup.spool_dir()?,
            format,
            HandOver {
                settings: self.clone(),
                account: setup.account.to_owned(),
            },
        )))
    }

    /// The program found (by its path, or on `$PATH`) and executable.
    fn check_local(&self) -> Result<String, DeliveryError> {
        let program = &self.argv[0];
        let candidates: Vec<std::path::PathBuf> =
            if program.contains(std::path::MAIN_SEPARATOR) || program.contains('/') {
                vec![std::path::PathBuf::from(program)]
            } else {
                std::env::var_os("PATH")
                    .map(|paths| {
                        std::env::split_paths(&paths)
                            .map(|dir| dir.join(program))
                            .collect()
                    })
                    .unwrap_or_default()
            };
        match candidates.iter().find(|p| is_executable(p)) {
            Some(found) => Ok(format!("{}: found, {}", self.describe(), found.display())),
            None => Err(DeliveryError::Mda(MdaFailure::NotStarted(format!(
                "{program:?} {}",
                if candidates.len() == 1 {
                    "is not an executable file"
                } else {
                    "is not found on $PATH"
                }
            )))),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A file that can be run.
fn is_executable(path: &Path) -> bool {
    let Ok(m) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        m.is_file() && m.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        m.is_file()
    }
}

/// Handing a spooled batch to the MDA, one message at a time.
#[derive(Debug)]
struct HandOver {
    settings: Settings,
    account: String,
}

impl Handover for HandOver {
    /// One message at a time: pending, handed over, delivered. Anything but success stops
    /// the batch there.
    fn deliver(
        &mut self,
        arrived: Vec<(usize, Spooled)>,
        journal: &mut Journal<'_>,
    ) -> Result<(), DeliveryError> {
        let Settings { argv, timeout, .. } = &self.settings;
        let mut result = Ok(());
        for (index, s) in arrived {
            if result.is_err() {
                s.remove();
                continue;
            }
            let place = Place {
                kind: KIND.name.to_owned(),
                ..Place::default()
            };
            if let Err(e) = journal.record_pending(&[(index, place)]) {
                result = Err(e.into());
                s.remove();
                continue;
            }
            let outcome = deliver(argv, &s, &self.account, *timeout);
            s.remove();
            match outcome {
                MdaOutcome::Delivered => {
                    crate::failpoint::hit("published");
                    if let Err(e) = journal.mark_delivered(&[(index, s.len)]) {
                        result = Err(e.into());
                    }
                }
                other => {
                    let _ = journal.drop_pending(&[index]);
                    result = Err(MdaFailure::from_outcome(&argv[0], other, *timeout).into());
                }
            }
        }
        result
    }
}

/// popsync cannot know whether the MDA took a message it was handing over when it stopped:
/// it is handed over again (at least once).
fn recover(
    r: &mut Recovery<'_>,
    rows: &[&PendingRow],
    _current: &Delivery,
) -> Result<(), DeliveryError> {
    r.not_delivered(rows)?;
    warn!(
        "{} message(s) were being handed to the MDA when popsync stopped; they will be handed over again (an MDA gets each message at least once)",
        rows.len()
    );
    Ok(())
}

/// Why an MDA did not take a message (the session stopped there, before any DELE).
#[derive(Debug, thiserror::Error)]
pub enum MdaFailure {
    #[error("the MDA {program:?} asks to try again later (exit status 75){}", note(.stderr))]
    TryLater { program: String, stderr: String },
    #[error("the MDA {program:?} failed ({status}){}", note(.stderr))]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error(
        "the MDA {program:?} did not finish within mda-timeout ({}) and was stopped",
        crate::keys::duration::format_duration(*.limit)
    )]
    TimedOut { program: String, limit: Duration },
    #[error("the MDA could not be run: {0}")]
    NotStarted(String),
}

fn note(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl MdaFailure {
    pub fn class(&self) -> crate::exit::ErrorClass {
        use crate::exit::ErrorClass;
        match self {
            Self::TryLater { .. } | Self::TimedOut { .. } => ErrorClass::Temporary,
            Self::NotStarted(_) => ErrorClass::Config,
            Self::Failed { .. } => ErrorClass::Local,
        }
    }

    fn from_outcome(program: &str, outcome: MdaOutcome, limit: Duration) -> Self {
        let program = program.to_owned();
        match outcome {
            MdaOutcome::TryLater { stderr } => Self::TryLater { program, stderr },
            MdaOutcome::Failed { status, stderr } => Self::Failed {
                program,
                status,
                stderr,
            },
            MdaOutcome::TimedOut => Self::TimedOut { program, limit },
            MdaOutcome::NotStarted(e) => Self::NotStarted(e),
            MdaOutcome::Delivered => Self::NotStarted("delivered".into()),
        }
    }
}

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

/// Hands `message` to the MDA `argv` (see [`crate::child`] for how it is run).
pub fn deliver(argv: &[String], message: &Spooled, account: &str, limit: Duration) -> MdaOutcome {
    let stdin = match std::fs::File::open(&message.path) {
        Ok(f) => f,
        Err(e) => return MdaOutcome::NotStarted(format!("cannot read the spooled message: {e}")),
    };
    let spec = child::Spec {
        env: vec![
            ("POPSYNC_ACCOUNT", account.into()),
            ("POPSYNC_SENDER", message.sender.clone().into()),
        ],
        stdin: child::Input::File(stdin),
        capture_stdout: false,
        ..child::Spec::new(argv, Some(limit))
    };
    match child::run(spec) {
        child::Ended::NotStarted(e) => {
            MdaOutcome::NotStarted(format!("{:?} could not be started: {e}", argv[0]))
        }
        child::Ended::TimedOut { .. } => MdaOutcome::TimedOut,
        child::Ended::Exited { status, stderr, .. } => {
            let stderr = child::text(&stderr);
            if status.success() {
                if !stderr.is_empty() {
                    tracing::info!("the MDA said: {stderr}");
                }
                MdaOutcome::Delivered
            } else if status.code() == Some(75) {
                MdaOutcome::TryLater { stderr }
            } else {
                MdaOutcome::Failed {
                    status: status.to_string(),
                    stderr,
                }
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::delivery::spool::SpoolWriter;
    use crate::summary::Head;
    use std::time::Instant;

    fn spool(dir: &std::path::Path) -> Spooled {
        let mut w =
            SpoolWriter::create(&dir.join("m"), SpoolFormat::Plain { from_line: false }).unwrap();
        let message = b"Return-Path: <s@example.org>\r\nSubject: hi\r\n\r\nbody\r\n";
        let mut head = Head::default();
        head.feed(message);
        w.write(message, &head).unwrap();
        w.finish(&head).unwrap()
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
