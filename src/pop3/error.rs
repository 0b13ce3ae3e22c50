//! Errors that answer questions.
//!
//! An [`Error`] is small (one box) and can be asked what kind of failure it is:
//! [`is_transient`](Error::is_transient) (try again later), [`is_auth`](Error::is_auth)
//! (credentials refused: do not hammer the server), [`is_certificate`](Error::is_certificate),
//! [`is_local`](Error::is_local) (our disk, not the server). Messages are lower-case
//! fragments so that a chain of contexts reads like a sentence, and they never contain
//! secrets.

use std::fmt;
use std::io;
use std::time::Duration;

use super::response::{ResponseCode, Status};

/// What the client was doing when a timeout struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    TlsHandshake,
    Response,
    Send,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting",
            Self::TlsHandshake => "the TLS handshake",
            Self::Response => "a response",
            Self::Send => "sending a command",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("could not connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("could not resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {}s waiting for {phase}", .after.as_secs_f32())]
    Timeout { phase: Phase, after: Duration },
    #[error("the server closed the connection")]
    Closed,
    #[error("connection error")]
    Io(#[source] io::Error),
    #[error("the server's certificate was refused: {0}")]
    Certificate(String),
    #[error(
        "the server's certificate is not the pinned one: tls-fingerprint is {expected}, the \
         server presented {presented} (if the server's certificate was renewed, check the new \
         one with `popsync check` and update tls-fingerprint)"
    )]
    FingerprintMismatch { expected: String, presented: String },
    #[error("TLS handshake failed")]
    Tls(#[source] super::tls::Failure),
    #[error(
        "the server does not speak TLS on this port ({0}); check `port` and `security` \
         (implicit TLS is usually port 995; port 110 wants security = \"starttls\")"
    )]
    NotTls(String),
    #[error(
        "the server does not offer STLS; refusing to continue without encryption \
         (use security = \"tls\" if it offers implicit TLS, usually on port 995)"
    )]
    StlsUnavailable,
    #[error("the server refused STLS: {0}")]
    StlsRefused(Status),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the server sent a line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("login refused ({method}): {status}")]
    Auth { method: String, status: Status },
    #[error("no usable login method: {0}")]
    NoAuthMethod(String),
    #[error("the mailbox is in use by another session: {0}")]
    InUse(Status),
    #[error(
        "the server asks to wait before logging in again: {status}{}",
        next_login_note(*.next_login)
    )]
    LoginDelay {
        status: Status,
        /// When the next login is allowed at the latest (unix seconds), where the server
        /// announced its delay between logins (LOGIN-DELAY in CAPA), with the delay.
        next_login: Option<(i64, u64)>,
    },
    #[error("temporary server problem: {0}")]
    SysTemp(Status),
    #[error("permanent server problem: {0}")]
    SysPerm(Status),
    #[error("the server refused {command}: {status}")]
    Refused {
        command: &'static str,
        status: Status,
    },
    #[error(
        "the server does not support UIDL, which popsync needs to tell new messages from old ones \
         (identify-by = \"headers\" tells them apart by their headers instead, leaving the mail \
         on the server)"
    )]
    NoUidl,
    #[error("a command argument contains a line break or NUL")]
    InvalidArgument,
    #[error("the connection was broken by an earlier error")]
    Broken,
    #[error("writing the message locally failed")]
    Local(#[source] io::Error),
}

