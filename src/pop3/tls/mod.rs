//! TLS set-up and certificate facts.
//!
//! By default certificates are verified against the system's roots plus any extra roots the
//! account names (`ca-file`); TLS 1.2 is the minimum. Two settings change that:
//!
//! - a pinned fingerprint (`tls-fingerprint`): the server must present exactly that
//!   certificate (SHA-256 of its DER encoding), which is then trusted on its own — no CA,
//!   name or date check, as with a self-signed certificate the user has checked. Anything
//!   else is [`ErrorKind::FingerprintMismatch`], showing both fingerprints;
//! - `dangerous-accept-invalid-certs`: no check at all (for broken servers; loud in the log).
//!
//! A connector is built once per trust setting and process and shared by every session after
//! that: every account of a `fetch`, both sessions of a poll, every poll of the agent. A
//! reload that changes an account's `ca-file` gives it a new one.
//!
//! Two back ends do the TLS itself, with the same behaviour:
//!
//! - `openssl.rs` on Linux and the other Unix systems but macOS. It looks the system's roots up
//!   in the hashed certificate directory (`/etc/ssl/certs`) when the issuer is needed, instead
//!   of parsing the whole CA bundle before the first connection — twice, as native-tls does
//!   it. That parsing was most of what a one-shot TLS poll cost (about 40 ms of CPU and
//!   1.5 MB).
//! - `native.rs` (native-tls: SChannel on Windows, Security.framework on macOS), where the
//!   system's own store is already consulted lazily.
//!
//! [`CertificateInfo`] reads the few fields `popsync check` shows (subject, issuer, validity)
//! straight from the DER, and the SHA-256 fingerprint of the whole certificate, in the form
//! `tls-fingerprint` takes.

use std::fmt::Write as _;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use super::error::{Error, ErrorKind};

#[cfg(any(windows, target_vendor = "apple"))]
mod native;
#[cfg(any(windows, target_vendor = "apple"))]
use native as backend;
#[cfg(not(any(windows, target_vendor = "apple")))]
mod openssl;
#[cfg(not(any(windows, target_vendor = "apple")))]
use self::openssl as backend;

pub(crate) use backend::Connector;
/// Why a TLS set-up or handshake failed, in the TLS library's words.
pub use backend::Failure;

/// Trust settings for one account.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra trusted roots, as PEM text (may hold several certificates) or DER.
    pub extra_roots: Vec<Vec<u8>>,
    /// The SHA-256 of the one certificate to trust, instead of any CA.
    pub pinned_sha256: Option<[u8; 32]>,
    /// Trust any certificate at all.
    pub dangerous_accept_invalid: bool,
}

/// Formats a SHA-256 digest the way `popsync check` shows it and `tls-fingerprint` takes it.
pub fn format_fingerprint(digest: &[u8]) -> String {
    let mut out = String::from("sha256:");
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Reads a fingerprint: `sha256:` followed by 32 bytes in hex, with or without colons (or
/// spaces) between them, in either case; the prefix may be left out.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let hex = match t.split_once(':') {
        Some((algo, rest)) if algo.eq_ignore_ascii_case("sha256") => rest,
        Some((algo, _)) if !algo.chars().all(|c| c.is_ascii_hexdigit()) || algo.len() > 2 => {
            return Err(format!(
                "only SHA-256 fingerprints are supported, not {algo:?} (popsync check shows the right one)"
            ));
        }
        _ => t,
    };
    let digits: String = hex.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(
            "must be sha256: followed by 64 hex digits (as `popsync check` prints it, e.g. \"sha256:AB:CD:...\")"
                .into(),
        );
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).expect("hex checked");
    }
    Ok(out)
}

