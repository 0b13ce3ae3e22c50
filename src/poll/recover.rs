//! Finishing what an interrupted run left pending, before anything else is done for the
//! account: each pending message goes to the recovery of the kind of target that recorded
//! it (see `delivery`), which decides from the mailbox whether it got there.

use std::collections::BTreeMap;

use super::FetchError;
use crate::config::Account;
use crate::delivery::{DeliveryError, KINDS, Recovery};
use crate::store::{AccountId, PendingRow, Store};

/// Resolves every pending message of the account. Returns how many were found delivered.
pub fn recover(
    store: &mut Store,
    id: AccountId,
    account: &Account,
    now: i64,
) -> Result<u64, FetchError> {
    let pending = store.pending(id)?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut by_kind: BTreeMap<&str, Vec<&PendingRow>> = BTreeMap::new();
    for row in &pending {
        by_kind.entry(&row.place.kind).or_default().push(row);
    }
    let mut recovery = Recovery::new(store, id, now);
    for (name, rows) in by_kind {
        let kind = KINDS
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| DeliveryError::UnknownKind(name.to_owned()))?;
        (kind.recover)(&mut recovery, &rows, &account.delivery)?;
    }
    Ok(recovery.recovered)
}
