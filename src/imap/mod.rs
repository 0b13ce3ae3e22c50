//! A small async IMAP client (RFC 3501, RFC 9051) for what delivering into an IMAP mailbox
//! needs, and nothing else: log in, learn a mailbox's UIDVALIDITY and UIDNEXT, APPEND
//! (MULTIAPPEND, RFC 3502; LITERAL+ and LITERAL-, RFC 7888; APPENDUID, RFC 4315), and look
//! for an appended message again (EXAMINE, UID SEARCH, UID FETCH BODY.PEEK[] streamed into a
//! SHA-256).
//!
//! Layers: [`wire`] reads responses with their literals (kept, streamed to a sink, or
//! skipped) within fixed bounds; `text` quotes arguments and reads the few response fields
//! needed; `append` sends APPENDs in the ways the server allows; this module has the
//! session: greeting, STARTTLS, login, STATUS, LIST, EXAMINE, UID SEARCH, UID FETCH.
//!
//! It rides on the POP3 client's transport: the same TCP connect with its time limits, the
//! same TLS connectors and certificate checks (`tls-fingerprint`, `ca-file`), the same
//! login encodings (SASL PLAIN, XOAUTH2, OAUTHBEARER). It imports nothing else of popsync.
//!
//! Guarantees: message data goes out as given, byte for byte, in literals whose length is
//! exact; a plaintext connection is only made when asked for; a missing or failed STARTTLS
//! is an error, never a fallback; secrets never appear in the transcript or in errors; no
//! response grows without bound.

mod append;
mod text;
pub mod wire;

pub use append::{AppendMode, Appended, Message};

use text::{appenduid, number_after, quoted, strip_word, strip_word_bytes};
pub use text::{mailbox_arg, modified_utf7};

use tracing::{debug, trace, warn};

use crate::pop3::auth::{
    AuthMethod, Credentials, oauth_error_ack, oauth_error_text, oauthbearer_response,
    plain_response, xoauth2_response,
};
use crate::pop3::transport::{open_stream, upgrade_stream};
use crate::pop3::{ConnectOptions, Security};
use wire::{LiteralSink, NoSink, Response, State, Tagged, WIRE, Wire, printable};

/// Why an IMAP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, TLS, a time limit, the connection lost.
    #[error(transparent)]
    Transport(#[from] crate::pop3::Error),
    /// The server greeted with BYE, or said BYE and closed.
    #[error("the server closed the session: {0}")]
    Bye(String),
    #[error("the server does not offer STARTTLS (security = \"starttls\" needs it)")]
    NoStartTls,
    #[error("no usable login method: {0}")]
    NoLoginMethod(String),
    #[error("login refused ({method}): {text}")]
    Login { method: String, text: String },
    /// A command the server answered NO or BAD.
    #[error("the server refused {command}: {answer}")]
    Refused {
        command: &'static str,
        answer: Tagged,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message to append could not be read from its spool file.
    #[error("reading the message to append")]
    Spool(#[source] std::io::Error),
}

impl Error {
    /// Whether trying again later may work (the network, the server busy or full).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(e) => e.is_transient(),
            Self::Bye(_) | Self::Protocol(_) => true,
            Self::Refused { answer, .. } => !matches!(
                answer.code_name().as_deref(),
                Some("TRYCREATE" | "NONEXISTENT" | "NOPERM" | "CANNOT" | "PARSE")
            ),
            Self::NoStartTls | Self::NoLoginMethod(_) | Self::Login { .. } | Self::Spool(_) => {
                false
            }
        }
    }
}

/// What the server says it can do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub words: Vec<String>,
}

impl Capabilities {
    fn parse(text: &str) -> Self {
        Self {
            words: text
                .split_whitespace()
                .map(str::to_ascii_uppercase)
                .collect(),
        }
    }

    pub fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    pub fn auth(&self, mechanism: &str) -> bool {
        self.words
            .iter()
            .any(|w| w.strip_prefix("AUTH=") == Some(mechanism))
    }
}