/// Checks the presented certificate against the pin, if there is one.
pub(crate) fn check_pin(options: &TlsOptions, der: Option<&[u8]>) -> Result<(), Error> {
    let Some(pin) = options.pinned_sha256 else {
        return Ok(());
    };
    let presented = der.map(Sha256::digest);
    match presented {
        Some(digest) if digest.as_slice() == pin => Ok(()),
        Some(digest) => Err(ErrorKind::FingerprintMismatch {
            expected: format_fingerprint(&pin),
            presented: format_fingerprint(&digest),
        }
        .into()),
        None => Err(ErrorKind::FingerprintMismatch {
            expected: format_fingerprint(&pin),
            presented: "no certificate".into(),
        }
        .into()),
    }
}

impl TlsOptions {
    /// Checks that the extra roots parse, returning how many certificates they hold.
    pub fn validate(&self) -> Result<usize, String> {
        let mut n = 0;
        for root in &self.extra_roots {
            n += backend::parse_roots(root)?.len();
        }
        Ok(n)
    }

    /// The connector for these settings: built at the first use, shared after that.
    pub(crate) fn connector(&self) -> Result<Connector, Error> {
        let key = Trust::of(self);
        let mut built = CONNECTORS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = built.iter().position(|(k, _)| *k == key) {
            // Most recently used last: the first is the one to drop when there are too many.
            let entry = built.remove(i);
            let connector = entry.1.clone();
            built.push(entry);
            return Ok(connector);
        }
        // A pin is checked after the handshake, against the exact certificate: no CA is
        // consulted, so none is loaded.
        let connector = Connector::new(key.verify, &key.extra_roots)?;
        if built.len() >= MAX_CONNECTORS {
            built.remove(0);
        }
        built.push((key, connector.clone()));
        Ok(connector)
    }
}

/// What a connector depends on: the extra roots, and whether certificates are checked at
/// all (a pin is checked apart from the connector).
#[derive(Debug, PartialEq, Eq)]
struct Trust {
    extra_roots: Vec<Vec<u8>>,
    verify: bool,
}

impl Trust {
    fn of(options: &TlsOptions) -> Self {
        let verify = options.pinned_sha256.is_none() && !options.dangerous_accept_invalid;
        Self {
            extra_roots: if verify {
                options.extra_roots.clone()
            } else {
                Vec::new()
            },
            verify,
        }
    }
}

/// Drops every connector built so far: the next session builds its own, reading the
/// system's CA bundle again (the agent does this when its configuration is reloaded, so that
/// an updated bundle is taken up without a restart).
pub fn forget_connectors() {
    CONNECTORS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Connectors built so far, least recently used first.
static CONNECTORS: Mutex<Vec<(Trust, Connector)>> = Mutex::new(Vec::new());
/// More trust settings than this in one process (accounts with many different `ca-file`s,
/// or a long-running agent whose `ca-file`s were edited): the least recently used is
/// dropped, and built again if it is needed again.
const MAX_CONNECTORS: usize = 8;

/// The certificates of a CA file, read by the back end's own parsers: PEM (one or more) or
/// DER (one). A file that is neither is told in words for people: the library's own are
/// about ASN.1 and its source lines.
fn read_roots<C, E: std::fmt::Display, F>(
    bytes: &[u8],
    pem: impl FnOnce(&[u8]) -> Result<Vec<C>, E>,
    der: impl FnOnce(&[u8]) -> Result<C, F>,
) -> Result<Vec<C>, String> {
    if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let certs = pem(bytes).map_err(|e| format!("the CA file is not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the CA file holds no certificate".into());
        }
        Ok(certs)
    } else {
        der(bytes).map(|c| vec![c]).map_err(|_| {
            "the CA file is neither PEM (text beginning \"-----BEGIN CERTIFICATE-----\") \
             nor DER (a binary certificate)"
                .to_owned()
        })
    }
}

