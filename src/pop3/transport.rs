//! How a session reaches its server: TCP (each resolved address given the whole connect
//! limit), TLS over it — from the first byte or after a protocol's STARTTLS — with the
//! certificate checked (or pinned), and the limits on each step. POP3 sessions start here,
//! and so do IMAP delivery's, over the same code.

use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::connection::Stream;
use super::error::{Error, ErrorKind, Phase};
use super::tls::{CertificateInfo, TlsOptions, check_pin, handshake_error};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Implicit TLS from the first byte (POP3S, port 995). The default.
    Tls,
    /// Plain TCP upgraded with STLS (RFC 2595, port 110). If the server does not offer STLS
    /// or refuses it, the session ends: there is no fallback to plaintext.
    StartTls,
    /// No encryption at all. The password and every message cross the network readable by
    /// anyone on the path. Only for servers on the same machine or a trusted network.
    DangerousPlaintext,
}

impl Security {
    pub fn default_port(self) -> u16 {
        match self {
            Self::Tls => 995,
            Self::StartTls | Self::DangerousPlaintext => 110,
        }
    }
}

/// Time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Name resolution plus TCP connect.
    pub connect: Duration,
    /// The TLS handshake.
    pub handshake: Duration,
    /// Waiting for any byte of a response (an idle limit, not a limit on a whole transfer).
    pub response: Duration,
}

impl Timeouts {
    /// The same limit for everything.
    pub fn uniform(limit: Duration) -> Self {
        Self {
            connect: limit,
            handshake: limit,
            response: limit,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls: TlsOptions,
    pub timeouts: Timeouts,
}

/// Read buffer beneath TLS.
const TLS_READ_BUFFER: usize = 64 * 1024;

/// A byte stream to the server of `options`: TCP, with TLS from the first byte when
/// `implicit_tls` (for another protocol over the same transport, as IMAP delivery is).
pub async fn open_stream(
    options: &ConnectOptions,
    implicit_tls: bool,
) -> Result<(Box<dyn Stream>, Option<CertificateInfo>), Error> {
    let tcp = tcp_connect(options).await?;
    let _ = tcp.set_nodelay(true);
    debug!("connected to {}:{}", options.host, options.port);
    if implicit_tls {
        tls_handshake(options, Box::new(tcp)).await
    } else {
        Ok((Box::new(tcp), None))
    }
}

/// A TLS session over `stream` (after a STARTTLS of another protocol), checked as every
/// session's is.
pub async fn upgrade_stream(
    options: &ConnectOptions,
    stream: Box<dyn Stream>,
) -> Result<(Box<dyn Stream>, Option<CertificateInfo>), Error> {
    tls_handshake(options, stream).await
}

async fn tcp_connect(options: &ConnectOptions) -> Result<TcpStream, Error> {
    let address = format!("{}:{}", options.host, options.port);
    let limit = options.timeouts.connect;
    let timeout = || -> Error {
        ErrorKind::Timeout {
            phase: Phase::Connect,
            after: limit,
        }
        .into()
    };
    let addrs: Vec<_> = tokio::time::timeout(
        limit,
        tokio::net::lookup_host((options.host.as_str(), options.port)),
    )
    .await
    .map_err(|_| timeout())?
    .map_err(|source| ErrorKind::Resolve {
        host: options.host.clone(),
        source,
    })?
    .collect();
    // Each address gets the whole limit: an address that swallows packets (a broken IPv6
    // route, say) must not use up the time of the next one.
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => {
                debug!("cannot connect to {addr}: {e}");
                last = Some(e);
            }
            Err(_) => {
                debug!("connecting to {addr} timed out");
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("timed out after {}s", limit.as_secs_f32()),
                ));
            }
        }
    }
    Err(ErrorKind::Connect {
        address,
        source: last.unwrap_or_else(|| std::io::Error::other("no addresses found")),
    }
    .into())
}

async fn tls_handshake(
    options: &ConnectOptions,
    stream: Box<dyn Stream>,
) -> Result<(Box<dyn Stream>, Option<CertificateInfo>), Error> {
    let connector = options.tls.connector()?;
    // OpenSSL reads a record header, then the record, each with its own read: buffering
    // below TLS turns thousands of small reads into a few large ones.
    let stream = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, stream);
    let handshake = connector.connect(options.host.as_str(), stream);
    let (tls, der) = tokio::time::timeout(options.timeouts.handshake, handshake)
        .await
        .map_err(|_| {
            Error::from(ErrorKind::Timeout {
                phase: Phase::TlsHandshake,
                after: options.timeouts.handshake,
            })
        })?
        .map_err(handshake_error)?;
    check_pin(&options.tls, der.as_deref())?;
    if options.tls.pinned_sha256.is_some() {
        debug!(
            "TLS established with {}, the pinned certificate",
            options.host
        );
    } else if options.tls.dangerous_accept_invalid {
        warn!(
            "TLS with {} established WITHOUT checking its certificate \
             (dangerous-accept-invalid-certs = true): anyone on the network path could be \
             reading this session",
            options.host
        );
    } else {
        debug!("TLS established with {}", options.host);
    }
    let certificate = der.map(|der| CertificateInfo::from_der(&der));
    Ok((tls, certificate))
}