/// A logged-in (or not yet) IMAP session.
#[derive(Debug)]
pub struct Client {
    wire: Wire,
    caps: Capabilities,
    next_tag: u32,
    host: String,
    port: u16,
    /// How appends go (MULTIAPPEND, LITERAL+/-), kept in step with the capabilities.
    pub mode: AppendMode,
}

/// Connects, reads the greeting, learns the capabilities and upgrades with STARTTLS when
/// `options` says so.
pub async fn connect(options: &ConnectOptions) -> Result<Client, Error> {
    let implicit = options.security == Security::Tls;
    let (stream, _) = open_stream(options, implicit).await?;
    let mut client = Client::new(stream, options);
    client.greeting().await?;
    if options.security == Security::StartTls {
        if !client.caps.has("STARTTLS") {
            return Err(Error::NoStartTls);
        }
        client.simple("STARTTLS", "STARTTLS").await?;
        let (stream, discarded) = client.wire.into_stream();
        if discarded > 0 {
            warn!("discarded {discarded} bytes the server sent before the TLS handshake");
        }
        let (tls, _) = upgrade_stream(options, stream).await?;
        client.wire = Wire::new(tls, options.timeouts.response);
        client.caps = Capabilities::default();
        client.capability().await?;
    }
    Ok(client)
}

/// A session over a stream already connected (an in-memory pipe in tests): reads the
/// greeting and learns the capabilities; no TLS is set up.
pub async fn over(
    stream: Box<dyn crate::pop3::connection::Stream>,
    options: &ConnectOptions,
) -> Result<Client, Error> {
    let mut client = Client::new(stream, options);
    client.greeting().await?;
    Ok(client)
}

impl Client {
    fn new(stream: Box<dyn crate::pop3::connection::Stream>, options: &ConnectOptions) -> Self {
        Self {
            wire: Wire::new(stream, options.timeouts.response),
            caps: Capabilities::default(),
            next_tag: 1,
            host: options.host.clone(),
            port: options.port,
            mode: AppendMode::default(),
        }
    }

    async fn greeting(&mut self) -> Result<(), Error> {
        match self.wire.response(&mut NoSink).await? {
            Response::Untagged(text) => {
                let text = String::from_utf8_lossy(&text).into_owned();
                let (state, rest) = text.split_once(' ').unwrap_or((&text, ""));
                match state.to_ascii_uppercase().as_str() {
                    "OK" | "PREAUTH" => {}
                    _ => return Err(Error::Bye(rest.to_owned())),
                }
                self.take_code_capabilities(rest);
            }
            other => return Err(Error::Protocol(format!("unexpected greeting {other:?}"))),
        }
        if self.caps.words.is_empty() {
            self.capability().await?;
        }
        Ok(())
    }

    fn take_code_capabilities(&mut self, text: &str) {
        if let (Some(code), _) = wire::split_code(text)
            && let Some(list) = strip_word(&code, "CAPABILITY")
        {
            self.caps = Capabilities::parse(list);
            self.update_mode();
        }
    }

    fn update_mode(&mut self) {
        self.mode = AppendMode {
            multi: self.caps.has("MULTIAPPEND"),
            literal_plus: self.caps.has("LITERAL+"),
            literal_minus: self.caps.has("LITERAL-"),
        };
    }

    /// What the server offers now.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the server gives appended messages' UIDs (UIDPLUS).
    pub fn uidplus(&self) -> bool {
        self.caps.has("UIDPLUS")
    }

