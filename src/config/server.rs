//! The keys that say where an account's server is and how the connection is protected.

use std::path::PathBuf;

use crate::keys::{Checker, Layered, keys};
use crate::pop3::{Security, TlsOptions};

keys! {
    /// The server and TLS.
    pub struct ServerKeys {
        /// The POP3 server's host name (or IP address, an IPv6 one without brackets).
        host: "host" { default: "none (pop.gmail.com or outlook.office365.com with oauth2-provider \"google\" or \"microsoft\")", example: "\"pop.example.net\"" },
        /// The server's port.
        port: "port" { default: "995 for \"tls\", 110 otherwise", example: "995" },
        /// How the connection is protected: "tls" (implicit TLS from the first byte),
        /// "starttls" (a plain connection upgraded with STLS; no STLS, no session) or
        /// "dangerous-plaintext" (no encryption at all).
        security: "security" { default: "\"tls\"", example: "\"starttls\"" },
        /// Extra certificate authorities to trust (PEM or DER), beside the system's.
        ca_file: "ca-file" { default: "", example: "\"~/.config/popsync/my-ca.pem\"" },
        /// Trust exactly this certificate (its SHA-256, as `popsync check` prints it),
        /// whoever signed it.
        tls_fingerprint: "tls-fingerprint" { default: "", example: "\"sha256:AB:CD:...:EF\"" },
        /// Check no certificate at all: anyone on the network path could read the session.
        dangerous_accept_invalid_certs: "dangerous-accept-invalid-certs" { default: "false", example: "true" },
    }
}

/// Where the server is and how to trust it.
#[derive(Debug, Clone)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Extra certificate authorities to trust.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of the one server certificate to trust (`tls-fingerprint`).
    pub tls_fingerprint: Option<[u8; 32]>,
    /// Trust any certificate (`dangerous-accept-invalid-certs`).
    pub dangerous_accept_invalid_certs: bool,
}

impl Server {
    /// How to connect to it, with `timeout` for every step; `ca-file` is read now (an
    /// error is that file's).
    pub fn connect_options(
        &self,
        timeout: std::time::Duration,
    ) -> std::io::Result<crate::pop3::ConnectOptions> {
        let mut tls = TlsOptions {
            pinned_sha256: self.tls_fingerprint,
            dangerous_accept_invalid: self.dangerous_accept_invalid_certs,
            ..TlsOptions::default()
        };
        if let Some(path) = &self.ca_file {
            tls.extra_roots.push(std::fs::read(path)?);
        }
        Ok(crate::pop3::ConnectOptions {
            host: self.host.clone(),
            port: self.port,
            security: self.security,
            tls,
            timeouts: crate::pop3::Timeouts::uniform(timeout),
        })
    }
}

/// The protocol a server speaks: its default ports and how it is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pop3,
    Imap,
}

impl Protocol {
    /// The port when none is set: the protocol's TLS port, else its plain one.
    pub fn default_port(self, security: Security) -> u16 {
        match (self, security) {
            (Self::Pop3, s) => s.default_port(),
            (Self::Imap, Security::Tls) => 993,
            (Self::Imap, _) => 143,
        }
    }
}

/// Reads the server keys; `preset_host` is the host an OAuth2 preset names, for an account
/// that sets none. Whatever is wrong is reported (and the host is then empty).
pub fn read(
    c: &mut Checker<'_>,
    layers: &Layered<'_>,
    preset_host: Option<&str>,
    protocol: Protocol,
) -> Server {
    let keys = ServerKeys::take(layers);
    let host = match preset_host {
        Some(h) if !keys.host.is_set() => Some((h.to_owned(), 0)),
        _ => keys.host.required(
            c,
            match protocol {
                Protocol::Pop3 => "the POP3 server's host name, e.g. host = \"pop.example.net\"",
                Protocol::Imap => "the IMAP server's host name, e.g. host = \"imap.example.net\"",
            },
        ),
    };
    if let Some((h, at)) = &host
        && h.chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '/')
    {
        c.problem(
            Some(*at),
            Some("host"),
            "a host name cannot contain spaces or slashes",
        );
    } else if let Some((h, at)) = &host
        && h.contains(':')
        && h.parse::<std::net::Ipv6Addr>().is_err()
    {
        c.problem(
            Some(*at),
            Some("host"),
            format!(
                "{h:?} is not a host name; the port goes in `port` (an IPv6 address is written without brackets)"
            ),
        );
    }

    let security = keys
        .security
        .one_of(
            c,
            &[
                ("tls", Security::Tls),
                ("starttls", Security::StartTls),
                ("dangerous-plaintext", Security::DangerousPlaintext),
            ],
        )
        .unwrap_or(Security::Tls);

    let port = match keys.port.value() {
        None => protocol.default_port(security),
        Some(toml::de::DeValue::Integer(i)) => match i.as_str().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                c.problem(
                    keys.port.at(),
                    Some("port"),
                    format!("must be a number from 1 to 65535, not {}", i.as_str()),
                );
                0
            }
        },
        Some(other) => {
            c.problem(
                keys.port.at(),
                Some("port"),
                format!("must be a number (no quotes), not {}", other.type_str()),
            );
            0
        }
    };

    let ca_file = keys.ca_file.path(c).map(|(p, at)| {
        match std::fs::read(&p) {
            Err(e) => c.problem(
                Some(at),
                Some("ca-file"),
                format!("cannot read {}: {e}", p.display()),
            ),
            Ok(bytes) => {
                let tls = TlsOptions {
                    extra_roots: vec![bytes],
                    ..TlsOptions::default()
                };
                if let Err(e) = tls.validate() {
                    c.problem(Some(at), Some("ca-file"), format!("{}: {e}", p.display()));
                }
            }
        }
        p
    });

    let tls_fingerprint = match keys.tls_fingerprint.string(c) {
        None => None,
        Some((s, at)) => match crate::pop3::parse_fingerprint(s) {
            Ok(pin) => Some((pin, at)),
            Err(e) => {
                c.problem(Some(at), Some("tls-fingerprint"), e);
                None
            }
        },
    };
    let (dangerous_accept_invalid_certs, accept_at) =
        keys.dangerous_accept_invalid_certs.boolean(c, false);
    if let (Some((_, at)), true) = (&tls_fingerprint, dangerous_accept_invalid_certs) {
        c.problem(
            Some((*at).max(accept_at.unwrap_or(0))),
            Some("dangerous-accept-invalid-certs"),
            "set either `tls-fingerprint` (trust exactly that certificate) or \
             `dangerous-accept-invalid-certs` (trust any), not both",
        );
    }
    if security == Security::DangerousPlaintext {
        for (key, set, at) in [
            (
                "tls-fingerprint",
                tls_fingerprint.is_some(),
                tls_fingerprint.map(|(_, at)| at),
            ),
            (
                "dangerous-accept-invalid-certs",
                dangerous_accept_invalid_certs,
                accept_at,
            ),
        ] {
            if set {
                c.problem(
                    at,
                    Some(key),
                    "has no meaning with security = \"dangerous-plaintext\" (there is no TLS)",
                );
            }
        }
    }
    Server {
        host: host.map(|(h, _)| h).unwrap_or_default(),
        port,
        security,
        ca_file,
        tls_fingerprint: tls_fingerprint.map(|(pin, _)| pin),
        dangerous_accept_invalid_certs,
    }
}
