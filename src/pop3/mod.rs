//! An async POP3 client (RFC 1939, 2449, 2595, 3206, 5034).
//!
//! This module is self-contained: it imports nothing from the rest of popsync, so it can
//! become a crate of its own unchanged. It is layered:
//!
//! - [`codec`]: sans-I/O framing over byte buffers: status lines, multi-line responses,
//!   streaming dot-unstuffing of message bodies, hard line-length limits;
//! - [`command`] and [`response`]: what is sent and what comes back, as types;
//! - [`connection`]: one stream plus its buffers, with timeouts and a redacted transcript
//!   at TRACE level (target `popsync::pop3::wire`);
//! - [`session`]: the protocol phases as types — [`Greeted`] (optionally upgraded with STLS)
//!   becomes [`Authenticated`] by logging in — over TCP ([`connect`]) or any other stream
//!   ([`over`]); a [`Connector`] says which, so whole fetches can be tested in memory;
//! - [`auth`]: choosing the login method, and the exchanges: USER/PASS, APOP, SASL PLAIN,
//!   XOAUTH2 and OAUTHBEARER;
//! - [`tls`]: connector set-up and certificate facts for display;
//! - [`error`]: errors that answer questions (`is_transient`, `is_auth`, ...);
//! - [`fuzz`]: the entry points `scripts/fuzz` drives and the test suite replays.
//!
//! Guarantees: message data is handled as bytes and dot-unstuffed exactly once; no line or
//! response grows without bound; a plaintext connection is only made when the caller asks
//! for [`Security::DangerousPlaintext`]; a missing or failed STLS is an error, never a
//! fallback; secrets never appear in `Debug` output, errors or the transcript.

pub mod auth;
pub mod codec;
pub mod command;
pub mod connection;
pub mod error;
pub mod fuzz;
pub mod response;
#[cfg(test)]
pub(crate) mod script;
pub mod secret;
pub mod session;
pub mod tls;
pub mod transport;

pub use auth::{AuthMethod, Credentials};
pub use error::{Error, ErrorKind};
pub use response::{Capabilities, ListEntry, MsgNum, ResponseCode, Status, Uidl, UidlEntry};
pub use secret::Secret;
pub use session::{
    Authenticated, BodyCommand, Connector, Greeted, RetrieveHandler, Tcp, connect, over,
};
pub use tls::{
    CertificateInfo, TlsOptions, forget_connectors, format_fingerprint, parse_fingerprint,
};
pub use transport::{ConnectOptions, Security, Timeouts};
