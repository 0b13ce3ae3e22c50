//! Appending a spooled batch to the IMAP mailbox: pending, APPEND, UIDs, delivered.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::{ImapFailure, Link, Section};
use crate::delivery::spool::{Handover, Spooled};
use crate::delivery::{DeliveryError, Journal};
use crate::imap::{Appended, Client, Message};
use crate::store::Place;
use crate::summary::MessageDate;

/// The session with the destination, kept for the whole fetch.
#[derive(Debug)]
pub struct Appender {
    section: Arc<Section>,
    /// Declared before the link, so it is dropped (logged out) first.
    client: Option<Client>,
    link: Link,
    /// The mailbox's UIDVALIDITY, and the lowest UID the next appended message can get.
    validity: u32,
    floor: u32,
    /// `floor` is the mailbox's UIDNEXT as asked at connecting, nothing appended since.
    floor_fresh: bool,
}

impl Appender {
    /// Connects, logs in and learns the mailbox's UIDVALIDITY and UIDNEXT (which fails,
    /// clearly, when the mailbox does not exist).
    pub fn connect(section: Arc<Section>) -> Result<Self, DeliveryError> {
        let link = Link::new(&section)?;
        let (client, validity, floor) = link.run(|| async {
            let mut client = section.session().await?;
            match client.status(&section.mailbox).await {
                Ok((validity, next)) => Ok((client, validity, next)),
                Err(e) => {
                    // Not every server says why (Dovecot's STATUS has no NONEXISTENT).
                    let missing = matches!(e, crate::imap::Error::Refused { .. })
                        && matches!(client.exists(&section.mailbox).await, Ok(false));
                    client.logout().await;
                    Err(match (missing, e) {
                        (true, crate::imap::Error::Refused { answer, .. }) => {
                            super::ImapFailure::NoMailbox {
                                name: section.name.clone(),
                                mailbox: section.mailbox.clone(),
                                answer: Box::new(answer),
                            }
                        }
                        (_, e) => section.failure(e, "asking for the mailbox's status"),
                    })
                }
            }
        })?;
        debug!(
            "IMAP destination {}: mailbox {:?}, UIDVALIDITY {validity}, UIDNEXT {floor}",
            section.name, section.mailbox
        );
        info!(
            "logged in to IMAP destination {} as {}: {}",
            section.name,
            section.login.username,
            way(&client)
        );
        Ok(Self {
            section,
            client: Some(client),
            link,
            validity,
            floor,
            floor_fresh: true,
        })
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.link.run(|| client.logout());
        }
    }
}

/// How messages will be appended, in words.
fn way(client: &Client) -> String {
    let mode = client.mode;
    let batches = if mode.multi {
        "a batch in one APPEND (MULTIAPPEND)"
    } else {
        "one APPEND per message"
    };
    let literals = if mode.literal_plus {
        ", sent without waiting (LITERAL+)"
    } else if mode.literal_minus {
        ", small ones sent without waiting (LITERAL-)"
    } else {
        ", each message waiting for the server's go-ahead"
    };
    let uids = if client.uidplus() {
        "; the server tells each message's UID (UIDPLUS)"
    } else {
        "; the server tells no UIDs (no UIDPLUS)"
    };
    format!("{batches}{literals}{uids}")
}

/// The internal date IMAP takes: `dd-Mon-yyyy hh:mm:ss +zzzz`.
pub fn internal_date(d: &MessageDate) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let offset = d.offset_minutes;
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} {}{:02}{:02}",
        d.day,
        MONTHS[usize::from(d.month.clamp(1, 12)) - 1],
        d.year,
        d.hour,
        d.minute,
        d.second,
        if offset < 0 { '-' } else { '+' },
        offset.unsigned_abs() / 60,
        offset.unsigned_abs() % 60
    )
}

impl Handover for Appender {
    fn deliver(
        &mut self,
        arrived: Vec<(usize, Spooled)>,
        journal: &mut Journal<'_>,
    ) -> Result<(), DeliveryError> {
        let result = self.append(&arrived, journal);
        for (_, s) in &arrived {
            s.remove();
        }
        result
    }
}

