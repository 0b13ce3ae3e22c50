//! Delivery into a mailbox on an IMAP server (`imap-destination = "NAME"`, naming an
//! `[[imap]]` section of the file): each new message APPENDed, exactly once.
//!
//! The message goes as it came from the POP3 server: byte for byte, every line ending in
//! CRLF, with no flags (so not `\Seen`) and the internal date of its own Date header.
//! A batch is spooled first (see [`super::spool`]), so each message's length and SHA-256
//! are known before anything is sent. Then, for a batch:
//!
//! 1. each message is recorded *pending* with what identifies it in the destination: its
//!    Message-ID, its length and SHA-256, the mailbox's UIDVALIDITY and the lowest UID it
//!    can get there (the mailbox's UIDNEXT before the append);
//! 2. the batch is appended: one MULTIAPPEND command (RFC 3502) where the server offers it,
//!    else one APPEND per message, pipelined; literals go without waiting for the server's
//!    `+` where it offers LITERAL+ (or LITERAL- for small ones), RFC 7888;
//! 3. the UIDs the server gives (UIDPLUS `APPENDUID`, RFC 4315) are recorded;
//! 4. only then is each message marked *delivered* — and only a delivered message may be
//!    deleted from the POP3 server.
//!
//! After a crash anywhere in there, recovery (`recover`) asks the destination: a message
//! whose UID was recorded is there; any other is looked for among the UIDs from its lowest
//! possible one up (`UID SEARCH UID n:* HEADER Message-ID ...`, or by its exact size when it
//! has none), and each candidate's bytes are read (`BODY.PEEK[]`, which does not mark it
//! seen) and hashed: the same length and SHA-256 means it got there, anything else means it
//! did not, and it is downloaded and appended again. No guessing, no second copy.
//!
//! A server without UIDPLUS gives no UIDs: the lowest possible UID is then asked for (STATUS
//! UIDNEXT) before each batch, and recovery always searches.

mod append;
mod recover;
pub mod section;

use std::any::Any;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use super::spool::{SpoolFormat, SpoolingTarget};
use super::{Delivery, DeliveryError, Destination, Kind, Setup, Target};
use crate::exit::ErrorClass;
use crate::imap::{Error as ImapError, wire::Tagged};
use crate::keys::{Checker, Layered, keys};

pub use section::{Section, section_keys};

/// The IMAP kind of target.
pub const KIND: Kind = Kind {
    name: "imap",
    example: "imap-destination = \"NAME\" (an [[imap]] section)",
    keys: DestinationKeys::DOCS,
    configure,
    recover: recover::recover,
};

keys! {
    /// Delivery into an IMAP mailbox.
    struct DestinationKeys {
        /// Append each message to the IMAP mailbox of the `[[imap]]` section of this name.
        destination: "imap-destination" { default: "", example: "\"gmail\"" },
    }
}

fn configure(c: &mut Checker<'_>, layers: &Layered<'_>) -> Option<Delivery> {
    let keys = DestinationKeys::take(layers);
    let (name, at) = keys.destination.string(c)?;
    let found = c
        .named
        .iter()
        .find(|(table, n, _)| *table == section::TABLE && n == name)
        .map(|(_, _, s)| s.clone());
    match found.map(|s| s.downcast::<Section>()) {
        Some(Ok(section)) => Some(Delivery::new(Settings { section })),
        // There, but with problems of its own, told in its place.
        Some(Err(_)) => None,
        None => {
            let mut names: Vec<String> = c
                .named
                .iter()
                .filter(|(table, ..)| *table == section::TABLE)
                .map(|(_, n, _)| format!("{n:?}"))
                .collect();
            names.dedup();
            c.problem(
                Some(at),
                Some("imap-destination"),
                if names.is_empty() {
                    format!("no [[imap]] section is named {name:?} (the file has none)")
                } else {
                    format!(
                        "no [[imap]] section is named {name:?} (there are {})",
                        names.join(", ")
                    )
                },
            );
            None
        }
    }
}

/// Reads the file's `[[imap]]` sections, for accounts to name; OAuth2 token files are kept
/// in `state_dir`.
pub fn read_sections(
    c: &mut Checker<'_>,
    value: Option<&toml::Spanned<toml::de::DeValue<'_>>>,
    state_dir: Option<&std::path::Path>,
) {
    section::read_all(c, value, state_dir);
}

/// Where an account's mail goes: a mailbox on an IMAP server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub section: Arc<Section>,
}

impl Destination for Settings {
    fn describe(&self) -> String {
        format!(
            "the IMAP mailbox {:?} of {} ({} at {})",
            self.section.mailbox,
            self.section.name,
            self.section.login.username,
            self.section.server.host
        )
    }

    fn hook_env(&self) -> Option<(&'static str, &Path)> {
        None
    }

    /// Connects and logs in now, and makes sure the mailbox is there, before anything is
    /// downloaded.
    fn open(&self, setup: &Setup<'_>) -> Result<Box<dyn Target>, DeliveryError> {
        let appender = append::Appender::connect(self.section.clone())?;
        Ok(Box::new(SpoolingTarget::new(
            setup.spool_dir()?,
            SpoolFormat::Wire,
            appender,
        )))
    }

