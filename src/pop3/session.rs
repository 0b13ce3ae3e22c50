//! The protocol phases as types.
//!
//! [`connect`] opens the connection (implicit TLS, STLS or — only when asked — plaintext),
//! reads the greeting and asks for capabilities, returning a [`Greeted`] session. Logging in
//! consumes it and returns an [`Authenticated`] one, which has the transaction commands.
//! Capabilities are asked for again after STLS and after login (some servers, Gmail among
//! them, show more once logged in).
//!
//! Message retrieval and deletion are pipelined (RFC 2449) with a bounded window when the
//! server advertises PIPELINING, and strictly one command at a time otherwise.

use tracing::{debug, warn};

use super::auth::{self, AuthMethod, Credentials};
use super::command::Command;
use super::connection::{Connection, ListingLimit, Stream};
use super::error::{Error, ErrorKind, command_error, greeting_error};
use super::response::{Capabilities, ListEntry, MsgNum, Status, Uidl, UidlEntry, parse_stat};
use super::tls::CertificateInfo;
use super::transport::{ConnectOptions, Security, open_stream, upgrade_stream};

/// Most RETR or DELE commands outstanding at once when pipelining. Each is a dozen bytes, so
/// the window never comes near filling the socket buffer (RFC 2449 section 6.6).
pub const PIPELINE_WINDOW: usize = 32;

/// Most `LIST n` commands outstanding at once. Each command and each answer is a short
/// line, so even this many cannot fill a socket buffer in either direction.
pub const LIST_WINDOW: usize = 256;

/// Most accepted in one UIDL or LIST listing: a million messages, 64 MiB (bounds memory
/// against a hostile server; a real mailbox of a million messages lists about 30 MB).
pub const MAX_LISTING: ListingLimit = ListingLimit {
    lines: 1_000_000,
    bytes: 64 << 20,
};

/// The capability listing is short.
const MAX_CAPA: ListingLimit = ListingLimit {
    lines: 1000,
    bytes: 64 << 10,
};

/// A connected session, greeted and with capabilities known, not yet logged in.
#[derive(Debug)]
pub struct Greeted {
    conn: Connection,
    greeting: String,
    caps: Capabilities,
    caps_before_tls: Option<Capabilities>,
    certificate: Option<CertificateInfo>,
    encrypted: bool,
    /// Where it is connected, for OAUTHBEARER's host and port.
    host: String,
    port: u16,
}

/// Connects, greets and asks for capabilities, upgrading with STLS when configured.
pub async fn connect(options: &ConnectOptions) -> Result<Greeted, Error> {
    let implicit_tls = options.security == Security::Tls;
    let (stream, certificate) = open_stream(options, implicit_tls).await?;
    let mut session = greet(stream, options, implicit_tls).await?;
    session.certificate = certificate;
    if options.security == Security::StartTls {
        session = session.starttls(options).await?;
    }
    Ok(session)
}

/// Starts a session over a stream that is already connected — an in-memory pipe in tests,
/// say: reads the greeting and asks for capabilities. `encrypted` says whether the stream
/// is protected (the choice of login method depends on it); `options` gives the host and
/// port (for OAUTHBEARER) and the response timeout. No TLS is set up here.
pub async fn over(
    stream: impl Stream + 'static,
    options: &ConnectOptions,
    encrypted: bool,
) -> Result<Greeted, Error> {
    greet(Box::new(stream), options, encrypted).await
}

async fn greet(
    stream: Box<dyn Stream>,
    options: &ConnectOptions,
    encrypted: bool,
) -> Result<Greeted, Error> {
    let mut conn = Connection::new(stream, options.timeouts.response);
    let greeting = match conn.read_status().await? {
        Status::Ok { text } => text,
        status @ Status::Err { .. } => return Err(greeting_error(status)),
        other => {
            return Err(ErrorKind::Protocol(format!("unexpected greeting {other}")).into());
        }
    };
    let caps = capabilities(&mut conn).await?;
    Ok(Greeted {
        conn,
        greeting,
        caps,
        caps_before_tls: None,
        certificate: None,
        encrypted,
        host: options.host.clone(),
        port: options.port,
    })
}

/// How a fetch reaches its server: [`Tcp`] is the network; tests plug in streams of their
/// own (see [`over`]).
pub trait Connector: Send + Sync {
    fn connect<'a>(
        &'a self,
        options: &'a ConnectOptions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Greeted, Error>> + 'a>>;
}

