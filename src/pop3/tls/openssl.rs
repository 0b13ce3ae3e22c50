//! TLS through OpenSSL, on Linux and the other Unix systems but macOS.
//!
//! OpenSSL's ready-made client set-up (`SslConnector::builder`, which native-tls uses) reads
//! the whole system CA bundle into memory before the first connection, and native-tls then
//! reads it a second time. A POP3 session needs one root, so popsync sets up the same client
//! (the same options, ciphers, TLS 1.2 at least, peer and host name checked) but lets OpenSSL
//! look roots up in the hashed certificate directory (`/etc/ssl/certs/<hash>.0`) when a chain
//! needs one. Where there is no such directory, or `SSL_CERT_FILE` names a bundle, the bundle
//! is read as before.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;

use openssl::error::ErrorStack;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslVerifyMode, SslVersion,
};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509, X509VerifyResult};
use tracing::debug;

use super::super::connection::Stream;
use super::super::error::{Error, ErrorKind};

/// Why a TLS set-up or handshake failed, in OpenSSL's words (and, for a refused
/// certificate, the reason the chain was refused).
#[derive(Debug)]
pub struct Failure {
    error: Box<dyn std::error::Error + Send + Sync>,
    verify: Option<X509VerifyResult>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verify {
            Some(v) if v != X509VerifyResult::OK => write!(f, "{} ({v})", self.error),
            _ => write!(f, "{}", self.error),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

impl From<ErrorStack> for Failure {
    fn from(e: ErrorStack) -> Self {
        Self {
            error: Box::new(e),
            verify: None,
        }
    }
}

/// A client configuration, shared by every session with the same trust.
#[derive(Clone)]
pub(crate) struct Connector {
    context: SslContext,
    verify: bool,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// The system's roots and `extra_roots`, checked against the host name; or, when
    /// `verify` is false, any certificate at all (the caller checks a pin itself).
    pub(crate) fn new(verify: bool, extra_roots: &[Vec<u8>]) -> Result<Self, Error> {
        let tls = |e: ErrorStack| Error::from(ErrorKind::Tls(e.into()));
        let mut ctx = client_context().map_err(tls)?;
        if verify {
            system_roots(&mut ctx).map_err(tls)?;
            for root in extra_roots {
                for cert in parse_roots(root).map_err(ErrorKind::Certificate)? {
                    // A root that is already there (the same CA in the bundle) is no error.
                    if let Err(e) = ctx.cert_store_mut().add_cert(cert) {
                        debug!("extra root not added: {e}");
                    }
                }
            }
            ctx.set_verify(SslVerifyMode::PEER);
        } else {
            ctx.set_verify(SslVerifyMode::NONE);
        }
        Ok(Self {
            context: ctx.build(),
            verify,
        })
    }

    /// The handshake with `host` over `stream`: the TLS stream, and the certificate the server
    /// presented (DER).
    pub(crate) async fn connect<S: Stream + 'static>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<(Box<dyn Stream>, Option<Vec<u8>>), Failure> {
        let mut ssl = Ssl::new(&self.context)?;
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_none() {
            // Server Name Indication, for a host name only (RFC 6066).
            ssl.set_hostname(host)?;
        }
        if self.verify {
            let param = ssl.param_mut();
            param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
            match ip {
                Some(ip) => param.set_ip(ip)?,
                None => param.set_host(host)?,
            }
        }
        let mut tls = tokio_openssl::SslStream::new(ssl, stream)?;
        if let Err(e) = Pin::new(&mut tls).connect().await {
            let verify = tls.ssl().verify_result();
            return Err(Failure {
                error: Box::new(e),
                verify: Some(verify),
            });
        }
        let der = tls.ssl().peer_certificate().and_then(|c| c.to_der().ok());
        Ok((Box::new(tls), der))
    }
}

/// What OpenSSL's `SslConnector` sets up for a client, less loading the CA bundle.
fn client_context() -> Result<SslContextBuilder, ErrorStack> {
    let mut ctx = SslContextBuilder::new(SslMethod::tls_client())?;
    let mut options = SslOptions::ALL
        | SslOptions::NO_COMPRESSION
        | SslOptions::NO_SSLV2
        | SslOptions::NO_SSLV3
        | SslOptions::SINGLE_DH_USE
        | SslOptions::SINGLE_ECDH_USE;
    options &= !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS;
    ctx.set_options(options);
    ctx.set_mode(
        SslMode::AUTO_RETRY
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::RELEASE_BUFFERS,
    );
    ctx.set_cipher_list("DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK")?;
    ctx.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    Ok(ctx)
}

/// Where the system's roots are: hashed directories are looked up when a root is needed; a
/// bundle file is read whole, so only when it must be (named by `SSL_CERT_FILE`, or no hashed
/// directory found). Where neither is found, OpenSSL's own compiled-in locations.
fn system_roots(ctx: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    let probe = openssl_probe::probe();
    let mut hashed: Vec<&Path> = Vec::new();
    for dir in &probe.cert_dir {
        // SSL_CERT_DIR is often the usual directory itself.
        if !hashed.contains(&dir.as_path()) && is_hashed(dir) {
            hashed.push(dir);
        }
    }
    let file_asked_for = std::env::var_os("SSL_CERT_FILE").is_some();
    let file = probe
        .cert_file
        .as_deref()
        .filter(|_| file_asked_for || hashed.is_empty());
    if hashed.is_empty() && file.is_none() {
        debug!("no CA directory or bundle found; OpenSSL's default locations");
        return ctx.set_default_verify_paths();
    }
    if let Some(file) = file {
        debug!("CA bundle {}", file.display());
        if let Err(e) = ctx.load_verify_locations(Some(file), None) {
            debug!("CA bundle {} not read: {e}", file.display());
        }
    }
    for dir in hashed {
        debug!("CA directory {}", dir.display());
        if let Err(e) = ctx.load_verify_locations(None, Some(dir)) {
            debug!("CA directory {} not used: {e}", dir.display());
        }
    }
    Ok(())
}

/// Whether `dir` holds certificates under their subject hash (`9d04f354.0`), as `c_rehash`
/// and `update-ca-certificates` leave them: only then can OpenSSL look a root up in it.
fn is_hashed(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        name.len() >= 10
            && name[..8].iter().all(u8::is_ascii_hexdigit)
            && name[8] == b'.'
            && name[9..].iter().all(u8::is_ascii_digit)
    })
}

/// The certificates of a CA file: PEM (one or more) or DER (one).
pub(super) fn parse_roots(bytes: &[u8]) -> Result<Vec<X509>, String> {
    super::read_roots(bytes, X509::stack_from_pem, X509::from_der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_directory_is_told_from_a_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca-bundle.crt"), "x").unwrap();
        std::fs::write(dir.path().join("README"), "x").unwrap();
        assert!(!is_hashed(dir.path()));
        std::fs::write(dir.path().join("9d04f35.0"), "x").unwrap();
        assert!(!is_hashed(dir.path()), "seven digits are no hash");
        std::fs::write(dir.path().join("9d04f354.0"), "x").unwrap();
        assert!(is_hashed(dir.path()));
        assert!(!is_hashed(&dir.path().join("missing")));
    }
}