/// Classifies a handshake failure: certificate problems are their own kind of error (the
/// user must act), everything else is a TLS error (possibly transient).
pub(crate) fn handshake_error(e: Failure) -> Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("verify") {
        ErrorKind::Certificate(text).into()
    } else if [
        "wrong version number",
        "unknown protocol",
        "packet length too long",
        "http request",
    ]
    .iter()
    .any(|m| lower.contains(m))
    {
        // What OpenSSL says when the other end answers in plain text.
        ErrorKind::NotTls(text).into()
    } else {
        ErrorKind::Tls(e).into()
    }
}

/// Facts about the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// SHA-256 of the DER encoding, as `sha256:AB:CD:...`.
    pub sha256: String,
}

impl CertificateInfo {
    /// Reads the certificate's facts from its DER encoding.
    pub fn from_der(der: &[u8]) -> Self {
        let sha256 = format_fingerprint(&Sha256::digest(der));
        let parsed = parse_tbs(der);
        let unknown = || "(could not be read)".to_owned();
        match parsed {
            Some(p) => Self {
                subject: p.subject,
                issuer: p.issuer,
                not_before: p.not_before,
                not_after: p.not_after,
                sha256,
            },
            None => Self {
                subject: unknown(),
                issuer: unknown(),
                not_before: unknown(),
                not_after: unknown(),
                sha256,
            },
        }
    }
}

struct Tbs {
    subject: String,
    issuer: String,
    not_before: String,
    not_after: String,
}

/// A DER element: tag and contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads one DER element from the front of `input`, returning it and the rest.
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, mut rest) = rest.split_first()?;
    let len = if len0 < 0x80 {
        len0 as usize
    } else {
        let n = (len0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((
        Tlv {
            tag,
            body: &rest[..len],
        },
        &rest[len..],
    ))
}

fn parse_tbs(der: &[u8]) -> Option<Tbs> {
    let (cert, _) = read_tlv(der)?;
    let (tbs, _) = read_tlv(cert.body)?;
    let mut rest = tbs.body;
    let (mut el, mut next) = read_tlv(rest)?;
    if el.tag == 0xA0 {
        // [0] version
        rest = next;
        (el, next) = read_tlv(rest)?;
    }
    // serialNumber
    if el.tag != 0x02 {
        return None;
    }
    let (_sig_alg, next) = read_tlv(next)?;
    let (issuer, next) = read_tlv(next)?;
    let (validity, next) = read_tlv(next)?;
    let (subject, _) = read_tlv(next)?;
    let (nb, vrest) = read_tlv(validity.body)?;
    let (na, _) = read_tlv(vrest)?;
    Some(Tbs {
        subject: name(subject.body)?,
        issuer: name(issuer.body)?,
        not_before: time(&nb)?,
        not_after: time(&na)?,
    })
}

fn name(mut rdns: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (set, rest) = read_tlv(rdns)?;
        rdns = rest;
        let mut attrs = set.body;
        while !attrs.is_empty() {
            let (atv, rest) = read_tlv(attrs)?;
            attrs = rest;
            let (oid, vrest) = read_tlv(atv.body)?;
            let (value, _) = read_tlv(vrest)?;
            let label = match oid.body {
                [0x55, 0x04, 0x03] => "CN".to_owned(),
                [0x55, 0x04, 0x06] => "C".to_owned(),
                [0x55, 0x04, 0x07] => "L".to_owned(),
                [0x55, 0x04, 0x08] => "ST".to_owned(),
                [0x55, 0x04, 0x0A] => "O".to_owned(),
                [0x55, 0x04, 0x0B] => "OU".to_owned(),
                [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01] => "emailAddress".to_owned(),
                other => oid_string(other),
            };
            let text = match value.tag {
                // BMPString: UTF-16BE
                0x1E => String::from_utf16_lossy(
                    &value
                        .body
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect::<Vec<_>>(),
                ),
                _ => String::from_utf8_lossy(value.body).into_owned(),
            };
            let text: String = text.chars().flat_map(char::escape_default).collect();
            parts.push(format!("{label}={text}"));
        }
    }
    Some(parts.join(", "))
}