/// The network: [`connect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Connector for Tcp {
    fn connect<'a>(
        &'a self,
        options: &'a ConnectOptions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Greeted, Error>> + 'a>> {
        Box::pin(connect(options))
    }
}

async fn capabilities(conn: &mut Connection) -> Result<Capabilities, Error> {
    match conn.command(&Command::Capa).await? {
        Status::Ok { .. } => {
            let mut lines = Vec::new();
            conn.read_listing(MAX_CAPA, |l| lines.push(l.to_vec()))
                .await?;
            Ok(Capabilities::from_lines(lines.iter().map(Vec::as_slice)))
        }
        // An RFC 1939 server without CAPA.
        Status::Err { .. } => Ok(Capabilities::default()),
        other => Err(ErrorKind::Protocol(format!("unexpected answer to CAPA: {other}")).into()),
    }
}

impl Greeted {
    async fn starttls(mut self, options: &ConnectOptions) -> Result<Self, Error> {
        if !self.caps.stls {
            return Err(ErrorKind::StlsUnavailable.into());
        }
        match self.conn.command(&Command::Stls).await? {
            Status::Ok { .. } => {}
            status => return Err(ErrorKind::StlsRefused(status).into()),
        }
        let (stream, discarded) = self.conn.into_stream();
        if discarded > 0 {
            warn!("discarded {discarded} bytes the server sent before the TLS handshake");
        }
        let (tls, certificate) = upgrade_stream(options, stream).await?;
        let mut conn = Connection::new(tls, options.timeouts.response);
        let caps = capabilities(&mut conn).await?;
        Ok(Self {
            conn,
            greeting: self.greeting,
            caps_before_tls: Some(self.caps),
            caps,
            certificate,
            encrypted: true,
            host: self.host,
            port: self.port,
        })
    }

    /// The greeting text after `+OK`.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Capabilities as currently known (after STLS, if used).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Capabilities the server showed before STLS, if STLS was used.
    pub fn capabilities_before_tls(&self) -> Option<&Capabilities> {
        self.caps_before_tls.as_ref()
    }

    /// The server's certificate, if the connection is encrypted.
    pub fn certificate(&self) -> Option<&CertificateInfo> {
        self.certificate.as_ref()
    }

    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// The login method [`login`](Self::login) would use.
    pub fn auth_method(
        &self,
        forced: Option<AuthMethod>,
        token: bool,
    ) -> Result<AuthMethod, Error> {
        auth::choose_method(
            forced,
            &self.caps,
            auth::apop_timestamp(&self.greeting),
            self.encrypted,
            token,
        )
    }

    /// Logs in. `forced` is the configured method; `None` picks one from the capabilities.
    pub async fn login(
        mut self,
        credentials: &Credentials,
        forced: Option<AuthMethod>,
    ) -> Result<Authenticated, Error> {
        let method = self.auth_method(forced, credentials.token)?;
        debug!("logging in with {method}");
        let at = auth::LoginContext {
            greeting: &self.greeting,
            host: &self.host,
            port: self.port,
        };
        let delay = self.caps.login_delay;
        auth::login(&mut self.conn, method, credentials, at)
            .await
            .map_err(|e| e.with_login_delay(delay))?;
        let before = std::mem::take(&mut self.caps);
        let caps = capabilities(&mut self.conn).await?;
        Ok(Authenticated {
            conn: self.conn,
            caps,
            caps_before_login: before,
            certificate: self.certificate,
            method,
        })
    }
}

/// What to retrieve of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCommand {
    /// The whole message (RETR).
    Whole,
    /// The headers only (TOP n 0).
    Headers,
}

/// Receives retrieved messages. Methods are called in message order; an error aborts the
/// retrieval and leaves the connection unusable (part of a body is still on the wire).
pub trait RetrieveHandler {
    /// The server answered `+OK` to RETR for `msg`; its body follows.
    fn start(&mut self, msg: MsgNum) -> std::io::Result<()>;
    /// Message bytes, dot-unstuffed, CRLF line endings as sent.
    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// The body of `msg` is complete.
    fn finish(&mut self, msg: MsgNum, octets: u64) -> std::io::Result<()>;
    /// The server answered `-ERR` to RETR for `msg`; nothing was received for it.
    fn refused(&mut self, msg: MsgNum, status: Status) -> std::io::Result<()>;
}

/// A logged-in session (RFC 1939 TRANSACTION state).
#[derive(Debug)]
pub struct Authenticated {
    conn: Connection,
    caps: Capabilities,
    caps_before_login: Capabilities,
    certificate: Option<CertificateInfo>,
    method: AuthMethod,
}

