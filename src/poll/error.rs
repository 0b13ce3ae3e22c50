//! Why a fetch failed, and the questions the callers ask of it: how to exit, what kind of
//! problem to tell the user about, and how long to wait before trying again. Each error
//! answers for itself; this is the one place that puts the answers together.

use std::time::Duration;

use crate::delivery::DeliveryError;
use crate::delivery::imap::ImapFailure;
use crate::exit::ErrorClass;
use crate::imap::Error as ImapError;
use crate::lock::LockError;
use crate::pop3::{self, ResponseCode, Status};
use crate::store::StoreError;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Pop3(#[from] pop3::Error),
    #[error("could not get the {}", if .0.is_token() { "OAuth2 token" } else { "password" })]
    Password(#[from] crate::config::secret::PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read ca-file {}", .path.display())]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the server refused to hand out {count} message{} (they stay on the server and are tried again next time); the first answer was: {first}",
        if *.count == 1 { "" } else { "s" }
    )]
    Refused { count: u64, first: Status },
    #[error("{STOPPED}")]
    Stopped,
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// What a fetch stopped by a shutdown says, as recorded for `status` (which tells it from a
/// failure by it).
pub const STOPPED: &str = "stopped: popsync is shutting down (what arrived so far is stored)";

/// What kind of problem a failure is, as the user would put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The server's certificate is not the one pinned with `tls-fingerprint`.
    CertificateChanged,
    /// The server's certificate is not trusted.
    CertificateUntrusted,
    /// The server refused the login.
    LoginRefused,
    /// The password or token could not be had.
    NoPassword,
    /// The OAuth2 sign-in is missing, revoked or expired: `popsync oauth2 login` again.
    SignInNeeded,
    /// The account cannot work as configured with this server.
    Misconfigured,
    /// Anything else: usually passing trouble.
    Other,
}

fn password_problem(e: &crate::config::secret::PasswordError) -> Problem {
    match e {
        crate::config::secret::PasswordError::OAuth2(e) => match e {
            crate::oauth2::Error::SignInNeeded { .. } => Problem::SignInNeeded,
            // An authorization server that cannot be reached: passing trouble.
            e if e.class() == ErrorClass::Temporary => Problem::Other,
            _ => Problem::NoPassword,
        },
        _ => Problem::NoPassword,
    }
}

/// The problems of an IMAP destination are those of an account: its login, its secret, its
/// certificate; the rest (a missing mailbox, a server without STARTTLS) needs its
/// `[[imap]]` section fixed, and the error says what.
fn imap_problem(e: &ImapFailure) -> Problem {
    let session = match e {
        ImapFailure::Password { source, .. } => return password_problem(source),
        ImapFailure::Session { source, .. } => Some(&**source),
        _ => None,
    };
    match session {
        Some(ImapError::Login { .. }) => Problem::LoginRefused,
        Some(ImapError::Transport(p)) if p.is_fingerprint_mismatch() => Problem::CertificateChanged,
        Some(ImapError::Transport(p)) if p.is_certificate() => Problem::CertificateUntrusted,
        _ if matches!(e.class(), ErrorClass::Temporary | ErrorClass::Local) => Problem::Other,
        _ => Problem::Misconfigured,
    }
}

/// How long a server that asks for a delay between logins (`[LOGIN-DELAY]`) is left alone
/// when it does not say how long.
pub const LOGIN_DELAY_DEFAULT: Duration = Duration::from_secs(15 * 60);
/// How long a mailbox another client has open (`[IN-USE]`) is left alone.
pub const IN_USE_DELAY: Duration = Duration::from_secs(60);

