//! popsync's exit statuses, all in one place: those of `sysexits.h` where one fits, so that
//! scripts, cron and service managers can tell a problem to wait out from one to fix.

/// Everything went as asked.
pub const OK: u8 = 0;
/// `service status`: the service is not running (as LSB init scripts say).
pub const NOT_RUNNING: u8 = 3;
/// The command line was wrong (EX_USAGE).
pub const USAGE: u8 = 64;
/// A service manager could not be reached or refused (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// Something that should not happen did (EX_SOFTWARE).
pub const SOFTWARE: u8 = 70;
/// A file could not be written (EX_CANTCREAT).
pub const CANT_CREATE: u8 = 73;
/// Something on this machine: the mailbox or the state database (EX_IOERR).
pub const IO_ERROR: u8 = 74;
/// Try again later: the network, a busy server, a lock held by someone else (EX_TEMPFAIL).
pub const TEMPORARY: u8 = 75;
/// Credentials refused, or the server's certificate not trusted (EX_NOPERM).
pub const NO_PERMISSION: u8 = 77;
/// The configuration is wrong, or cannot work with this server (EX_CONFIG).
pub const CONFIG: u8 = 78;

/// How a failure should be treated: what the exit status says and whether retrying helps.
/// Ordered by how much it needs the user: the worst of several is the one to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Try again later (network, server busy).
    Temporary,
    /// Credentials refused or the server's certificate not trusted.
    Auth,
    /// Something on this machine: the mailbox or the state database.
    Local,
    /// The configuration cannot work with this server (no STLS, no UIDL).
    Config,
}

impl ErrorClass {
    /// How a failure of the POP3 client's transport or protocol is treated — for a POP3
    /// session, and for an IMAP destination reached over the same transport.
    pub fn of_pop3(e: &crate::pop3::Error) -> Self {
        if e.is_auth() || e.is_certificate() {
            Self::Auth
        } else if e.is_local() {
            Self::Local
        } else if e.is_permanent() {
            Self::Config
        } else {
            Self::Temporary
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Self::Temporary => TEMPORARY,
            Self::Auth => NO_PERMISSION,
            Self::Local => IO_ERROR,
            Self::Config => CONFIG,
        }
    }
}
