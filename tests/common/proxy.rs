//! A POP3 proxy between popsync and a real server that removes PIPELINING from the
//! capabilities and checks that the client then really waits for each answer before sending
//! its next command. Plaintext only.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default, Debug)]
pub struct Record {
    /// Commands seen, in order.
    pub commands: Vec<String>,
    /// Commands that arrived before the answer to the previous one was complete.
    pub violations: Vec<String>,
    /// Whether a CAPA answer was rewritten.
    pub capa_rewritten: bool,
}

pub struct Proxy {
    pub port: u16,
    pub record: Arc<Mutex<Record>>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let record = Arc::new(Mutex::new(Record::default()));
        let rec = record.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let rec = rec.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, upstream_port, &rec);
                });
            }
        });
        Self { port, record }
    }
}

fn is_multiline(command: &str) -> bool {
    let mut words = command.split_ascii_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_uppercase();
    let has_arg = words.next().is_some();
    match verb.as_str() {
        "CAPA" | "RETR" | "TOP" => true,
        "UIDL" | "LIST" => !has_arg,
        _ => false,
    }
}

fn serve(client: TcpStream, upstream_port: u16, rec: &Mutex<Record>) -> std::io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream_port))?;
    server.set_read_timeout(Some(Duration::from_secs(30)))?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut from_server = BufReader::new(server.try_clone()?);
    let mut to_server = server;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    // greeting
    let mut line = Vec::new();
    from_server.read_until(b'\n', &mut line)?;
    to_client.write_all(&line)?;
    loop {
        let mut cmd = Vec::new();
        if from_client.read_until(b'\n', &mut cmd)? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&cmd).trim_end().to_owned();
        rec.lock().unwrap().commands.push(command.clone());
        to_server.write_all(&cmd)?;
        // The answer, complete, before anything goes to the client.
        let mut answer = Vec::new();
        let mut status = Vec::new();
        from_server.read_until(b'\n', &mut status)?;
        answer.extend_from_slice(&status);
        let ok = status.starts_with(b"+OK");
        let capa = command.eq_ignore_ascii_case("CAPA");
        if ok && is_multiline(&command) {
            loop {
                let mut l = Vec::new();
                if from_server.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                if capa && l.eq_ignore_ascii_case(b"PIPELINING\r\n") {
                    rec.lock().unwrap().capa_rewritten = true;
                    continue;
                }
                let end = l == b".\r\n";
                answer.extend_from_slice(&l);
                if end {
                    break;
                }
            }
        }
        // Anything the client sent while waiting is a pipelined command.
        if !from_client.buffer().is_empty() || peek_pending(from_client.get_ref()) {
            rec.lock().unwrap().violations.push(format!(
                "a command arrived before the answer to {command:?} was sent"
            ));
        }
        to_client.write_all(&answer)?;
        if command.eq_ignore_ascii_case("QUIT") {
            return Ok(());
        }
    }
}

fn peek_pending(stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut buf = [0u8; 1];
    let pending = matches!(stream.peek(&mut buf), Ok(n) if n > 0);
    let _ = stream.set_nonblocking(false);
    pending
}
