//! TLS through native-tls: SChannel on Windows, Security.framework on macOS. Both consult the
//! system's trust store as a certificate needs it, so there is nothing to load in advance.

use native_tls::{Certificate, Protocol, TlsConnector};

use super::super::connection::Stream;
use super::super::error::{Error, ErrorKind};

/// Why a TLS set-up or handshake failed.
pub type Failure = native_tls::Error;

/// A client configuration, shared by every session with the same trust.
#[derive(Clone)]
pub(crate) struct Connector(tokio_native_tls::TlsConnector);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl Connector {
    /// The system's roots and `extra_roots`, checked against the host name; or, when
    /// `verify` is false, any certificate at all (the caller checks a pin itself).
    pub(crate) fn new(verify: bool, extra_roots: &[Vec<u8>]) -> Result<Self, Error> {
        let mut builder = TlsConnector::builder();
        builder.min_protocol_version(Some(Protocol::Tlsv12));
        if verify {
            for root in extra_roots {
                for cert in parse_roots(root).map_err(ErrorKind::Certificate)? {
                    builder.add_root_certificate(cert);
                }
            }
        } else {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true)
                .disable_built_in_roots(true);
        }
        let connector = builder.build().map_err(ErrorKind::Tls)?;
        Ok(Self(connector.into()))
    }

    /// The handshake with `host` over `stream`: the TLS stream, and the certificate the server
    /// presented (DER).
    pub(crate) async fn connect<S: Stream + 'static>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<(Box<dyn Stream>, Option<Vec<u8>>), Failure> {
        let tls = self.0.connect(host, stream).await?;
        let der = tls
            .get_ref()
            .peer_certificate()
            .ok()
            .flatten()
            .and_then(|c| c.to_der().ok());
        Ok((Box::new(tls), der))
    }
}

/// The certificates of a CA file: PEM (one or more) or DER (one).
pub(super) fn parse_roots(bytes: &[u8]) -> Result<Vec<Certificate>, String> {
    super::read_roots(bytes, Certificate::stack_from_pem, Certificate::from_der)
}