impl Appender {
    fn append(
        &mut self,
        arrived: &[(usize, Spooled)],
        journal: &mut Journal<'_>,
    ) -> Result<(), DeliveryError> {
        if arrived.is_empty() {
            return Ok(());
        }
        let section = &*self.section;
        let Some(client) = self.client.as_mut() else {
            return Err(section
                .failure(
                    crate::imap::Error::Transport(crate::pop3::ErrorKind::Broken.into()),
                    "appending",
                )
                .into());
        };
        // Without UIDPLUS the lowest UID these can get is asked for now (earlier batches
        // took UIDs the server did not tell), unless just asked at connecting.
        if !client.uidplus() && !std::mem::take(&mut self.floor_fresh) {
            let (validity, next) = self
                .link
                .run(|| client.status(&section.mailbox))
                .map_err(|e| section.failure(e, "asking for the mailbox's status"))?;
            self.validity = validity;
            self.floor = next;
        }
        // 1. What identifies each message in the destination, recorded first.
        let destination = PathBuf::from(section.destination());
        let places: Vec<(usize, Place)> = arrived
            .iter()
            .map(|(index, s)| {
                (
                    *index,
                    Place {
                        kind: super::KIND.name.to_owned(),
                        mailbox: Some(destination.clone()),
                        name: s.message_id.clone(),
                        offset: Some(u64::from(self.floor)),
                        len: Some(s.len),
                        sha256: Some(s.sha256.to_vec()),
                        uidvalidity: Some(self.validity),
                        ..Place::default()
                    },
                )
            })
            .collect();
        journal.record_pending(&places)?;

        // 2. The APPEND.
        let files: Vec<Spool> = arrived
            .iter()
            .map(|(_, s)| (s.path.clone(), s.len, s.date.as_ref().map(internal_date)))
            .collect();
        let mailbox = &section.mailbox;
        let failed = |e| -> DeliveryError {
            // (The client marked its connection broken: it is not used again.) What is
            // pending stays so: whether the server took it is for the next run's
            // recovery to find out.
            section.failure(e, "appending").into()
        };
        let mut results = send(&self.link, client, mailbox, &files).map_err(failed)?;
        // A MULTIAPPEND refused is refused whole (a mailbox with room for some of the batch
        // but not all, say): then one at a time, as many as it takes.
        if files.len() > 1 && client.mode.multi && results.iter().all(Result::is_err) {
            if let Some(Err(answer)) = results.first() {
                info!(
                    "the IMAP mailbox {mailbox:?} refused a batch of {} whole ({answer}): \
                     appending them one at a time",
                    files.len()
                );
            }
            results.clear();
            for file in &files {
                let result = match results.last() {
                    // After one refused, the rest are not tried: told the same.
                    Some(Err(answer)) => Err(answer.clone()),
                    _ => send(&self.link, client, mailbox, std::slice::from_ref(file))
                        .map_err(failed)?
                        .remove(0),
                };
                results.push(result);
            }
        }
        crate::failpoint::hit("imap-appended");

        // 3. The UIDs, then 4. delivered.
        let mut uids = Vec::new();
        let mut delivered = Vec::new();
        let mut refused = Vec::new();
        let mut refusal = None;
        for ((index, s), result) in arrived.iter().zip(results) {
            match result {
                Ok(Appended::Uid { validity, uid }) => {
                    uids.push((*index, validity, uid));
                    delivered.push((*index, s.len));
                    self.validity = validity;
                    self.floor = self.floor.max(uid.saturating_add(1));
                }
                Ok(Appended::Stored) => delivered.push((*index, s.len)),
                Err(answer) => {
                    refused.push(*index);
                    refusal.get_or_insert(answer);
                }
            }
        }
        journal.record_dest_uids(&uids)?;
        journal.mark_delivered(&delivered)?;
        if let Some(answer) = refusal {
            journal.drop_pending(&refused)?;
            warn!(
                "the IMAP mailbox {:?} refused {} message(s): {answer}",
                self.section.mailbox,
                refused.len()
            );
            return Err(ImapFailure::Refused {
                name: self.section.name.clone(),
                mailbox: self.section.mailbox.clone(),
                count: refused.len(),
                answer: Box::new(answer),
            }
            .into());
        }
        Ok(())
    }
}

/// A spooled message to append: its file, length and internal date.
type Spool = (PathBuf, u64, Option<String>);

/// Appends `files` in one go (one APPEND, or one each, as the server allows): what became
/// of each.
fn send(
    link: &Link,
    client: &mut Client,
    mailbox: &str,
    files: &[Spool],
) -> Result<Vec<Result<Appended, crate::imap::wire::Tagged>>, crate::imap::Error> {
    link.run(|| async {
        let mut opened = Vec::with_capacity(files.len());
        for (path, len, date) in files {
            // Read in 64 KiB pieces as it is sent: no buffer of its own.
            let file = std::fs::File::open(path).map_err(crate::imap::Error::Spool)?;
            opened.push((file, *len, date));
        }
        let mut messages: Vec<Message<'_>> = opened
            .iter_mut()
            .map(|(file, len, date)| Message {
                data: file,
                len: *len,
                date: (*date).clone(),
            })
            .collect();
        client
            .append(mailbox, &mut messages, &mut || {
                crate::failpoint::hit("imap-appending")
            })
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_dates_are_in_imap_form() {
        let d = MessageDate {
            year: 2026,
            month: 3,
            day: 7,
            hour: 9,
            minute: 5,
            second: 1,
            offset_minutes: -90,
        };
        assert_eq!(internal_date(&d), "07-Mar-2026 09:05:01 -0130");
        let d = MessageDate {
            offset_minutes: 330,
            ..d
        };
        assert_eq!(internal_date(&d), "07-Mar-2026 09:05:01 +0530");
    }
}