    /// Connects, logs in and asks for the mailbox's status, changing nothing.
    fn check_local(&self) -> Result<String, DeliveryError> {
        let section = self.section.clone();
        let link = Link::new(&section)?;
        let found = link.run(|| async {
            let mut client = section.session().await?;
            let status = client.status(&section.mailbox).await;
            let offers = ["UIDPLUS", "MULTIAPPEND", "LITERAL+", "LITERAL-"]
                .into_iter()
                .filter(|w| client.capabilities().has(w))
                .collect::<Vec<_>>()
                .join(", ");
            client.logout().await;
            status
                .map(|_| offers)
                .map_err(|e| section.failure(e, "asking for the mailbox's status"))
        })?;
        Ok(format!(
            "{}: there, and popsync can log in{}",
            self.describe(),
            if found.is_empty() {
                " (the server offers none of UIDPLUS, MULTIAPPEND, LITERAL+: one round trip per message)".to_owned()
            } else {
                format!(" (the server offers {found})")
            }
        ))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Why delivery into an IMAP mailbox did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImapFailure {
    /// The destination could not be reached, or its session failed.
    #[error("IMAP destination {name:?} ({host}): {doing}")]
    Session {
        name: String,
        host: String,
        doing: &'static str,
        #[source]
        source: Box<ImapError>,
    },
    /// Its login secret could not be had.
    #[error("IMAP destination {name:?}: no password")]
    Password {
        name: String,
        #[source]
        source: crate::config::secret::PasswordError,
    },
    #[error("IMAP destination {name:?}: cannot read its ca-file {}", .path.display())]
    CaFile {
        name: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The mailbox is not there.
    #[error(
        "the IMAP mailbox {mailbox:?} of {name:?} does not exist ({answer}): create it first (for Gmail, the label), or set `mailbox` in the [[imap]] section; nothing was downloaded"
    )]
    NoMailbox {
        name: String,
        mailbox: String,
        answer: Box<Tagged>,
    },
    /// The server would not take messages.
    #[error(
        "the IMAP mailbox {mailbox:?} of {name:?} refused {count} message(s): {answer}{}",
        advice(.answer)
    )]
    Refused {
        name: String,
        mailbox: String,
        count: usize,
        answer: Box<Tagged>,
    },
}

/// What the user can do about a refusal, from its response code.
fn advice(answer: &Tagged) -> &'static str {
    match answer.code_name().as_deref() {
        Some("OVERQUOTA") | Some("LIMIT") => {
            " (the mailbox is full: make room there; nothing was deleted from the POP3 server, and the messages are appended when there is room)"
        }
        Some("TRYCREATE") | Some("NONEXISTENT") => {
            " (create the mailbox first — for Gmail, the label — or set `mailbox` in the [[imap]] section; nothing was deleted from the POP3 server)"
        }
        _ => " (nothing was deleted from the POP3 server)",
    }
}

impl ImapFailure {
    /// The name of the `[[imap]]` section it is about.
    pub fn section(&self) -> &str {
        match self {
            Self::Session { name, .. }
            | Self::Password { name, .. }
            | Self::CaFile { name, .. }
            | Self::NoMailbox { name, .. }
            | Self::Refused { name, .. } => name,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Session { source, .. } => class_of(source),
            Self::Refused { answer, .. } => match answer.code_name().as_deref() {
                Some("TRYCREATE" | "NONEXISTENT") => ErrorClass::Config,
                _ => ErrorClass::Temporary,
            },
            Self::Password { source, .. } => source.class(),
            Self::CaFile { .. } | Self::NoMailbox { .. } => ErrorClass::Config,
        }
    }
}

fn class_of(e: &ImapError) -> ErrorClass {
    match e {
        ImapError::Login { .. } => ErrorClass::Auth,
        // Connecting, TLS, time limits: as for a POP3 server (a certificate not trusted is
        // Auth, plain TLS where the server has none is Config).
        ImapError::Transport(p) => ErrorClass::of_pop3(p),
        ImapError::NoStartTls | ImapError::NoLoginMethod(_) => ErrorClass::Config,
        ImapError::Spool(_) => ErrorClass::Local,
        ImapError::Refused { answer, .. }
            if matches!(
                answer.code_name().as_deref(),
                Some("TRYCREATE" | "NONEXISTENT")
            ) =>
        {
            ErrorClass::Config
        }
        e if e.is_transient() => ErrorClass::Temporary,
        // Refused for want of permission, and the like.
        _ => ErrorClass::Auth,
    }
}

/// A runtime of the destination's own, driven from a thread of its own: delivery is called
/// from inside a fetch's runtime, where another cannot be entered, and the IMAP session
/// lives across the fetch's batches.
#[derive(Debug)]
struct Link {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Link {
    fn new(section: &Section) -> Result<Self, DeliveryError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ImapFailure::Session {
                name: section.name.clone(),
                host: section.server.host.clone(),
                doing: "starting its runtime",
                source: Box::new(ImapError::Transport(
                    crate::pop3::ErrorKind::Io(source).into(),
                )),
            })?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs the future `work` makes to its end, on a thread of its own.
    fn run<T: Send, F: Future<Output = T>>(&self, work: impl FnOnce() -> F + Send) -> T {
        let runtime = self.runtime.as_ref().expect("until dropped");
        // What it logs is marked with the account, as the rest of the fetch is.
        let span = tracing::Span::current();
        std::thread::scope(|s| {
            s.spawn(|| span.in_scope(|| runtime.block_on(work())))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Dropped inside the fetch's runtime, where a runtime may not block.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
