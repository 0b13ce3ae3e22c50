//! An OAuth 2.0 token introspection endpoint (RFC 7662) for Dovecot's oauth2 passdb: a
//! small HTTP server on loopback that knows which access tokens are valid, and for whom, and
//! records every token it was asked about.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

pub struct Introspection {
    pub port: u16,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Introspection {
    /// Serves until the test process ends. `tokens`: access token -> user name.
    pub fn start(tokens: &[(&str, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tokens: HashMap<String, String> = tokens
            .iter()
            .map(|(t, u)| ((*t).to_owned(), (*u).to_owned()))
            .collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                // Dovecot keeps the connection alive: answer requests until it closes.
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            break;
                        }
                        let h = header.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = h.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        break;
                    }
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let token = body
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("token="))
                        .map(popsync::oauth2::http::decode)
                        .unwrap_or_default();
                    log.lock().unwrap().push(token.clone());
                    let reply = match tokens.get(&token) {
                        Some(user) => format!("{{\"active\": true, \"username\": \"{user}\"}}"),
                        None => "{\"active\": false}".to_owned(),
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if stream.write_all(response.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        Self { port, asked }
    }

    /// Dovecot's oauth2 passdb asking this endpoint.
    pub fn passdb(&self) -> super::dovecot::OAuth2Passdb {
        super::dovecot::OAuth2Passdb {
            introspection_url: format!("http://127.0.0.1:{}/introspect", self.port),
            username_attribute: "username".into(),
        }
    }

    /// Every token Dovecot asked about, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}
