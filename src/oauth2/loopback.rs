//! Signing in through the browser: the authorization code grant with PKCE (RFC 7636, S256)
//! and a loopback redirect (RFC 8252 section 7.3).
//!
//! popsync listens on a random port of 127.0.0.1, sends the browser to the authorization
//! endpoint with `redirect_uri=http://127.0.0.1:PORT/`, a fresh `state` and the S256
//! challenge of a fresh verifier, and waits for the browser to come back. An answer whose
//! `state` is not the one sent (another program's, or a forged one) is refused and ends the
//! sign-in; so does an error (`access_denied`: the user declined). The code is exchanged for
//! tokens together with the verifier, so a code seen by anyone else is useless to them.
//! Neither the code nor the verifier is ever shown or logged.

use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{Error, Preset, Resolved, Settings, keep, token_request};
use crate::pop3::Secret;

/// How long popsync waits for the browser to come back.
pub const WAIT: Duration = Duration::from_secs(600);

/// `n` random bytes, base64url without padding.
fn random(n: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Local(format!("no random numbers from the system: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The S256 challenge of a verifier (RFC 7636 section 4.2).
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A sign-in waiting for the browser.
#[derive(Debug)]
pub struct Pending {
    listener: TcpListener,
    /// Where to send the user.
    pub url: String,
    /// Where the browser comes back: `http://127.0.0.1:PORT/`.
    pub redirect_uri: String,
    port: u16,
    state: String,
    verifier: Secret,
}

/// Opens the loopback listener and makes the authorization address.
pub async fn start(settings: &Settings, endpoints: &Resolved) -> Result<Pending, Error> {
    let authorization = endpoints.authorization.as_deref().ok_or_else(|| {
        Error::Config(format!(
            "account {:?}: the authorization server has no authorization endpoint for a \
             browser sign-in (set oauth2-authorization-endpoint, or use --device)",
            settings.account
        ))
    })?;
    // Port 0: the system picks one that is free, so a port another program holds is never
    // tried (RFC 8252 section 7.3).
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
        Error::Local(format!(
            "cannot listen on 127.0.0.1 for the browser's answer: {e}"
        ))
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::Local(e.to_string()))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let state = random(16)?;
    // 32 random bytes: a 43-character verifier (RFC 7636 section 4.1).
    let verifier = Secret::new(random(32)?);
    let mut fields = vec![
        ("response_type", "code".to_owned()),
        ("client_id", settings.client_id.clone()),
        ("redirect_uri", redirect_uri.clone()),
        ("scope", settings.scopes.clone()),
        ("state", state.clone()),
        ("code_challenge", challenge(verifier.expose())),
        ("code_challenge_method", "S256".to_owned()),
    ];
    if settings.preset == Preset::Google {
        // Google gives a refresh token only when asked for offline access, and again on a
        // second sign-in only with the consent screen shown.
        fields.push(("access_type", "offline".to_owned()));
        fields.push(("prompt", "consent".to_owned()));
    }
    let sep = if authorization.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{authorization}{sep}{}", super::http::form(&fields));
    Ok(Pending {
        listener,
        url,
        redirect_uri,
        port,
        state,
        verifier,
    })
}

/// What came back to the redirect address.
enum Answer {
    Code(Secret),
    Declined(String),
    WrongState,
}

impl Pending {
    /// Waits for the browser (or, with `pasted`, for the address the browser ended at,
    /// pasted by the user when the browser runs on another machine), exchanges the code
    /// and keeps the tokens.
    pub async fn finish(
        self,
        settings: &Settings,
        endpoints: &Resolved,
        pasted: Option<tokio::sync::mpsc::Receiver<String>>,
    ) -> Result<(), Error> {
        let waited = tokio::time::timeout(WAIT, self.wait(pasted)).await;
        let (answer, mut browser) = match waited {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Refused(format!(
                    "the browser did not come back within {} minutes",
                    WAIT.as_secs() / 60
                )));
            }
        };
        let code = match answer {
            Answer::Code(code) => code,
            Answer::Declined(error) => {
                reply(
                    browser.as_mut(),
                    403,
                    "The sign-in was declined; popsync stored nothing.",
                )
                .await;
                return Err(Error::Refused(format!(
                    "the sign-in was declined ({error}); nothing was stored"
                )));
            }
            Answer::WrongState => {
                reply(
                    browser.as_mut(),
                    400,
                    "This answer does not belong to the sign-in popsync started; popsync stored nothing.",
                )
                .await;
                return Err(Error::Refused(
                    "the answer came with a state popsync did not send (not from this sign-in); \
                     nothing was stored"
                        .into(),
                ));
            }
        };
        let mut fields = settings.client_fields();
        fields.push(("grant_type", "authorization_code".into()));
        fields.push(("code", code.expose().to_owned()));
        fields.push(("redirect_uri", self.redirect_uri.clone()));
        fields.push(("code_verifier", self.verifier.expose().to_owned()));
        let result = match token_request(&endpoints.token, &fields).await {
            Ok(Ok(tokens)) => keep(settings, tokens).await,
            Ok(Err(e)) => Err(Error::Refused(e.shown())),
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) => reply(
                browser.as_mut(),
                200,
                "Signed in: popsync can now fetch this account's mail. You can close this window.",
            )
            .await,
            Err(_) => {
                reply(
                    browser.as_mut(),
                    500,
                    "The sign-in could not be completed; popsync says why where it runs.",
                )
                .await
            }
        }
        result
    }

    /// The first request to the redirect address that answers the sign-in, or the first
    /// pasted line that is such an address. Anything else (a browser asking for
    /// /favicon.ico, a stray connection) gets a 404; a pasted line that is not the
    /// address is explained and waited past.
    async fn wait(
        &self,
        mut pasted: Option<tokio::sync::mpsc::Receiver<String>>,
    ) -> Result<(Answer, Option<TcpStream>), Error> {
        loop {
            let line = async {
                match pasted.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (mut stream, _) = accepted
                        .map_err(|e| Error::Local(format!("the browser's answer: {e}")))?;
                    let Ok(Ok(target)) = tokio::time::timeout(
                        Duration::from_secs(10),
                        request_target(&mut stream),
                    )
                    .await
                    else {
                        continue;
                    };
                    match self.answer(target.strip_prefix("/?").unwrap_or("")) {
                        Some(answer) => return Ok((answer, Some(stream))),
                        None => reply(Some(&mut stream), 404, "Not found.").await,
                    }
                }
                line = line => {
                    let Some(line) = line else {
                        // No more input: the browser is the only way left.
                        pasted = None;
                        continue;
                    };
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    match self.pasted_answer(line) {
                        Some(answer) => return Ok((answer, None)),
                        None => println!(
                            "That is not the address the browser ended at: it starts with {}? \
                             and carries a code (or an error). Paste it again, or come back \
                             with the browser.",
                            self.redirect_uri
                        ),
                    }
                }
            }
        }
    }

    /// The answer an address pasted by the user carries: the redirect address itself
    /// (with `localhost` for `127.0.0.1`, or without the closing slash, as some browsers
    /// show it) and its query.
    fn pasted_answer(&self, line: &str) -> Option<Answer> {
        let rest = ["http://127.0.0.1:", "http://localhost:"]
            .iter()
            .find_map(|p| line.strip_prefix(p))?;
        let rest = rest.strip_prefix(self.port.to_string().as_str())?;
        let query = rest.strip_prefix("/?").or_else(|| rest.strip_prefix('?'))?;
        self.answer(query.split('#').next().unwrap_or(""))
    }

    /// What a redirect's query says: a code or an error, each with its state checked, or
    /// `None` when it is no answer at all.
    fn answer(&self, query: &str) -> Option<Answer> {
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (super::http::decode(k), super::http::decode(v)))
            .collect();
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let (code, error) = (get("code"), get("error"));
        if code.is_none() && error.is_none() {
            return None;
        }
        if get("state").as_deref() != Some(self.state.as_str()) {
            return Some(Answer::WrongState);
        }
        Some(match (code, error) {
            (_, Some(error)) => Answer::Declined(
                error
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(100)
                    .collect(),
            ),
            (Some(code), None) => Answer::Code(Secret::new(code)),
            (None, None) => return None,
        })
    }
}

