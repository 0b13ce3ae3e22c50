//! Logging in: USER/PASS, APOP (RFC 1939), SASL PLAIN (RFC 4616 over RFC 5034), and with an
//! OAuth 2.0 access token SASL OAUTHBEARER (RFC 7628) or XOAUTH2 (Google's and Microsoft's).
//!
//! The choice of method is a pure function of the configured preference, the kind of secret
//! (password or token), the server's capabilities and whether the connection is encrypted,
//! so it is easy to test and to show in `popsync check`. With a password, over an encrypted
//! connection the order is SASL PLAIN, APOP, USER; over a plaintext connection (only ever
//! with the dangerous switch) APOP comes first because it does not put the password on the
//! wire. With a token it is OAUTHBEARER (the standard), then XOAUTH2; a token is never sent
//! as a password, and a password never through an OAuth mechanism.

use std::fmt;

use base64::Engine as _;
use md5::{Digest as _, Md5};

use super::command::Command;
use super::connection::Connection;
use super::error::{Error, ErrorKind, login_error};
use super::response::{Capabilities, Status};
pub use super::secret::Secret;

/// User name and password (or OAuth 2.0 access token).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    /// The password, or the access token when `token` is set.
    pub password: Secret,
    /// `password` is an OAuth 2.0 access token.
    pub token: bool,
}

impl Credentials {
    pub fn password(username: impl Into<String>, password: Secret) -> Self {
        Self {
            username: username.into(),
            password,
            token: false,
        }
    }

    pub fn token(username: impl Into<String>, token: Secret) -> Self {
        Self {
            username: username.into(),
            password: token,
            token: true,
        }
    }
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
    /// SASL XOAUTH2: user name and OAuth 2.0 access token (Google, Microsoft).
    XOAuth2,
    /// SASL OAUTHBEARER (RFC 7628): user name and OAuth 2.0 access token.
    OAuthBearer,
}

impl AuthMethod {
    /// Whether the method takes an OAuth 2.0 token rather than a password.
    pub fn uses_token(self) -> bool {
        matches!(self, Self::XOAuth2 | Self::OAuthBearer)
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "USER/PASS",
            Self::Apop => "APOP",
            Self::Plain => "SASL PLAIN",
            Self::XOAuth2 => "SASL XOAUTH2",
            Self::OAuthBearer => "SASL OAUTHBEARER",
        })
    }
}