fn oid_string(body: &[u8]) -> String {
    let mut out = String::new();
    let mut value: u64 = 0;
    for (i, &b) in body.iter().enumerate() {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if out.is_empty() && i < body.len() {
                let (a, b) = if value < 80 {
                    (value / 40, value % 40)
                } else {
                    (2, value - 80)
                };
                let _ = write!(out, "{a}.{b}");
            } else {
                let _ = write!(out, ".{value}");
            }
            value = 0;
        }
    }
    out
}

fn time(el: &Tlv<'_>) -> Option<String> {
    // UTCTime and GeneralizedTime are ASCII digits; anything else (a server can send any
    // bytes) is not a time, and must not be sliced as one.
    let s = std::str::from_utf8(el.body).ok().filter(|s| s.is_ascii())?;
    let (year, rest) = match el.tag {
        0x17 if s.len() >= 12 => {
            let yy: u32 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() >= 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let d = |i: usize| rest.get(i..i + 2);
    Some(format!(
        "{year}-{}-{} {}:{}:{} UTC",
        d(0)?,
        d(2)?,
        d(4)?,
        d(6)?,
        d(8)?
    ))
}

#[cfg(test)]
mod tests {

    #[test]
    fn fingerprints_read_in_every_usual_form_and_print_as_check_shows_them() {
        let d: Vec<u8> = (0u8..32).collect();
        let shown = format_fingerprint(&d);
        assert!(shown.starts_with("sha256:00:01:02:"), "{shown}");
        assert_eq!(parse_fingerprint(&shown).unwrap().as_slice(), d.as_slice());
        let bare: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_fingerprint(&bare).unwrap().as_slice(), d.as_slice());
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{bare}"))
                .unwrap()
                .as_slice(),
            d.as_slice()
        );
        assert!(
            parse_fingerprint("sha1:AB:CD")
                .unwrap_err()
                .contains("SHA-256")
        );
        assert!(parse_fingerprint("sha256:AB:CD").is_err());
        assert!(parse_fingerprint(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn a_pin_accepts_exactly_its_certificate() {
        let der = b"certificate bytes";
        let pin: [u8; 32] = Sha256::digest(der).into();
        let options = TlsOptions {
            pinned_sha256: Some(pin),
            ..TlsOptions::default()
        };
        check_pin(&options, Some(der)).unwrap();
        let e = check_pin(&options, Some(b"another certificate")).unwrap_err();
        assert!(e.is_certificate() && e.is_fingerprint_mismatch());
        let text = e.to_string();
        assert!(text.contains(&format_fingerprint(&pin)), "{text}");
        assert!(
            text.contains(&format_fingerprint(&Sha256::digest(b"another certificate"))),
            "{text}"
        );
        check_pin(&TlsOptions::default(), Some(b"x")).unwrap();
    }
    use super::*;

    #[test]
    fn oid_strings() {
        assert_eq!(oid_string(&[0x55, 0x04, 0x03]), "2.5.4.3");
        assert_eq!(
            oid_string(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01]),
            "1.2.840.113549.1.9.1"
        );
    }

    #[test]
    fn garbage_der_gives_a_fingerprint_and_no_panic() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0x30) as u8).collect();
            let info = CertificateInfo::from_der(&junk);
            assert!(info.sha256.starts_with("sha256:"));
        }
    }

    /// Found by fuzzing: a validity time holding multi-byte UTF-8 (a server can present any
    /// certificate where it is pinned or not checked) was sliced inside a character.
    #[test]
    fn a_validity_time_that_is_not_ascii_is_not_read_as_one() {
        let el = Tlv {
            tag: 0x17,
            body: "@\u{202f}\u{202f}\u{202f}0000".as_bytes(),
        };
        assert_eq!(time(&el), None);
        let el = Tlv {
            tag: 0x17,
            body: b"261204165133Z",
        };
        assert_eq!(time(&el).as_deref(), Some("2026-12-04 16:51:33 UTC"));
    }
}