impl Authenticated {
    /// Capabilities after login.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Capabilities before login (after STLS, if used).
    pub fn capabilities_before_login(&self) -> &Capabilities {
        &self.caps_before_login
    }

    pub fn certificate(&self) -> Option<&CertificateInfo> {
        self.certificate.as_ref()
    }

    /// The method used to log in.
    pub fn auth_method(&self) -> AuthMethod {
        self.method
    }

    /// Whether commands are pipelined.
    pub fn pipelining(&self) -> bool {
        self.caps.pipelining
    }

    fn window(&self) -> usize {
        if self.caps.pipelining {
            PIPELINE_WINDOW
        } else {
            1
        }
    }

    async fn expect_ok(&mut self, command: Command<'_>) -> Result<String, Error> {
        let name = command.name();
        match self.conn.command(&command).await? {
            Status::Ok { text } => Ok(text),
            status @ Status::Err { .. } => Err(command_error(name, status)),
            other => {
                Err(ErrorKind::Protocol(format!("unexpected answer to {name}: {other}")).into())
            }
        }
    }

    /// STAT: message count and total size.
    pub async fn stat(&mut self) -> Result<(u32, u64), Error> {
        let text = self.expect_ok(Command::Stat).await?;
        parse_stat(&text).ok_or_else(|| {
            ErrorKind::Protocol(format!("unreadable answer to STAT: {text:?}")).into()
        })
    }

    async fn read_uidl(&mut self, status: Status) -> Result<Uidl, Error> {
        match status {
            Status::Ok { .. } => {}
            Status::Err { code: None, .. } => return Err(ErrorKind::NoUidl.into()),
            status => return Err(command_error("UIDL", status)),
        }
        let mut entries = Uidl::default();
        let mut bad = 0usize;
        let mut too_long = false;
        self.conn
            .read_listing(MAX_LISTING, |line| match UidlEntry::parse(line) {
                Some(e) => too_long |= entries.push(e).is_err(),
                None => bad += 1,
            })
            .await?;
        if too_long {
            return Err(ErrorKind::Protocol("the UIDL listing is too long".into()).into());
        }
        if bad > 0 {
            warn!("ignored {bad} unreadable lines in the server's UIDL listing");
        }
        Ok(entries)
    }

    async fn read_list(&mut self, status: Status) -> Result<Vec<ListEntry>, Error> {
        if let status @ Status::Err { .. } = status {
            return Err(command_error("LIST", status));
        }
        let mut entries = Vec::new();
        self.conn
            .read_listing(MAX_LISTING, |line| {
                if let Some(e) = ListEntry::parse(line) {
                    entries.push(e);
                }
            })
            .await?;
        Ok(entries)
    }

    /// UIDL for all messages. A server without UIDL gives [`ErrorKind::NoUidl`].
    pub async fn uidl(&mut self) -> Result<Uidl, Error> {
        let status = self.conn.command(&Command::Uidl(None)).await?;
        self.read_uidl(status).await
    }

    /// LIST for all messages.
    pub async fn list(&mut self) -> Result<Vec<ListEntry>, Error> {
        let status = self.conn.command(&Command::List(None)).await?;
        self.read_list(status).await
    }

    /// `LIST n` for each of `msgs`, pipelined: the sizes of a few messages without listing
    /// the whole mailbox. A message the server refuses (`-ERR`) or answers unreadably is
    /// left out, as an unreadable line of a whole listing is; an answer about another
    /// message than the one asked for is a protocol error.
    pub async fn list_some(&mut self, msgs: &[MsgNum]) -> Result<Vec<ListEntry>, Error> {
        let window = if self.caps.pipelining { LIST_WINDOW } else { 1 };
        let mut pipeline = Pipeline::new(window, msgs.len());
        let mut entries = Vec::with_capacity(msgs.len());
        for (received, &msg) in msgs.iter().enumerate() {
            pipeline
                .refill(&mut self.conn, received, |i| Command::List(Some(msgs[i])))
                .await?;
            match self.conn.read_status().await? {
                Status::Ok { text } => match ListEntry::parse(text.as_bytes()) {
                    Some(e) if e.msg == msg => entries.push(e),
                    Some(e) => {
                        return Err(ErrorKind::Protocol(format!(
                            "the server answered LIST {msg} about message {}",
                            e.msg
                        ))
                        .into());
                    }
                    None => warn!("ignored an unreadable answer to LIST {msg}: {text:?}"),
                },
                Status::Err { .. } => {}
                other => {
                    return Err(ErrorKind::Protocol(format!(
                        "unexpected answer to LIST {msg}: {other}"
                    ))
                    .into());
                }
            }
        }
        Ok(entries)
    }

