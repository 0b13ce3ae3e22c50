//! A real OpenID Connect authorization server on loopback: node-oidc-provider, started from
//! `tests/oidc/provider.mjs` (its package pinned in `tests/oidc/package-lock.json`, installed
//! by `scripts/test`). See that file for how it is set up: a native client for popsync with
//! PKCE required, the device grant, token introspection for Dovecot, refresh tokens rotated
//! at every use, access tokens that expire in seconds.
//!
//! Also the test's side of a sign-in: a small HTTP/1.0 client that plays the user in the
//! browser (the log-in and consent pages, the device code page) and, until popsync does it
//! itself, the client's side of the device grant.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use popsync::oauth2::http::form;

use super::Home;
use super::dovecot::{self, Dovecot, OAuth2Passdb};

pub const CLIENT_ID: &str = "popsync-test";
const DOVECOT_ID: &str = "dovecot";
const DOVECOT_SECRET: &str = "dovecot-introspection-secret";
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub struct Provider {
    child: Child,
    /// Every secret it issued or was sent, one per line (see provider.mjs).
    secrets: tempfile::NamedTempFile,
    /// Its orders ("close", "open"), and what it answers.
    orders: std::process::ChildStdin,
    answers: std::sync::mpsc::Receiver<String>,
    /// `http://127.0.0.1:PORT`
    pub issuer: String,
    port: u16,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// Starts the server; its access tokens expire after `access_ttl` seconds.
    pub fn start(access_ttl: u64) -> Self {
        Self::start_with(access_ttl, false)
    }

    /// The same, answering the second poll of each device code with `slow_down` (the
    /// interval then grows by 5 seconds, and polling sooner gets `slow_down` again).
    pub fn start_with(access_ttl: u64, slow_down_second: bool) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "node-oidc-provider is not installed: run scripts/test, or `npm ci` in {}",
            dir.display()
        );
        let secrets = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("OIDC_SECRETS_LOG", secrets.path())
            .env("OIDC_ACCESS_TTL", access_ttl.to_string())
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_DOVECOT_ID", DOVECOT_ID)
            .env("OIDC_DOVECOT_SECRET", DOVECOT_SECRET)
            .env(
                "OIDC_SLOW_DOWN_SECOND",
                if slow_down_second { "1" } else { "" },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node (is Node.js installed?): {e}"));
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // What it says later is read all along (a closed pipe would end it), for `reachable`.
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let orders = child.stdin.take().unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the authorization server did not start: {line:?}"));
        let issuer = ready["issuer"].as_str().unwrap().to_owned();
        let port = issuer.rsplit(':').next().unwrap().parse().unwrap();
        Self {
            child,
            secrets,
            orders,
            answers,
            issuer,
            port,
        }
    }

    /// Stops listening (every connection refused) or listens again, on the same port, with
    /// every grant and token it holds kept.
    pub fn reachable(&mut self, yes: bool) {
        let (order, answer) = if yes {
            ("open", "open")
        } else {
            ("close", "closed")
        };
        writeln!(self.orders, "{order}").unwrap();
        self.orders.flush().unwrap();
        loop {
            let line = self
                .answers
                .recv_timeout(Duration::from_secs(10))
                .expect("the authorization server answers");
            if line == answer {
                return;
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every token, authorization code and PKCE verifier the server has issued or been
    /// sent so far, each with its kind ("access_token", "refresh_token", "code",
    /// "code_verifier", ...).
    pub fn secrets(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = std::fs::read_to_string(self.secrets.path())
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(kind, value)| (kind.to_owned(), value.to_owned()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Dovecot's oauth2 passdb, introspecting tokens here as its own confidential client.
    pub fn passdb(&self) -> OAuth2Passdb {
        OAuth2Passdb {
            introspection_url: format!(
                "http://{DOVECOT_ID}:{DOVECOT_SECRET}@127.0.0.1:{}/token/introspection",
                self.port
            ),
            username_attribute: "sub".into(),
        }
    }

    /// The client's side of the device grant, with the user (`login`) approving it in the
    /// browser in between: the tokens the server issues.
    pub fn device_sign_in(&self, login: &str) -> Tokens {
        let started = self.post(
            "/device/auth",
            &[("client_id", CLIENT_ID), ("scope", "openid pop")],
        );
        assert_eq!(started.status, 200, "{}", started.body);
        let grant: serde_json::Value = serde_json::from_str(&started.body).unwrap();
        let user = Browser::new(self.port);
        user.approve_device(grant["verification_uri_complete"].as_str().unwrap(), login);
        let device_code = grant["device_code"].as_str().unwrap();
        let interval = grant["interval"].as_u64().unwrap_or(5);
        loop {
            std::thread::sleep(Duration::from_secs(interval));
            let answer = self.post(
                "/token",
                &[
                    ("client_id", CLIENT_ID),
                    ("grant_type", DEVICE_GRANT),
                    ("device_code", device_code),
                ],
            );
            match answer.status {
                200 => return Tokens::parse(&answer.body),
                _ if answer.body.contains("authorization_pending") => continue,
                _ => panic!("device grant refused: {answer:?}"),
            }
        }
    }

    /// The refresh grant: new tokens, or the server's error (`invalid_grant` for a refresh
    /// token used before, or of a revoked grant).
    pub fn refresh(&self, refresh_token: &str) -> Result<Tokens, String> {
        let answer = self.post(
            "/token",
            &[
                ("client_id", CLIENT_ID),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        );
        match answer.status {
            200 => Ok(Tokens::parse(&answer.body)),
            _ => Err(answer.body),
        }
    }

    /// Whether the server still calls `token` active (RFC 7662, as Dovecot asks).
    pub fn is_active(&self, token: &str) -> bool {
        let answer = http(
            self.port,
            "POST",
            "/token/introspection",
            Some(&form(&[("token", token)])),
            Some((DOVECOT_ID, DOVECOT_SECRET)),
            "",
        );
        let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        v["active"] == serde_json::Value::Bool(true)
    }

    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        http(self.port, "POST", path, Some(&form(fields)), None, "")
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    pub expires_in: u64,
}

impl Tokens {
    fn parse(body: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        Self {
            access: v["access_token"].as_str().unwrap().to_owned(),
            refresh: v["refresh_token"].as_str().map(str::to_owned),
            expires_in: v["expires_in"].as_u64().unwrap_or(0),
        }
    }
}

/// The user's browser: keeps cookies and fills in the server's pages.
pub struct Browser {
    port: u16,
    cookies: std::cell::RefCell<BTreeMap<String, String>>,
}

impl Browser {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            cookies: Default::default(),
        }
    }

    /// Opens the device page with the code filled in, confirms it, logs in as `login` and
    /// consents; ends on the page that says the sign-in succeeded.
    pub fn approve_device(&self, verification_uri_complete: &str, login: &str) {
        let page = self.get(verification_uri_complete);
        let xsrf = input_value(&page.body, "xsrf").expect("the device page has an xsrf field");
        let code = input_value(&page.body, "user_code").expect("the code is filled in");
        let next = self.submit(
            "/device",
            &[("xsrf", &xsrf), ("user_code", &code), ("confirm", "yes")],
        );
        let done = self.interact(next, login);
        assert!(
            done.body.contains("Sign-in Success"),
            "the device sign-in did not succeed: {}",
            done.body
        );
    }

    /// Follows redirects from `response`, logging in as `login` and consenting where asked,
    /// until a page that asks nothing (or a redirect away from the server) is reached.
    pub fn interact(&self, mut response: Response, login: &str) -> Response {
        for _ in 0..20 {
            if let Some(location) = response.location.clone() {
                if !location.starts_with(&format!("http://127.0.0.1:{}/", self.port))
                    && !location.starts_with('/')
                {
                    return response;
                }
                response = self.get(&location);
                continue;
            }
            let action = form_action(&response.body);
            match (input_value(&response.body, "prompt").as_deref(), action) {
                (Some("login"), Some(action)) => {
                    response = self.submit(
                        &action,
                        &[("prompt", "login"), ("login", login), ("password", "x")],
                    );
                }
                (Some("consent"), Some(action)) => {
                    response = self.submit(&action, &[("prompt", "consent")]);
                }
                _ => return response,
            }
        }
        panic!("too many steps in the sign-in pages");
    }

    /// Follows redirects within the server from `response`, filling in nothing.
    pub fn follow(&self, mut response: Response) -> Response {
        for _ in 0..20 {
            match &response.location {
                Some(l) if l.starts_with('/') || split_url(l, self.port).0 == self.port => {
                    response = self.get(&l.clone());
                }
                _ => return response,
            }
        }
        panic!("too many redirects");
    }

    pub fn get(&self, url: &str) -> Response {
        self.request("GET", url, None)
    }

    pub fn submit(&self, url: &str, fields: &[(&str, &str)]) -> Response {
        self.request("POST", url, Some(&form(fields)))
    }

    fn request(&self, method: &str, url: &str, body: Option<&str>) -> Response {
        let (port, path) = split_url(url, self.port);
        let cookie: Vec<String> = self
            .cookies
            .borrow()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let response = http(port, method, &path, body, None, &cookie.join("; "));
        let mut jar = self.cookies.borrow_mut();
        for c in &response.set_cookies {
            if let Some((name, rest)) = c.split_once('=') {
                let value = rest.split(';').next().unwrap_or("");
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
        response
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// The port and the path (with the query) of `url`: an absolute address on 127.0.0.1
/// (the authorization server, or popsync waiting for the browser), or a path on `port`.
fn split_url(url: &str, port: u16) -> (u16, String) {
    match url.strip_prefix("http://127.0.0.1:") {
        Some(rest) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let path = if end == rest.len() { "/" } else { &rest[end..] };
            (rest[..end].parse().unwrap(), path.to_owned())
        }
        None => {
            assert!(url.starts_with('/'), "not on this machine: {url}");
            (port, url.to_owned())
        }
    }
}

/// One HTTP/1.0 exchange (so the answer is never chunked and ends with the connection).
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    basic: Option<(&str, &str)>,
    cookie: &str,
) -> Response {
    use base64::Engine as _;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some((id, secret)) = basic {
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request.push_str(&format!("Authorization: Basic {pair}\r\n"));
    }
    if !cookie.is_empty() {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut location = None;
    let mut set_cookies = Vec::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_owned();
            if name.eq_ignore_ascii_case("location") {
                location = Some(value);
            } else if name.eq_ignore_ascii_case("set-cookie") {
                set_cookies.push(value);
            }
        }
    }
    Response {
        status,
        location,
        set_cookies,
        body: body.to_owned(),
    }
}

/// The value of the form field `name` on an HTML page.
fn input_value(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\""))?;
    let tag_start = page[..at].rfind('<')?;
    let tag_end = at + page[at..].find('>')?;
    let tag = &page[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    let len = tag[v..].find('"')?;
    Some(tag[v..v + len].to_owned())
}

/// Where the page's form is sent.
fn form_action(page: &str) -> Option<String> {
    let form = page.find("<form")?;
    let tag = &page[form..form + page[form..].find('>')?];
    let a = tag.find("action=\"")? + 8;
    let len = tag[a..].find('"')?;
    Some(tag[a..a + len].to_owned())
}

/// The real Dovecot, checking tokens at `provider`'s introspection endpoint.
pub fn server(provider: &Provider) -> Dovecot {
    Dovecot::start_with(dovecot::Options {
        oauth2: Some(provider.passdb()),
        ..dovecot::Options::default()
    })
}

/// An account that signs in with popsync itself, through the real server's discovery
/// document, keeping its refresh token in a file.
pub fn signin_account(provider: &Provider, server: &Dovecot, home: &Home) -> String {
    super::account_toml("home", server, "user1", &home.maildir("home"), "").replace(
        &format!("password = {:?}\n", dovecot::PASSWORD),
        &format!(
            "oauth2-provider = \"custom\"\noauth2-issuer = {:?}\noauth2-client-id = {:?}\n\
             oauth2-scopes = \"openid pop\"\noauth2-token-store = \"file\"\n",
            provider.issuer, CLIENT_ID
        ),
    )
}

/// `popsync oauth2 login --no-browser` started, and the address it shows: the child, the
/// authorization address, and a reader of the rest of its output.
pub struct BrowserLogin {
    pub child: std::process::Child,
    /// What the user types or pastes.
    stdin: std::process::ChildStdin,
    pub url: String,
    rest: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    pub shown: String,
}

impl BrowserLogin {
    pub fn start(provider: &Provider, home: &Home) -> Self {
        Self::start_with(provider, home, &[])
    }

    pub fn start_with(provider: &Provider, home: &Home, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead as _;
        let mut child = home
            .command(&["oauth2", "login", "--no-browser", "--account", "home"])
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut rest = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut shown = String::new();
        let prefix = format!("{}/auth?", provider.issuer);
        let url = loop {
            let line = rest.next().expect("popsync shows the address").unwrap();
            shown.push_str(&line);
            shown.push('\n');
            if let Some(at) = line.find(&prefix) {
                break line[at..].trim().to_owned();
            }
        };
        // What popsync says until it waits.
        for line in rest.by_ref() {
            let line = line.unwrap();
            shown.push_str(&line);
            shown.push('\n');
            if line.starts_with("Waiting") {
                break;
            }
        }
        Self {
            child,
            stdin,
            url,
            rest,
            shown,
        }
    }

    /// The user pastes `line`, then popsync says (on one line) what it makes of it.
    pub fn paste(&mut self, line: &str) -> String {
        use std::io::Write as _;
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        loop {
            let line = self.rest.next().expect("popsync answers").unwrap();
            self.shown.push_str(&line);
            self.shown.push('\n');
            if !line.trim().is_empty() {
                return line;
            }
        }
    }

    /// The user (`login`) signs in and approves in a browser of their own at the address
    /// popsync showed: where the provider then sends the browser back (popsync's loopback
    /// address with the code), not yet visited.
    pub fn approve(&self, provider: &Provider, login: &str) -> String {
        let user = Browser::new(provider.port());
        let back = user.interact(user.get(&self.url), login);
        back.location.expect("sent back to popsync")
    }

    /// Where popsync waits for the browser (from the address's redirect_uri).
    pub fn redirect_port(&self) -> u16 {
        let key = "redirect_uri=http%3A%2F%2F127.0.0.1%3A";
        let at = self.url.find(key).expect("a loopback redirect") + key.len();
        let digits: String = self.url[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    }

    pub fn output(mut self) -> std::process::Output {
        drop(self.stdin);
        for line in self.rest.by_ref() {
            self.shown.push_str(&line.unwrap());
            self.shown.push('\n');
        }
        let mut out = self.child.wait_with_output().unwrap();
        out.stdout = self.shown.into_bytes();
        out
    }
}

/// `popsync oauth2 login --device` for `whose` (`--account NAME`, `--imap NAME`), with the
/// test approving the code in the "browser", as `login`, as soon as popsync shows it.
pub fn device_login(
    provider: &Provider,
    home: &Home,
    whose: &[&str],
    login: &str,
) -> std::process::Output {
    use std::io::BufRead as _;
    let mut child = home
        .command(&[&["oauth2", "login", "--device"][..], whose].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut shown = String::new();
    let url = loop {
        let line = lines
            .next()
            .expect("popsync shows where to sign in")
            .unwrap();
        shown.push_str(&line);
        shown.push('\n');
        if let Some(at) = line.find("http")
            && line.contains("user_code=")
        {
            let url = &line[at..];
            break url.split([' ', ',']).next().unwrap().to_owned();
        }
    };
    // Approved after popsync's first poll (1 s), which is told authorization_pending.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    Browser::new(provider.port()).approve_device(&url, login);
    for line in lines {
        shown.push_str(&line.unwrap());
        shown.push('\n');
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = shown.into_bytes();
    out
}