/// The request target of an HTTP request (`GET TARGET HTTP/1.1`).
async fn request_target(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or("");
    let mut words = line.split(' ');
    match (words.next(), words.next()) {
        (Some("GET"), Some(target)) => Ok(target.to_owned()),
        _ => Err(std::io::Error::other("not a GET request")),
    }
}

/// Answers the browser, if the answer came from one.
async fn reply(stream: Option<&mut TcpStream>, status: u16, text: &str) {
    let Some(stream) = stream else {
        return;
    };
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>popsync</title></head>\
         <body><p>{text}</p></body></html>"
    );
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Opens `url` in the user's browser, where there is one to open; `false` if none could be
/// started (the address is shown either way).
pub fn open_browser(url: &str) -> bool {
    #[cfg(windows)]
    let mut command = {
        // Not `cmd /c start`, which would read `&` in the address as a command separator.
        let mut c = std::process::Command::new("rundll32");
        c.args(["url.dll,FileProtocolHandler", url]);
        c
    };
    #[cfg(target_vendor = "apple")]
    let mut command = {
        let mut c = std::process::Command::new("open");
        c.arg(url);
        c
    };
    #[cfg(not(any(windows, target_vendor = "apple")))]
    let mut command = {
        let mut c = std::process::Command::new("xdg-open");
        c.arg(url);
        c
    };
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match command.spawn() {
        Ok(mut child) => {
            // Reaped whenever it ends; popsync does not wait for the browser.
            std::thread::spawn(move || child.wait());
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_and_states_are_random_and_url_safe() {
        let a = random(32).unwrap();
        let b = random(32).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