    /// Retrieves `msgs` in order, streaming each body to `handler`.
    pub async fn retrieve(
        &mut self,
        msgs: &[MsgNum],
        handler: &mut impl RetrieveHandler,
    ) -> Result<(), Error> {
        self.retrieve_with(msgs, BodyCommand::Whole, handler).await
    }

    /// Retrieves `msgs` in order, whole (RETR) or headers only (TOP n 0).
    pub async fn retrieve_with(
        &mut self,
        msgs: &[MsgNum],
        what: BodyCommand,
        handler: &mut impl RetrieveHandler,
    ) -> Result<(), Error> {
        let command = |n| match what {
            BodyCommand::Whole => Command::Retr(n),
            BodyCommand::Headers => Command::Top(n, 0),
        };
        let mut pipeline = Pipeline::new(self.window(), msgs.len());
        for (received, &msg) in msgs.iter().enumerate() {
            pipeline
                .refill(&mut self.conn, received, |i| command(msgs[i]))
                .await?;
            match self.conn.read_status().await? {
                Status::Ok { .. } => {
                    handler.start(msg).map_err(|e| self.local(e))?;
                    let octets = self.conn.read_body(|d| handler.data(d)).await?;
                    handler.finish(msg, octets).map_err(|e| self.local(e))?;
                }
                status @ Status::Err { .. } => {
                    handler.refused(msg, status).map_err(|e| self.local(e))?;
                }
                other => {
                    return Err(ErrorKind::Protocol(format!(
                        "unexpected answer to {} {msg}: {other}",
                        command(msg).name()
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    fn local(&mut self, e: std::io::Error) -> Error {
        // Answers to pipelined commands may still be on the wire: the session cannot go on.
        self.conn.mark_broken();
        ErrorKind::Local(e).into()
    }

    /// Marks `msgs` for deletion. Returns the server's answer for each; the deletions take
    /// effect only when [`quit`](Self::quit) succeeds (RFC 1939 UPDATE state).
    pub async fn delete(&mut self, msgs: &[MsgNum]) -> Result<Vec<(MsgNum, Status)>, Error> {
        let mut pipeline = Pipeline::new(self.window(), msgs.len());
        let mut answers = Vec::with_capacity(msgs.len());
        for (received, &msg) in msgs.iter().enumerate() {
            pipeline
                .refill(&mut self.conn, received, |i| Command::Dele(msgs[i]))
                .await?;
            let status = self.conn.read_status().await?;
            answers.push((msg, status));
        }
        Ok(answers)
    }

    /// RSET: undo deletion marks of this session.
    pub async fn rset(&mut self) -> Result<(), Error> {
        self.expect_ok(Command::Rset).await.map(drop)
    }

    /// NOOP: keep the session alive.
    pub async fn noop(&mut self) -> Result<(), Error> {
        self.expect_ok(Command::Noop).await.map(drop)
    }

    /// Whether an earlier error left the connection unusable (then only dropping it is
    /// possible; without QUIT the server deletes nothing).
    pub fn is_broken(&self) -> bool {
        self.conn.is_broken()
    }

    /// QUIT: ends the session; the server now deletes what was marked. `Ok` means the
    /// deletions are done; an error means none can be counted on.
    pub async fn quit(mut self) -> Result<(), Error> {
        let result = self.expect_ok(Command::Quit).await.map(drop);
        self.conn.shutdown().await;
        result
    }
}

/// Commands sent ahead of their answers: at most `window` outstanding (1 without
/// PIPELINING, so strictly one at a time).
struct Pipeline {
    window: usize,
    sent: usize,
    total: usize,
}

impl Pipeline {
    fn new(window: usize, total: usize) -> Self {
        Self {
            window,
            sent: 0,
            total,
        }
    }

    /// Before the answer to command `received` is read: sends what the window allows
    /// (`command(i)` is the `i`-th command) and flushes.
    async fn refill(
        &mut self,
        conn: &mut Connection,
        received: usize,
        command: impl Fn(usize) -> Command<'static>,
    ) -> Result<(), Error> {
        while self.sent < self.total && self.sent - received < self.window {
            conn.queue(&command(self.sent))?;
            self.sent += 1;
        }
        conn.flush().await
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
