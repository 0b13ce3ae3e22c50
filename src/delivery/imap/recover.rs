//! Finishing appends an interrupted run left pending: the destination is asked.

use std::collections::HashSet;

use tracing::{info, warn};

use super::{Link, Section, Settings};
use crate::delivery::{Delivery, DeliveryError, Recovery};
use crate::imap::Client;
use crate::store::PendingRow;

/// What was found of one pending message.
enum Found {
    /// In the mailbox of this UIDVALIDITY, at this UID.
    At(u32, u32),
    Absent,
}

/// Decides, for each pending append, whether the destination has the message.
pub fn recover(
    r: &mut Recovery<'_>,
    rows: &[&PendingRow],
    current: &Delivery,
) -> Result<(), DeliveryError> {
    let settings = current.settings::<Settings>();
    let here = settings.map(|s| s.section.destination());
    let (mut confirmed, mut elsewhere, mut to_find) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let recorded = row
            .place
            .mailbox
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        if row.place.dest_uid.is_some() {
            confirmed.push(*row);
        } else if recorded.is_some() && recorded == here {
            to_find.push(*row);
        } else {
            elsewhere.push(*row);
        }
    }
    if !elsewhere.is_empty() {
        // The account delivers elsewhere now: the old destination cannot be asked.
        warn!(
            "an interrupted run was appending {} message(s) to an IMAP mailbox this account no longer delivers to ({}); they are downloaded again, and may be there twice",
            elsewhere.len(),
            elsewhere[0]
                .place
                .mailbox
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        r.not_delivered(&elsewhere)?;
    }
    r.delivered(&sizes(&confirmed))?;
    let Some(settings) = settings else {
        return Ok(());
    };
    if to_find.is_empty() {
        return Ok(());
    }
    let section = settings.section.clone();
    let link = Link::new(&section)?;
    // A server may still be finishing an append the interrupted run sent (its data still
    // on the way when popsync was killed): a message is taken as absent only once that
    // append would have timed out.
    let started = to_find
        .iter()
        .filter_map(|r| r.pending_at)
        .max()
        .unwrap_or(0);
    let settle = (started + section.timeout.as_secs() as i64 - r.now()).max(0) as u64;
    let found = link.run(|| async {
        let mut client = section.session().await?;
        let mut claimed = HashSet::new();
        let mut found = find(&mut client, &section, &to_find, &mut claimed).await;
        if let Ok(first) = &found
            && settle > 0
            && first.iter().any(|f| matches!(f, Found::Absent))
        {
            info!(
                "waiting {settle} s, in case the IMAP server is still finishing appends an interrupted run sent"
            );
            tokio::time::sleep(std::time::Duration::from_secs(settle)).await;
            let absent: Vec<usize> = first
                .iter()
                .enumerate()
                .filter(|(_, f)| matches!(f, Found::Absent))
                .map(|(i, _)| i)
                .collect();
            let again: Vec<&PendingRow> = absent.iter().map(|i| to_find[*i]).collect();
            found = match find(&mut client, &section, &again, &mut claimed).await {
                Ok(second) => {
                    let mut all = found.expect("checked");
                    for (i, f) in absent.into_iter().zip(second) {
                        all[i] = f;
                    }
                    Ok(all)
                }
                Err(e) => Err(e),
            };
        }
        client.logout().await;
        found.map_err(|e| section.failure(e, "looking for messages an interrupted run appended"))
    })?;
    crate::failpoint::hit("recovery-located");
    let (mut at, mut absent) = (Vec::new(), Vec::new());
    for (row, found) in to_find.iter().zip(found) {
        match found {
            Found::At(validity, uid) => at.push((*row, validity, uid)),
            Found::Absent => absent.push(*row),
        }
    }
    r.found_at(&at)?;
    let there: Vec<&PendingRow> = at.iter().map(|(row, ..)| *row).collect();
    r.delivered(&sizes(&there))?;
    r.not_delivered(&absent)?;
    info!(
        "an interrupted run left appends to the IMAP mailbox {:?} unfinished: {} message(s) were there, {} will be downloaded again",
        section.mailbox,
        there.len(),
        absent.len()
    );
    Ok(())
}

/// Each row with its length in the destination.
fn sizes<'r>(rows: &[&'r PendingRow]) -> Vec<(&'r PendingRow, u64)> {
    rows.iter()
        .map(|row| (*row, row.place.len.unwrap_or(0)))
        .collect()
}

/// Looks for each message among the mailbox's messages that could be it.
/// A UID in `claimed` was found to be one message already, and is not taken for another
/// (the same message twice in one batch).
async fn find(
    client: &mut Client,
    section: &Section,
    rows: &[&PendingRow],
    claimed: &mut HashSet<u32>,
) -> Result<Vec<Found>, crate::imap::Error> {
    let validity = client.examine(&section.mailbox).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let place = &row.place;
        let (Some(len), Some(sha256)) = (place.len, place.sha256.as_deref()) else {
            out.push(Found::Absent);
            continue;
        };
        let mut criteria = String::new();
        if place.uidvalidity == Some(validity)
            && let Some(floor) = place.offset
        {
            criteria.push_str(&format!("UID {}:* ", floor.max(1)));
        }
        match place.name.as_deref().filter(|id| searchable(id)) {
            Some(id) => criteria.push_str(&format!("HEADER Message-ID \"{id}\"")),
            None => criteria.push_str(&format!(
                "LARGER {} SMALLER {}",
                len.saturating_sub(1),
                len.saturating_add(1)
            )),
        }
        let candidates: Vec<u32> = client
            .uid_search(&criteria)
            .await?
            .into_iter()
            .filter(|uid| !claimed.contains(uid))
            .collect();
        let digests = client.digests(&candidates).await?;
        match digests
            .iter()
            .find(|(_, digest, n)| *n == len && digest.as_slice() == sha256)
        {
            Some((uid, ..)) => {
                claimed.insert(*uid);
                out.push(Found::At(validity, *uid));
            }
            None => out.push(Found::Absent),
        }
    }
    Ok(out)
}

/// A Message-ID that can go in a quoted search string as it is.
fn searchable(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
}
