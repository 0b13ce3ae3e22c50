//! APPEND: one message per command or a batch in one (MULTIAPPEND, RFC 3502), literals
//! sent without waiting where the server allows it (LITERAL+ and LITERAL-, RFC 7888), and
//! the UIDs the server gives (APPENDUID, RFC 4315).

use std::io::Read;

use tracing::trace;

use super::wire::{NoSink, Response, State, Tagged, WIRE};
use super::{Client, Error, appenduid, mailbox_arg};

/// What an appended message became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// In the mailbox, with this UID (the server told it: UIDPLUS).
    Uid { validity: u32, uid: u32 },
    /// In the mailbox; the server does not tell UIDs.
    Stored,
}

/// One message to append: its bytes (CRLF line ends), exactly `len` of them, and the
/// internal date to give it (`"dd-Mon-yyyy hh:mm:ss +zzzz"`), if any.
pub struct Message<'a> {
    pub data: &'a mut dyn Read,
    pub len: u64,
    pub date: Option<String>,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len)
            .field("date", &self.date)
            .finish_non_exhaustive()
    }
}

/// How appends go over the wire, from what the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendMode {
    /// Several messages in one APPEND (MULTIAPPEND).
    pub multi: bool,
    /// Literals sent without waiting for the server's `+` (LITERAL+; LITERAL- up to 4096
    /// bytes).
    pub literal_plus: bool,
    pub literal_minus: bool,
}

impl Client {
    /// Appends `messages` to `mailbox`, not marked seen, as [`Self::mode`] allows. Returns
    /// what became of each, in order: `Err` for one the server refused (with MULTIAPPEND
    /// all are refused together). `sent` is called once every message is on its way.
    pub async fn append(
        &mut self,
        mailbox: &str,
        messages: &mut [Message<'_>],
        sent: &mut dyn FnMut(),
    ) -> Result<Vec<Result<Appended, Tagged>>, Error> {
        let result = self.append_all(mailbox, messages, sent).await;
        if result.is_err() {
            // A command may be half sent (a spool file that could not be read, say): the
            // connection cannot be trusted with another.
            self.wire.mark_broken();
        }
        result
    }

    async fn append_all(
        &mut self,
        mailbox: &str,
        messages: &mut [Message<'_>],
        sent: &mut dyn FnMut(),
    ) -> Result<Vec<Result<Appended, Tagged>>, Error> {
        let mailbox = mailbox_arg(mailbox);
        let mode = self.mode;
        let groups: Vec<std::ops::Range<usize>> = if mode.multi {
            std::iter::once(0..messages.len()).collect()
        } else {
            (0..messages.len()).map(|i| i..i + 1).collect()
        };
        // Each group is one APPEND command; they are pipelined when no literal needs to
        // wait for the server.
        let mut tags: Vec<(String, std::ops::Range<usize>)> = Vec::new();
        let mut answers: Vec<(String, Tagged)> = Vec::new();
        for group in groups {
            let tag = self.tag();
            trace!(target: WIRE, "C: {tag} APPEND {mailbox} ({} message(s))", group.len());
            self.wire
                .write(format!("{tag} APPEND {mailbox}").as_bytes())
                .await?;
            let mut refused_early = None;
            for m in &mut messages[group.clone()] {
                let nonsync = mode.literal_plus || (mode.literal_minus && m.len <= 4096);
                let date = m
                    .date
                    .as_deref()
                    .map(|d| format!(" \"{d}\""))
                    .unwrap_or_default();
                let plus = if nonsync { "+" } else { "" };
                self.wire
                    .write(format!(" (){date} {{{}{plus}}}\r\n", m.len).as_bytes())
                    .await?;
                if !nonsync {
                    self.wire.flush().await?;
                    if let Some(refusal) = self.wait_continue(&tag, &mut answers).await? {
                        refused_early = Some(refusal);
                        break;
                    }
                }
                self.send_literal(m).await?;
            }
            match refused_early {
                Some(refusal) => answers.push((tag.clone(), refusal)),
                None => self.wire.write(b"\r\n").await?,
            }
            tags.push((tag, group));
        }
        self.wire.flush().await?;
        sent();
        let mut results: Vec<Option<Result<Appended, Tagged>>> = vec![None; messages.len()];
        for (tag, group) in &tags {
            let answer = match answers.iter().position(|(t, _)| t == tag) {
                Some(i) => answers.swap_remove(i).1,
                None => self.until_tagged(tag, &mut NoSink, &mut |_| {}).await?,
            };
            let uids = (answer.state == State::Ok)
                .then(|| {
                    answer
                        .code
                        .as_deref()
                        .and_then(|c| appenduid(c, group.len()))
                })
                .flatten();
            for (k, i) in group.clone().enumerate() {
                results[i] = Some(match (&answer.state, &uids) {
                    (State::Ok, Some((validity, uids))) => Ok(Appended::Uid {
                        validity: *validity,
                        uid: uids[k],
                    }),
                    (State::Ok, None) => Ok(Appended::Stored),
                    _ => Err(answer.clone()),
                });
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every message answered"))
            .collect())
    }

    /// Waits for the `+` that lets a literal go; a tagged answer instead is the command
    /// refused (returned), any other tagged answer is kept for later.
    async fn wait_continue(
        &mut self,
        tag: &str,
        answers: &mut Vec<(String, Tagged)>,
    ) -> Result<Option<Tagged>, Error> {
        loop {
            match self.wire.response(&mut NoSink).await? {
                Response::Continue(_) => return Ok(None),
                Response::Tagged(t) if t.tag == tag => return Ok(Some(t)),
                Response::Tagged(t) => answers.push((t.tag.clone(), t)),
                Response::Untagged(_) => {}
            }
        }
    }

    async fn send_literal(&mut self, m: &mut Message<'_>) -> Result<(), Error> {
        let mut left = m.len;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = m.data.read(&mut buf[..want]).map_err(Error::Spool)?;
            if n == 0 {
                return Err(Error::Spool(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the spooled message is shorter than recorded",
                )));
            }
            self.wire.write(&buf[..n]).await?;
            left -= n as u64;
        }
        Ok(())
    }
}