    fn tag(&mut self) -> String {
        let tag = format!("p{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    async fn capability(&mut self) -> Result<(), Error> {
        let mut found = None;
        self.run("CAPABILITY", "CAPABILITY", &mut NoSink, &mut |u| {
            if let Some(list) = strip_word_bytes(u, "CAPABILITY") {
                found = Some(Capabilities::parse(&String::from_utf8_lossy(list)));
            }
        })
        .await?;
        if let Some(caps) = found {
            self.caps = caps;
            self.update_mode();
        }
        Ok(())
    }

    /// Sends `line` (shown in the transcript as `shown`) and reads until its tagged
    /// answer, handing untagged responses to `untagged`. NO and BAD are errors.
    async fn run(
        &mut self,
        command: &'static str,
        line: &str,
        sink: &mut dyn LiteralSink,
        untagged: &mut dyn FnMut(&[u8]),
    ) -> Result<Tagged, Error> {
        let shown = if command == "LOGIN" {
            "LOGIN <redacted>"
        } else {
            line
        };
        let tag = self.tag();
        trace!(target: WIRE, "C: {tag} {shown}");
        self.wire
            .write(format!("{tag} {line}\r\n").as_bytes())
            .await?;
        self.wire.flush().await?;
        let answer = self.until_tagged(&tag, sink, untagged).await?;
        if answer.state == State::Ok {
            Ok(answer)
        } else {
            Err(Error::Refused { command, answer })
        }
    }

    async fn simple(&mut self, command: &'static str, line: &str) -> Result<Tagged, Error> {
        self.run(command, line, &mut NoSink, &mut |_| {}).await
    }

    async fn until_tagged(
        &mut self,
        tag: &str,
        sink: &mut dyn LiteralSink,
        untagged: &mut dyn FnMut(&[u8]),
    ) -> Result<Tagged, Error> {
        loop {
            match self.wire.response(sink).await? {
                Response::Tagged(t) if t.tag == tag => return Ok(t),
                Response::Tagged(t) => {
                    return Err(Error::Protocol(format!(
                        "an answer to a command not sent ({})",
                        t.tag
                    )));
                }
                Response::Untagged(u) => {
                    if let Some(text) = strip_word_bytes(&u, "BYE") {
                        // The tagged answer may still follow (LOGOUT); a lost connection
                        // then says the rest.
                        debug!("the server says BYE: {}", printable(text));
                    }
                    untagged(&u)
                }
                Response::Continue(text) => {
                    return Err(Error::Protocol(format!(
                        "an unexpected continuation: {text}"
                    )));
                }
            }
        }
    }

    /// Logs in with `method` (`None`: the best the server offers for the secret).
    pub async fn login(
        &mut self,
        credentials: &Credentials,
        method: Option<AuthMethod>,
    ) -> Result<AuthMethod, Error> {
        let method = match method {
            Some(m) => m,
            None if credentials.token => {
                if self.caps.auth("XOAUTH2") || !self.caps.auth("OAUTHBEARER") {
                    AuthMethod::XOAuth2
                } else {
                    AuthMethod::OAuthBearer
                }
            }
            None if self.caps.auth("PLAIN") => AuthMethod::Plain,
            None => AuthMethod::User,
        };
        if method.uses_token() != credentials.token {
            return Err(Error::NoLoginMethod(format!(
                "{method} needs {}",
                if credentials.token {
                    "a password"
                } else {
                    "an OAuth2 token"
                }
            )));
        }
        if method == AuthMethod::User && self.caps.has("LOGINDISABLED") {
            return Err(Error::NoLoginMethod(
                "the server refuses LOGIN on this connection (LOGINDISABLED): use TLS".into(),
            ));
        }
        let refused = |text: String| Error::Login {
            method: imap_name(method).to_owned(),
            text,
        };
        let answer = match method {
            AuthMethod::User => {
                let line = format!(
                    "LOGIN {} {}",
                    quoted(&credentials.username)?,
                    quoted(credentials.password.expose())?
                );
                match self.run("LOGIN", &line, &mut NoSink, &mut |_| {}).await {
                    Ok(t) => t,
                    Err(Error::Refused { answer, .. }) => return Err(refused(answer.to_string())),
                    Err(e) => return Err(e),
                }
            }
            AuthMethod::Apop => {
                return Err(Error::NoLoginMethod("APOP is a POP3 method".into()));
            }
            _ => {
                let (mechanism, response) = match method {
                    AuthMethod::Plain => ("PLAIN", plain_response(credentials)),
                    AuthMethod::XOAuth2 => ("XOAUTH2", xoauth2_response(credentials)),
                    _ => (
                        "OAUTHBEARER",
                        oauthbearer_response(credentials, &self.host, self.port),
                    ),
                };
                self.authenticate(mechanism, response.expose(), method)
                    .await
                    .map_err(|e| match e {
                        Error::Refused { answer, .. } => refused(answer.to_string()),
                        e => e,
                    })?
            }
        };
        self.take_code_capabilities(&format!("[{}]", answer.code.as_deref().unwrap_or_default()));
        if answer.code_name().as_deref() != Some("CAPABILITY") {
            self.capability().await?;
        }
        debug!("logged in to the IMAP server with {method}");
        Ok(method)
    }

    async fn authenticate(
        &mut self,
        mechanism: &str,
        response: &str,
        method: AuthMethod,
    ) -> Result<Tagged, Error> {
        let tag = self.tag();
        trace!(target: WIRE, "C: {tag} AUTHENTICATE {mechanism} <redacted>");
        let ir = self.caps.has("SASL-IR");
        let first = if ir {
            format!("{tag} AUTHENTICATE {mechanism} {response}\r\n")
        } else {
            format!("{tag} AUTHENTICATE {mechanism}\r\n")
        };
        self.wire.write(first.as_bytes()).await?;
        self.wire.flush().await?;
        let mut sent = ir;
        let mut error_text = None;
        loop {
            match self.wire.response(&mut NoSink).await? {
                Response::Continue(challenge) => {
                    let reply = if !sent {
                        sent = true;
                        response.to_owned()
                    } else {
                        // An OAuth error challenge: acknowledged, then the server says NO.
                        error_text = oauth_error_text(&challenge);
                        oauth_error_ack(method).expose().to_owned()
                    };
                    self.wire.write(format!("{reply}\r\n").as_bytes()).await?;
                    self.wire.flush().await?;
                }
                Response::Untagged(_) => {}
                Response::Tagged(t) if t.tag == tag => {
                    if t.state == State::Ok {
                        return Ok(t);
                    }
                    let mut answer = t;
                    if let Some(detail) = error_text {
                        answer.text = format!("{} {detail}", answer.text);
                    }
                    return Err(Error::Refused {
                        command: "AUTHENTICATE",
                        answer,
                    });
                }
                Response::Tagged(t) => {
                    return Err(Error::Protocol(format!(
                        "an answer to a command not sent ({})",
                        t.tag
                    )));
                }
            }
        }
    }

    /// A mailbox's UIDVALIDITY and UIDNEXT, without selecting it.
    pub async fn status(&mut self, mailbox: &str) -> Result<(u32, u32), Error> {
        let line = format!("STATUS {} (UIDVALIDITY UIDNEXT)", mailbox_arg(mailbox));
        let (mut validity, mut next) = (None, None);
        self.run("STATUS", &line, &mut NoSink, &mut |u| {
            if strip_word_bytes(u, "STATUS").is_some() {
                let text = String::from_utf8_lossy(u);
                validity = number_after(&text, "UIDVALIDITY");
                next = number_after(&text, "UIDNEXT");
            }
        })
        .await?;
        match (validity, next) {
            (Some(v), Some(n)) => Ok((v, n)),
            _ => Err(Error::Protocol(
                "the answer to STATUS lacks UIDVALIDITY or UIDNEXT".into(),
            )),
        }
    }

    /// Whether `mailbox` exists (LIST).
    pub async fn exists(&mut self, mailbox: &str) -> Result<bool, Error> {
        let line = format!("LIST \"\" {}", mailbox_arg(mailbox));
        let mut found = false;
        self.run("LIST", &line, &mut NoSink, &mut |u| {
            found |= strip_word_bytes(u, "LIST").is_some();
        })
        .await?;
        Ok(found)
    }

    /// Selects `mailbox` read-only; returns its UIDVALIDITY.
    pub async fn examine(&mut self, mailbox: &str) -> Result<u32, Error> {
        let line = format!("EXAMINE {}", mailbox_arg(mailbox));
        let mut validity = None;
        self.run("EXAMINE", &line, &mut NoSink, &mut |u| {
            let text = String::from_utf8_lossy(u);
            if let Some(v) = number_after(&text, "[UIDVALIDITY") {
                validity = Some(v);
            }
        })
        .await?;
        validity.ok_or_else(|| Error::Protocol("EXAMINE gave no UIDVALIDITY".into()))
    }

    /// `UID SEARCH criteria` in the selected mailbox.
    pub async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, Error> {
        let line = format!("UID SEARCH {criteria}");
        let mut uids = Vec::new();
        self.run("UID SEARCH", &line, &mut NoSink, &mut |u| {
            if let Some(list) = strip_word_bytes(u, "SEARCH") {
                uids.extend(
                    String::from_utf8_lossy(list)
                        .split_whitespace()
                        .filter_map(|n| n.parse::<u32>().ok()),
                );
            }
        })
        .await?;
        Ok(uids)
    }

    /// The SHA-256 and length of each of these messages of the selected mailbox, read
    /// without marking them seen (`BODY.PEEK[]`), by UID. A UID that no longer exists is
    /// left out.
    pub async fn digests(&mut self, uids: &[u32]) -> Result<Vec<(u32, [u8; 32], u64)>, Error> {
        let mut out = Vec::new();
        for chunk in uids.chunks(64) {
            let set: Vec<String> = chunk.iter().map(u32::to_string).collect();
            let line = format!("UID FETCH {} (UID BODY.PEEK[])", set.join(","));
            let mut sink = BodySink::default();
            let bodies = sink.count.clone();
            let mut found = Vec::new();
            self.run("UID FETCH", &line, &mut sink, &mut |u| {
                // Only an answer that brought a body (not an unasked-for FLAGS update).
                let text = String::from_utf8_lossy(u);
                if bodies.get() > found.len()
                    && let Some(uid) = number_after(&text, "UID")
                {
                    found.push(uid);
                }
            })
            .await?;
            for (uid, (digest, len)) in found.into_iter().zip(sink.bodies) {
                out.push((uid, digest, len));
            }
        }
        Ok(out)
    }

    /// Ends the session politely; errors are of no interest by then.
    pub async fn logout(mut self) {
        if !self.wire.is_broken() {
            let _ = self.simple("LOGOUT", "LOGOUT").await;
        }
        self.wire.shutdown().await;
    }

    /// Whether the connection can no longer be used.
    pub fn is_broken(&self) -> bool {
        self.wire.is_broken()
    }
}

/// Streams each `BODY[]` literal into a SHA-256.
#[derive(Default)]
struct BodySink {
    current: Option<(sha2::Sha256, u64)>,
    /// How many bodies have ended, for the reader of the untagged answers.
    count: std::rc::Rc<std::cell::Cell<usize>>,
    bodies: Vec<([u8; 32], u64)>,
}

impl LiteralSink for BodySink {
    fn wants(&mut self, before: &[u8], _len: u64) -> bool {
        let upper = before.to_ascii_uppercase();
        let wanted = upper.ends_with(b"BODY[] ") || upper.ends_with(b"BODY[]");
        if wanted {
            self.current = Some((sha2::Digest::new(), 0));
        }
        wanted
    }

    fn data(&mut self, piece: &[u8]) {
        if let Some((hasher, len)) = &mut self.current {
            sha2::Digest::update(hasher, piece);
            *len += piece.len() as u64;
        }
    }

    fn end(&mut self) {
        if let Some((hasher, len)) = self.current.take() {
            self.bodies
                .push((sha2::Digest::finalize(hasher).into(), len));
            self.count.set(self.bodies.len());
        }
    }
}

fn imap_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::User => "LOGIN",
        AuthMethod::Apop => "APOP",
        AuthMethod::Plain => "AUTHENTICATE PLAIN",
        AuthMethod::XOAuth2 => "AUTHENTICATE XOAUTH2",
        AuthMethod::OAuthBearer => "AUTHENTICATE OAUTHBEARER",
    }
}

#[cfg(test)]
mod scripted;