/// Picks the login method. `forced` is the configured method, `None` for automatic;
/// `token` says the secret is an OAuth 2.0 access token.
pub fn choose_method(
    forced: Option<AuthMethod>,
    caps: &Capabilities,
    apop_timestamp: Option<&str>,
    encrypted: bool,
    token: bool,
) -> Result<AuthMethod, Error> {
    if let Some(method) = forced
        && method.uses_token() != token
    {
        return Err(ErrorKind::NoAuthMethod(if token {
            format!("{method} needs a password, but the account has an OAuth2 token")
        } else {
            format!("{method} needs an OAuth2 token (oauth2-token-command)")
        })
        .into());
    }
    if token {
        if let Some(method) = forced {
            return Ok(method);
        }
        return if caps.has_sasl("OAUTHBEARER") {
            Ok(AuthMethod::OAuthBearer)
        } else if caps.has_sasl("XOAUTH2") {
            Ok(AuthMethod::XOAuth2)
        } else {
            Err(ErrorKind::NoAuthMethod(
                "the server offers neither SASL OAUTHBEARER nor XOAUTH2 for the OAuth2 token \
                 (set auth = \"xoauth2\" or \"oauthbearer\" to try one anyway)"
                    .into(),
            )
            .into())
        };
    }
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
    Secret::new(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// The SASL XOAUTH2 initial response: base64 of
/// `user=USER ^A auth=Bearer TOKEN ^A ^A`.
pub fn xoauth2_response(credentials: &Credentials) -> Secret {
    let raw = format!(
        "user={}\x01auth=Bearer {}\x01\x01",
        credentials.username,
        credentials.password.expose()
    );
    Secret::new(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// The SASL OAUTHBEARER initial response (RFC 7628 section 3.1): base64 of the GS2 header
/// `n,a=USER,` then `^A host=HOST ^A port=PORT ^A auth=Bearer TOKEN ^A ^A`. In the
/// authorization identity `,` and `=` are written `=2C` and `=3D` (RFC 5801).
pub fn oauthbearer_response(credentials: &Credentials, host: &str, port: u16) -> Secret {
    let user = credentials.username.replace('=', "=3D").replace(',', "=2C");
    let raw = format!(
        "n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
        credentials.password.expose()
    );
    Secret::new(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// What the client answers to an OAuth error challenge: OAUTHBEARER wants a single `^A`
/// (RFC 7628 section 3.2.3), XOAUTH2 an empty response. The server then fails the exchange.
pub fn oauth_error_ack(method: AuthMethod) -> Secret {
    match method {
        AuthMethod::OAuthBearer => Secret::new("AQ=="),
        _ => Secret::new(String::new()),
    }
}

/// The server's OAuth error challenge (base64 of a JSON object such as
/// `{"status":"invalid_token","scope":"..."}`), decoded for the user; `None` if it is not one.
pub fn oauth_error_text(challenge: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(challenge.trim())
        .ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let printable: String = text.chars().filter(|c| !c.is_control()).take(500).collect();
    (printable.starts_with('{')).then_some(printable)
}

/// RFC 5034: an AUTH command with its initial response must fit in 255 octets (CRLF
/// included); otherwise the response goes on its own line after the `+` continuation.
pub const MAX_AUTH_LINE: usize = 255;

/// Where a login happens: what [`login`] needs besides the credentials.
#[derive(Debug, Clone, Copy)]
pub struct LoginContext<'a> {
    /// The greeting text (for APOP's timestamp).
    pub greeting: &'a str,
    /// Where the connection goes (for OAUTHBEARER).
    pub host: &'a str,
    pub port: u16,
}

/// Logs in with `method`: the whole exchange, through to the server's verdict. With a
/// SASL mechanism, an initial response that would make the AUTH line longer than
/// [`MAX_AUTH_LINE`] is sent after the server's `+`; an OAuth error challenge is answered
/// as each mechanism expects and the server's reason kept for the error.
pub async fn login(
    conn: &mut Connection,
    method: AuthMethod,
    credentials: &Credentials,
    at: LoginContext<'_>,
) -> Result<(), Error> {
    let mut label = method.to_string();
    let status = match method {
        AuthMethod::User => match conn.command(&Command::User(&credentials.username)).await? {
            Status::Ok { .. } => conn.command(&Command::Pass(&credentials.password)).await?,
            other => other,
        },
        AuthMethod::Apop => {
            let ts = apop_timestamp(at.greeting).unwrap_or_default();
            let digest = apop_digest(ts, &credentials.password);
            conn.command(&Command::Apop {
                name: &credentials.username,
                digest,
            })
            .await?
        }
        AuthMethod::Plain => sasl(conn, "PLAIN", plain_response(credentials)).await?,
        AuthMethod::XOAuth2 | AuthMethod::OAuthBearer => {
            let (mechanism, response) = if method == AuthMethod::XOAuth2 {
                ("XOAUTH2", xoauth2_response(credentials))
            } else {
                (
                    "OAUTHBEARER",
                    oauthbearer_response(credentials, at.host, at.port),
                )
            };
            match sasl(conn, mechanism, response).await? {
                // An error challenge (RFC 7628 section 3.2.2): acknowledge it, and the
                // server ends the exchange with -ERR; keep its reason for the user.
                Status::Continue { data } => {
                    let reason = oauth_error_text(&data);
                    let answer = conn
                        .command(&Command::SaslResponse(oauth_error_ack(method)))
                        .await?;
                    if let Some(reason) = reason {
                        label = format!("{label}; the server's reason: {reason}");
                    }
                    match answer {
                        Status::Continue { .. } => {
                            let _ = conn.command(&Command::SaslResponse(Secret::new("*"))).await;
                            return Err(ErrorKind::Protocol(
                                "the server sent another SASL challenge after the OAuth error"
                                    .into(),
                            )
                            .into());
                        }
                        other => other,
                    }
                }
                other => other,
            }
        }
    };
    match status {
        Status::Ok { .. } => Ok(()),
        Status::Continue { .. } => {
            // A challenge the mechanism does not expect: cancel the exchange (RFC 5034
            // section 4).
            let _ = conn.command(&Command::SaslResponse(Secret::new("*"))).await;
            Err(ErrorKind::Protocol("the server sent an unexpected SASL challenge".into()).into())
        }
        status @ Status::Err { .. } => Err(login_error(&label, status)),
    }
}

/// AUTH with an initial response, in one line when it fits and after the server's `+`
/// otherwise (RFC 5034; Microsoft 365 insists, and a token makes the line long).
async fn sasl(conn: &mut Connection, mechanism: &str, response: Secret) -> Result<Status, Error> {
    let with_initial = Command::Auth {
        mechanism,
        initial: Some(response.clone()),
    };
    if with_initial.encoded_len() <= MAX_AUTH_LINE {
        return conn.command(&with_initial).await;
    }
    match conn
        .command(&Command::Auth {
            mechanism,
            initial: None,
        })
        .await?
    {
        Status::Continue { .. } => conn.command(&Command::SaslResponse(response)).await,
        other => Ok(other),
    }
}

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
        let c = Credentials::password("tim", Secret::new("tanstaaftanstaaf"));
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
            choose_method(None, &c, None, true, false).unwrap(),
            AuthMethod::Plain
        );
        assert_eq!(
            choose_method(None, &c, Some("<1@x>"), true, false).unwrap(),
            AuthMethod::Plain
        );
        let c = caps(&[b"USER"]);
        assert_eq!(
            choose_method(None, &c, None, true, false).unwrap(),
            AuthMethod::User
        );
        assert_eq!(
            choose_method(None, &Capabilities::default(), None, true, false).unwrap(),
            AuthMethod::User
        );
    }

    #[test]
    fn automatic_choice_prefers_apop_without_encryption() {
        let c = caps(&[b"USER", b"SASL PLAIN"]);
        assert_eq!(
            choose_method(None, &c, Some("<1@x>"), false, false).unwrap(),
            AuthMethod::Apop
        );
    }

    #[test]
    fn forced_apop_needs_a_timestamp() {
        let c = caps(&[b"USER"]);
        let err = choose_method(Some(AuthMethod::Apop), &c, None, true, false).unwrap_err();
        assert!(err.is_auth());
        assert_eq!(
            choose_method(Some(AuthMethod::User), &c, Some("<1@x>"), true, false).unwrap(),
            AuthMethod::User
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let c = Credentials::password("me", Secret::new("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn oauth_responses_have_the_documented_layout() {
        let c = Credentials::token(
            "someuser@example.com",
            Secret::new("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"),
        );
        // Google's documented XOAUTH2 example.
        assert_eq!(
            xoauth2_response(&c).expose(),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
        // RFC 7628 section 4.1, with the user of the example.
        let c = Credentials::token(
            "user@example.com",
            Secret::new("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="),
        );
        let raw = base64::engine::general_purpose::STANDARD
            .decode(oauthbearer_response(&c, "server.example.com", 143).expose())
            .unwrap();
        assert_eq!(
            raw,
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
        let odd = Credentials::token("a,b=c", Secret::new("t"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(oauthbearer_response(&odd, "h", 1).expose())
            .unwrap();
        assert!(raw.starts_with(b"n,a=a=2Cb=3Dc,\x01"));
        assert_eq!(oauth_error_ack(AuthMethod::OAuthBearer).expose(), "AQ==");
        assert_eq!(oauth_error_ack(AuthMethod::XOAuth2).expose(), "");
        assert_eq!(
            oauth_error_text("eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=").as_deref(),
            Some("{\"status\":\"invalid_token\"}")
        );
        assert_eq!(oauth_error_text("not base64!"), None);
    }

    #[test]
    fn a_token_goes_only_to_an_oauth_mechanism_and_a_password_never_does() {
        let c = caps(&[b"USER", b"SASL PLAIN XOAUTH2 OAUTHBEARER"]);
        assert_eq!(
            choose_method(None, &c, None, true, true).unwrap(),
            AuthMethod::OAuthBearer
        );
        let c = caps(&[b"USER", b"SASL PLAIN XOAUTH2"]);
        assert_eq!(
            choose_method(None, &c, None, true, true).unwrap(),
            AuthMethod::XOAuth2
        );
        assert_eq!(
            choose_method(None, &c, None, true, false).unwrap(),
            AuthMethod::Plain
        );
        let c = caps(&[b"USER", b"SASL PLAIN"]);
        assert!(
            choose_method(None, &c, None, true, true)
                .unwrap_err()
                .is_auth()
        );
        assert_eq!(
            choose_method(Some(AuthMethod::XOAuth2), &c, None, true, true).unwrap(),
            AuthMethod::XOAuth2
        );
        assert!(choose_method(Some(AuthMethod::Plain), &c, None, true, true).is_err());
        assert!(choose_method(Some(AuthMethod::XOAuth2), &c, None, true, false).is_err());
    }
}