/// A POP3 client error. See the module docs.
pub struct Error(Box<ErrorKind>);

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Trying again later may well succeed: network trouble, timeouts, a busy mailbox,
    /// `[SYS/TEMP]`, `[LOGIN-DELAY]`.
    pub fn is_transient(&self) -> bool {
        matches!(
            *self.0,
            ErrorKind::Connect { .. }
                | ErrorKind::Resolve { .. }
                | ErrorKind::Timeout { .. }
                | ErrorKind::Closed
                | ErrorKind::Io(_)
                | ErrorKind::Tls(_)
                | ErrorKind::InUse(_)
                | ErrorKind::LoginDelay { .. }
                | ErrorKind::SysTemp(_)
                | ErrorKind::Refused { .. }
                | ErrorKind::Protocol(_)
                | ErrorKind::LineTooLong { .. }
                | ErrorKind::Broken
        )
    }

    /// The server refused the credentials (or offers no method we may use): retrying
    /// without a change of configuration will not help.
    pub fn is_auth(&self) -> bool {
        matches!(*self.0, ErrorKind::Auth { .. } | ErrorKind::NoAuthMethod(_))
    }

    /// The server's certificate was not trusted.
    pub fn is_certificate(&self) -> bool {
        matches!(
            *self.0,
            ErrorKind::Certificate(_) | ErrorKind::FingerprintMismatch { .. }
        )
    }

    /// The server's certificate is not the one pinned with `tls-fingerprint`.
    pub fn is_fingerprint_mismatch(&self) -> bool {
        matches!(*self.0, ErrorKind::FingerprintMismatch { .. })
    }

    /// The server cannot be used safely or at all as configured: no STLS, no UIDL,
    /// `[SYS/PERM]`.
    pub fn is_permanent(&self) -> bool {
        matches!(
            *self.0,
            ErrorKind::StlsUnavailable
                | ErrorKind::NotTls(_)
                | ErrorKind::StlsRefused(_)
                | ErrorKind::SysPerm(_)
                | ErrorKind::NoUidl
                | ErrorKind::InvalidArgument
        )
    }

    /// The failure is on this machine (writing the message), not the server's.
    pub fn is_local(&self) -> bool {
        matches!(*self.0, ErrorKind::Local(_))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(*self.0, ErrorKind::Timeout { .. })
    }

    /// After this error the connection cannot be used for further commands. An `-ERR`
    /// answer leaves it usable; trouble with the stream or the framing does not.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            *self.0,
            ErrorKind::Connect { .. }
                | ErrorKind::Resolve { .. }
                | ErrorKind::Timeout { .. }
                | ErrorKind::Closed
                | ErrorKind::Io(_)
                | ErrorKind::Certificate(_)
                | ErrorKind::FingerprintMismatch { .. }
                | ErrorKind::Tls(_)
                | ErrorKind::NotTls(_)
                | ErrorKind::Protocol(_)
                | ErrorKind::LineTooLong { .. }
                | ErrorKind::Broken
                | ErrorKind::Local(_)
        )
    }

    /// The seconds a `[LOGIN-DELAY n]` asks for are not parsed; this says whether the server
    /// asked to wait at all.
    pub fn response_code(&self) -> Option<&ResponseCode> {
        match &*self.0 {
            ErrorKind::Auth { status, .. }
            | ErrorKind::InUse(status)
            | ErrorKind::LoginDelay { status, .. }
            | ErrorKind::SysTemp(status)
            | ErrorKind::SysPerm(status)
            | ErrorKind::Refused { status, .. } => status.code(),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self(Box::new(kind))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// When the next login is allowed, in words.
fn next_login_note(next: Option<(i64, u64)>) -> String {
    let Some((at, delay)) = next else {
        return String::new();
    };
    let local = chrono::DateTime::from_timestamp(at, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    // (In the words of `clock::span`; this module imports nothing of the rest of popsync.)
    let every = match delay {
        d if d < 60 => format!("{d} s"),
        d if d < 3600 => format!("{} min", d / 60),
        d => format!("{} h", d / 3600),
    };
    format!(" (it allows one login every {every}: the next is allowed by {local} at the latest)")
}

impl Error {
    /// A refusal for logging in too soon, with when the next login is allowed: the server
    /// announced `delay` seconds between logins.
    pub(crate) fn with_login_delay(self, delay: Option<u64>) -> Self {
        match *self.0 {
            ErrorKind::LoginDelay { status, .. } => ErrorKind::LoginDelay {
                status,
                next_login: delay.filter(|d| *d > 0).map(|d| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |t| t.as_secs() as i64);
                    (now + d as i64, d)
                }),
            }
            .into(),
            other => Self(Box::new(other)),
        }
    }
}

/// Turns an `-ERR` to a login command into the right error, by its response code
/// (RFC 3206). Without a code, a refused login is taken to be about the credentials.
pub(crate) fn login_error(method: &str, status: Status) -> Error {
    match status.code() {
        Some(ResponseCode::InUse) => ErrorKind::InUse(status),
        Some(ResponseCode::LoginDelay) => ErrorKind::LoginDelay {
            status,
            next_login: None,
        },
        Some(ResponseCode::SysTemp) => ErrorKind::SysTemp(status),
        Some(ResponseCode::SysPerm) => ErrorKind::SysPerm(status),
        _ => ErrorKind::Auth {
            method: method.to_owned(),
            status,
        },
    }
    .into()
}

/// Turns an `-ERR` greeting into an error. No credentials have been sent yet, so it is not a
/// refused login: without a response code saying otherwise (`[IN-USE]`, `[LOGIN-DELAY]`,
/// `[SYS/PERM]`) it is a busy server ("too many connections"), to be tried again later.
pub(crate) fn greeting_error(status: Status) -> Error {
    match status.code() {
        Some(ResponseCode::InUse | ResponseCode::LoginDelay | ResponseCode::SysPerm) => {
            login_error("the greeting", status)
        }
        _ => ErrorKind::SysTemp(status).into(),
    }
}

/// Turns an `-ERR` to any other command into an error, honouring response codes.
pub(crate) fn command_error(command: &'static str, status: Status) -> Error {
    match status.code() {
        Some(ResponseCode::InUse) => ErrorKind::InUse(status),
        Some(ResponseCode::SysTemp) => ErrorKind::SysTemp(status),
        Some(ResponseCode::SysPerm) => ErrorKind::SysPerm(status),
        _ => ErrorKind::Refused { command, status },
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn login_errors_are_classified_by_response_code() {
        let err = |line: &[u8]| login_error("USER/PASS", Status::parse(line).unwrap());
        assert!(err(b"-ERR [AUTH] Authentication failed.").is_auth());
        assert!(err(b"-ERR bad password").is_auth());
        let in_use = err(b"-ERR [IN-USE] locked");
        assert!(in_use.is_transient() && !in_use.is_auth());
        assert!(err(b"-ERR [LOGIN-DELAY] soon").is_transient());
        assert!(err(b"-ERR [SYS/TEMP] try later").is_transient());
        assert!(err(b"-ERR [SYS/PERM] gone").is_permanent());
    }

    #[test]
    fn an_err_greeting_is_never_a_refused_login() {
        let err = |line: &[u8]| greeting_error(Status::parse(line).unwrap());
        let busy = err(b"-ERR Too many connections");
        assert!(busy.is_transient() && !busy.is_auth());
        assert!(!err(b"-ERR [AUTH] odd").is_auth());
        assert!(err(b"-ERR [IN-USE] locked").is_transient());
        assert!(err(b"-ERR [SYS/PERM] gone").is_permanent());
    }
}
