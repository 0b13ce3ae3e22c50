//! Just enough HTTP for an authorization server's endpoints: one request per connection
//! (`Connection: close`), a form posted or nothing, a JSON answer of bounded size read
//! whole (with or without chunked transfer coding). HTTPS is verified against the system's
//! roots with the same TLS set-up as POP3; plain HTTP only to this machine (a test server,
//! or a provider's helper running locally), as RFC 8252 allows for loopback.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::pop3::connection::Stream;
use crate::pop3::tls::TlsOptions;

/// Longest a whole exchange with an endpoint may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (a token answer is a few kilobytes).
const MAX_ANSWER: usize = 1 << 20;

/// An endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, beginning with `/`.
    pub path: String,
}

impl Url {
    /// `https://host[:port]/path`, or `http://` to a loopback address only.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{text:?} is not an https:// address"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "{text:?}: an address with a user name is not accepted"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p
                    .parse()
                    .map_err(|_| format!("{text:?}: {p:?} is not a port number"))?;
                (h, port)
            }
            _ => (authority, if https { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{text:?} names no host"));
        }
        if !https && !matches!(host, "127.0.0.1" | "::1" | "localhost") {
            return Err(format!(
                "{text:?}: only https:// is accepted, except to this machine (127.0.0.1)"
            ));
        }
        Ok(Self {
            https,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not reached, or no whole answer: may work later.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is not HTTP, or too large.
    #[error("{url} gave an unreadable answer: {reason}")]
    Garbled { url: String, reason: String },
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `application/x-www-form-urlencoded`
pub fn form<V: AsRef<str>>(fields: &[(&str, V)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, k);
        out.push('=');
        encode_into(&mut out, v.as_ref());
    }
    out
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
pub fn encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Percent-decoding of a query component (`+` is a space).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// POSTs `body` (a form) to `url`, or GETs it when there is none.
pub async fn exchange(url: &Url, body: Option<&str>) -> Result<Answer, HttpError> {
    let shown = url.to_string();
    match tokio::time::timeout(TIMEOUT, exchange_inner(url, body)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Unreachable {
            url: shown,
            reason: format!("no answer within {}s", TIMEOUT.as_secs()),
        }),
    }
}

async fn exchange_inner(url: &Url, body: Option<&str>) -> Result<Answer, HttpError> {
    let shown = url.to_string();
    let unreachable = |reason: String| HttpError::Unreachable {
        url: shown.clone(),
        reason,
    };
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Stream> = if url.https {
        let connector = TlsOptions::default()
            .connector()
            .map_err(|e| unreachable(e.to_string()))?;
        connector
            .connect(&url.host, tcp)
            .await
            .map_err(|e| unreachable(crate::pop3::tls::handshake_error(e).to_string()))?
            .0
    } else {
        Box::new(tcp)
    };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let default_port = if url.https { 443 } else { 80 };
    let host = if url.port == default_port {
        host
    } else {
        format!("{host}:{}", url.port)
    };
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: popsync/{}\r\n",
        if body.is_some() { "POST" } else { "GET" },
        url.path,
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    stream
        .flush()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut raw = Vec::new();
    let mut limited = (&mut stream).take(MAX_ANSWER as u64 + 1);
    if let Err(e) = limited.read_to_end(&mut raw).await {
        // A TLS peer that closes without close_notify still sent a whole answer, which the
        // parse below tells apart from a cut one.
        if raw.is_empty() {
            return Err(unreachable(e.to_string()));
        }
    }
    if raw.len() > MAX_ANSWER {
        return Err(HttpError::Garbled {
            url: shown,
            reason: "the answer is larger than 1 MiB".into(),
        });
    }
    parse(&raw).map_err(|reason| HttpError::Garbled { url: shown, reason })
}

/// Reads a whole HTTP/1.x answer.
fn parse(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer ends before its headers do")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", truncate(status_line)))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(format!(
                "the answer was cut off ({} of {n} bytes)",
                rest.len()
            ));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("the answer was cut off in a chunk header")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "a bad chunk header")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| "a bad chunk size".to_owned())?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("the answer was cut off in a chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_https_or_loopback() {
        let u = Url::parse("https://oauth2.googleapis.com/token").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "oauth2.googleapis.com", 443, "/token")
        );
        let u = Url::parse("http://127.0.0.1:8080/device/auth?x=1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/device/auth?x=1"));
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/device/auth?x=1");
        let u = Url::parse("http://[::1]:9/t").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert!(Url::parse("http://login.example.com/token").is_err());
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("https://user:pw@x/").is_err());
        assert!(Url::parse("https://x:port/").is_err());
    }

    #[test]
    fn answers_are_read_with_a_length_chunked_or_to_the_end() {
        let a = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}xx").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"{}"[..]));
        let a = parse(
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (400, &b"{\"a\":1}"[..]));
        let a = parse(b"HTTP/1.0 200 OK\r\n\r\nbody").unwrap();
        assert_eq!(a.body, b"body");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").is_err());
    }

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(
            form(&[("scope", "openid pop"), ("x", "a&b=c/é")]),
            "scope=openid%20pop&x=a%26b%3Dc%2F%C3%A9"
        );
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(decode("a%20b+c%2Fd"), "a b c/d");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
