//! Logging in: USER/PASS, APOP (RFC 1939) and SASL PLAIN (RFC 4616 over RFC 5034).
//!
//! The choice of method is a pure function of the configured preference, the server's
//! capabilities and whether the connection is encrypted, so it is easy to test and to show
//! in `popsync check`. Over an encrypted connection the order is SASL PLAIN, APOP, USER;
//! over a plaintext connection (only ever with the dangerous switch) APOP comes first because
//! it does not put the password on the wire.

use std::fmt;

use base64::Engine as _;
use md5::{Digest as _, Md5};

use super::error::{Error, ErrorKind};
use super::response::Capabilities;

/// A password or token. Its `Debug` form never shows the value; read it with
/// [`expose`](Secret::expose) only where it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// User name and password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// A login method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// USER then PASS: the password is sent as is (protected only by TLS).
    User,
    /// APOP: an MD5 digest of the greeting's timestamp and the password.
    Apop,
    /// SASL PLAIN: user name and password, base64-encoded (protected only by TLS).
    Plain,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "USER/PASS",
            Self::Apop => "APOP",
            Self::Plain => "SASL PLAIN",
        })
    }
}

/// Picks the login method. `forced` is the configured method, `None` for automatic.
pub fn choose_method(
    forced: Option<AuthMethod>,
    caps: &Capabilities,
    apop_timestamp: Option<&str>,
    encrypted: bool,
) -> Result<AuthMethod, Error> {
    if let Some(method) = forced {
        if method == AuthMethod::Apop && apop_timestamp.is_none() {
            return Err(ErrorKind::NoAuthMethod(
                "APOP was configured but the server's greeting carries no APOP timestamp".into(),
            )
            .into());
        }
        return Ok(method);
    }
    let plain = caps.has_sasl("PLAIN");
    let apop = apop_timestamp.is_some();
    // A server without CAPA is an RFC 1939 server: USER/PASS is what it has. A server that
    // lists capabilities but not USER may still accept it; it is the last resort.
    let order: &[(bool, AuthMethod)] = if encrypted {
        &[
            (plain, AuthMethod::Plain),
            (apop, AuthMethod::Apop),
            (true, AuthMethod::User),
        ]
    } else {
        &[
            (apop, AuthMethod::Apop),
            (plain, AuthMethod::Plain),
            (true, AuthMethod::User),
        ]
    };
    Ok(order
        .iter()
        .find(|(offered, _)| *offered)
        .map(|(_, m)| *m)
        .unwrap_or(AuthMethod::User))
}

/// Extracts the APOP timestamp (`<...@...>`) from a greeting text.
pub fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let end = start + greeting[start..].find('>')?;
    let ts = &greeting[start..=end];
    (ts.contains('@') && ts.is_ascii() && !ts.contains(' ')).then_some(ts)
}

/// The APOP digest: lower-case hex MD5 of timestamp and password (RFC 1939 section 7).
pub fn apop_digest(timestamp: &str, password: &Secret) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(password.expose().as_bytes());
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The SASL PLAIN initial response: base64 of `NUL user NUL password` (RFC 4616).
pub fn plain_response(credentials: &Credentials) -> Secret {
    let mut raw = Vec::with_capacity(credentials.username.len() + 64);
    raw.push(0);
    raw.extend_from_slice(credentials.username.as_bytes());
    raw.push(0);
    raw.extend_from_slice(credentials.password.expose().as_bytes());
    Secret(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// RFC 5034: an AUTH command with its initial response must fit in 255 octets (CRLF
/// included); otherwise the response goes on its own line after the `+` continuation.
pub const MAX_AUTH_LINE: usize = 255;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apop_digest_matches_rfc_1939_example() {
        let ts = apop_timestamp("POP3 server ready <1896.697170952@dbc.mtview.ca.us>").unwrap();
        assert_eq!(ts, "<1896.697170952@dbc.mtview.ca.us>");
        assert_eq!(
            apop_digest(ts, &Secret::new("tanstaaf")),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn greetings_without_a_timestamp() {
        assert_eq!(apop_timestamp("Dovecot ready."), None);
        assert_eq!(apop_timestamp("<no-at-sign>"), None);
    }

    #[test]
    fn plain_response_encodes_nul_separated_fields() {
        let c = Credentials {
            username: "tim".into(),
            password: Secret::new("tanstaaftanstaaf"),
        };
        // RFC 5034 section 6 example.
        assert_eq!(plain_response(&c).expose(), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    }

    fn caps(lines: &[&[u8]]) -> Capabilities {
        Capabilities::from_lines(lines.iter().copied())
    }

    #[test]
    fn automatic_choice_prefers_sasl_plain_over_tls() {
        let c = caps(&[b"USER", b"SASL PLAIN"]);
        assert_eq!(
            choose_method(None, &c, None, true).unwrap(),
            AuthMethod::Plain
        );
        assert_eq!(
            choose_method(None, &c, Some("<1@x>"), true).unwrap(),
            AuthMethod::Plain
        );
        let c = caps(&[b"USER"]);
        assert_eq!(
            choose_method(None, &c, None, true).unwrap(),
            AuthMethod::User
        );
        assert_eq!(
            choose_method(None, &Capabilities::default(), None, true).unwrap(),
            AuthMethod::User
        );
    }

    #[test]
    fn automatic_choice_prefers_apop_without_encryption() {
        let c = caps(&[b"USER", b"SASL PLAIN"]);
        assert_eq!(
            choose_method(None, &c, Some("<1@x>"), false).unwrap(),
            AuthMethod::Apop
        );
    }

    #[test]
    fn forced_apop_needs_a_timestamp() {
        let c = caps(&[b"USER"]);
        let err = choose_method(Some(AuthMethod::Apop), &c, None, true).unwrap_err();
        assert!(err.is_auth());
        assert_eq!(
            choose_method(Some(AuthMethod::User), &c, Some("<1@x>"), true).unwrap(),
            AuthMethod::User
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let c = Credentials {
            username: "me".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
