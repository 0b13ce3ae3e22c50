//! A scripted POP3 server for in-process tests, over an in-memory pipe
//! (`tokio::io::duplex`): no sockets, no threads, the same runtime as the client.
//!
//! A script is a list of [`Step`]s: bytes to send, and lines the client must send, exactly.
//! Every line the client sends is checked; a line that differs, a line where none is
//! expected, or silence where one is (for [`READ_TIMEOUT`]) ends the session and is
//! reported with the transcript. [`Scripted`] is a [`Connector`] that serves one script per
//! connection, in order, for tests of whole fetches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::session::{Connector, Greeted, over};
use super::transport::ConnectOptions;
use super::{Error, codec};

/// The longest the server waits for a line from the client.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client must stay silent after an [`Step::ExpectAlone`] line.
pub const ALONE_FOR: Duration = Duration::from_millis(30);

/// One step of a script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send these bytes as they are.
    Send(Vec<u8>),
    /// Read the next line the client sent; it must be exactly this.
    Expect(String),
    /// Like `Expect`, then the client must send nothing more for [`ALONE_FOR`].
    ExpectAlone(String),
    /// Close the connection (ends the script).
    Close,
}

/// Sends `line` and CRLF.
pub fn send(line: &str) -> Step {
    Step::Send(format!("{line}\r\n").into_bytes())
}

/// Expects the client to send exactly `line`.
pub fn expect(line: &str) -> Step {
    Step::Expect(line.to_owned())
}

/// Expects the client to send exactly `line` and then wait for the answer.
pub fn expect_alone(line: &str) -> Step {
    Step::ExpectAlone(line.to_owned())
}

/// Answers a RETR with `+OK`, the message dot-stuffed and the terminating line.
pub fn message(message: &[u8]) -> Step {
    let mut bytes = b"+OK\r\n".to_vec();
    bytes.extend_from_slice(&codec::stuff(message));
    Step::Send(bytes)
}

/// Answers a RETR with `+OK` and only the first `cut` bytes of the stuffed message.
pub fn partial(message: &[u8], cut: usize) -> Step {
    let mut bytes = b"+OK\r\n".to_vec();
    let stuffed = codec::stuff(message);
    bytes.extend_from_slice(&stuffed[..cut.min(stuffed.len())]);
    Step::Send(bytes)
}

/// The greeting and a CAPA listing these capabilities, as the client asks for them on
/// connecting.
pub fn greeting(caps: &[&str]) -> Vec<Step> {
    let mut listing = String::from("+OK\r\n");
    for c in caps {
        listing.push_str(c);
        listing.push_str("\r\n");
    }
    listing.push_str(".\r\n");
    vec![
        send("+OK POP3 ready"),
        expect("CAPA"),
        Step::Send(listing.into_bytes()),
    ]
}

/// Serves `steps` on `io`. `Err` says what went wrong, with the transcript.
pub async fn serve(mut io: DuplexStream, steps: Vec<Step>) -> Result<(), String> {
    let mut transcript = String::new();
    let mut pending: Vec<u8> = Vec::new();
    for (n, step) in steps.into_iter().enumerate() {
        let fail = |what: String, transcript: &str| {
            Err(format!("step {n}: {what}\ntranscript:\n{transcript}"))
        };
        match step {
            Step::Send(bytes) => {
                transcript.push_str(&format!(
                    "S: {}\n",
                    String::from_utf8_lossy(&bytes).trim_end()
                ));
                if io.write_all(&bytes).await.is_err() {
                    return fail("the client went away".into(), &transcript);
                }
            }
            Step::Expect(ref want) | Step::ExpectAlone(ref want) => {
                let line = match read_line(&mut io, &mut pending, READ_TIMEOUT).await {
                    Some(line) => line,
                    None => return fail(format!("expected {want:?}, got nothing"), &transcript),
                };
                transcript.push_str(&format!("C: {line}\n"));
                if line != *want {
                    return fail(format!("expected {want:?}, got {line:?}"), &transcript);
                }
                if matches!(step, Step::ExpectAlone(_)) {
                    if let Some(more) = read_line(&mut io, &mut pending, ALONE_FOR).await {
                        return fail(
                            format!("{more:?} came before the answer to {want:?}"),
                            &transcript,
                        );
                    }
                    if !pending.is_empty() {
                        return fail(
                            format!("more came before the answer to {want:?}"),
                            &transcript,
                        );
                    }
                }
            }
            Step::Close => return Ok(()),
        }
    }
    Ok(())
}

/// Reads one CRLF-terminated line (without it), or `None` on close or silence.
async fn read_line(io: &mut DuplexStream, pending: &mut Vec<u8>, wait: Duration) -> Option<String> {
    loop {
        if let Some(p) = pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&pending[..p]).into_owned();
            pending.drain(..p + 2);
            return Some(line);
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(wait, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

/// A [`Connector`] serving one script per connection, in order.
#[derive(Debug, Default)]
pub struct Scripted {
    scripts: Mutex<Vec<Vec<Step>>>,
    results: Arc<Mutex<Vec<Result<(), String>>>>,
    handles: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Scripted {
    pub fn new(scripts: Vec<Vec<Step>>) -> Self {
        let mut scripts = scripts;
        scripts.reverse();
        Self {
            scripts: Mutex::new(scripts),
            ..Self::default()
        }
    }

    /// Waits for every session to end; panics with every failure, or if a script was not
    /// used.
    pub async fn finish(&self) {
        let handles: Vec<_> = std::mem::take(&mut *self.handles.lock().unwrap());
        for h in handles {
            h.await.unwrap();
        }
        let left = self.scripts.lock().unwrap().len();
        let failures: Vec<String> = self
            .results
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.clone().err())
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
        assert_eq!(left, 0, "{left} script(s) were never connected to");
    }
}

impl Connector for Scripted {
    fn connect<'a>(
        &'a self,
        options: &'a ConnectOptions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Greeted, Error>> + 'a>> {
        let script = self
            .scripts
            .lock()
            .unwrap()
            .pop()
            .expect("a connection the scripts do not account for");
        let (client, server) = tokio::io::duplex(64 * 1024);
        let results = Arc::clone(&self.results);
        self.handles.lock().unwrap().push(tokio::spawn(async move {
            let r = serve(server, script).await;
            results.lock().unwrap().push(r);
        }));
        Box::pin(over(client, options, true))
    }
}