impl FetchError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Pop3(e) => ErrorClass::of_pop3(e),
            Self::Password(e) => e.class(),
            Self::Delivery(e) => e.class(),
            Self::Store(_) | Self::Runtime(_) => ErrorClass::Local,
            Self::Lock(LockError::Busy { .. }) => ErrorClass::Temporary,
            Self::Lock(_) => ErrorClass::Local,
            Self::CaFile { .. } => ErrorClass::Config,
            Self::Refused { .. } | Self::Stopped => ErrorClass::Temporary,
        }
    }

    /// What kind of problem this is for the user.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Pop3(p) if p.is_fingerprint_mismatch() => Problem::CertificateChanged,
            Self::Pop3(p) if p.is_certificate() => Problem::CertificateUntrusted,
            Self::Pop3(p) if p.is_auth() => Problem::LoginRefused,
            Self::Password(e) => password_problem(e),
            Self::Delivery(DeliveryError::Imap(e)) => imap_problem(e),
            _ if self.class() == ErrorClass::Config => Problem::Misconfigured,
            _ => Problem::Other,
        }
    }

    /// The `[[imap]]` section whose destination failed, if that is what failed (its
    /// problems are fixed there, not in the account).
    pub fn imap_destination(&self) -> Option<&str> {
        match self {
            Self::Delivery(DeliveryError::Imap(e)) => Some(e.section()),
            _ => None,
        }
    }

    /// The server could not be reached, broke off, or said it was busy: trouble every
    /// account on that server shares (not a refused login, a certificate, our own disk, or
    /// one mailbox being in use or asking for time between logins).
    pub fn is_server_side(&self) -> bool {
        matches!(self, Self::Pop3(p) if p.is_transient()
            && !matches!(p.kind(), pop3::ErrorKind::InUse(_) | pop3::ErrorKind::LoginDelay { .. }))
    }

    /// What went wrong, in words for people rather than for a log: "connection refused by
    /// pop.example.net:995", without error numbers.
    pub fn plainly(&self) -> String {
        use pop3::ErrorKind;
        let text = match self {
            Self::Pop3(p) => match p.kind() {
                ErrorKind::Connect { address, source } => match source.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        format!("connection refused by {address}")
                    }
                    std::io::ErrorKind::TimedOut => {
                        format!(
                            "no answer from {address} (it may be down, or a firewall is in the way)"
                        )
                    }
                    std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::HostUnreachable => {
                        format!("{address} cannot be reached from this network")
                    }
                    _ => format!("cannot connect to {address}: {source}"),
                },
                ErrorKind::Resolve { host, .. } => format!(
                    "the server name {host} cannot be looked up (no network yet, or a typo in host)"
                ),
                ErrorKind::Timeout { phase, .. } => {
                    format!("the server stopped answering (while waiting for {phase})")
                }
                _ => crate::error_chain(self),
            },
            _ => crate::error_chain(self),
        };
        without_error_numbers(&text)
    }

    /// How long the server asked to be left alone, if it did.
    pub fn server_asks_to_wait(&self) -> Option<Duration> {
        match self {
            Self::Pop3(p) => match p.response_code()? {
                ResponseCode::LoginDelay => match p.kind() {
                    pop3::ErrorKind::LoginDelay {
                        next_login: Some((_, delay)),
                        ..
                    } => Some(Duration::from_secs(*delay)),
                    _ => Some(LOGIN_DELAY_DEFAULT),
                },
                ResponseCode::InUse => Some(IN_USE_DELAY),
                _ => None,
            },
            _ => None,
        }
    }
}

/// `text` without the " (os error 111)" the standard library adds to system errors.
fn without_error_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" (os error ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " (os error ".len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(')') {
            rest = &after[digits + 1..];
        } else {
            out.push_str(" (os error ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(kind: std::io::ErrorKind) -> FetchError {
        FetchError::Pop3(
            pop3::ErrorKind::Connect {
                address: "pop.example.net:995".into(),
                source: std::io::Error::from(kind),
            }
            .into(),
        )
    }

    #[test]
    fn errors_read_plainly_for_people() {
        let refused = connect(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            refused.plainly(),
            "connection refused by pop.example.net:995"
        );
        assert!(refused.is_server_side());
        assert!(
            connect(std::io::ErrorKind::TimedOut)
                .plainly()
                .starts_with("no answer from pop.example.net:995")
        );
        let io =
            FetchError::Pop3(pop3::ErrorKind::Io(std::io::Error::from_raw_os_error(104)).into());
        assert!(!io.plainly().contains("os error"), "{}", io.plainly());
        assert!(
            io.plainly().starts_with("connection error: "),
            "{}",
            io.plainly()
        );
        assert_eq!(
            without_error_numbers("a (os error 2): b (os error x) c (os error 13)"),
            "a: b (os error x) c"
        );
    }
}
