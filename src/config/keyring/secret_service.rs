//! A small client of the freedesktop Secret Service API (GNOME Keyring, KeePassXC, KWallet)
//! over the D-Bus session bus, on the zbus popsync already uses for notifications.
//!
//! Items are found by the attributes `service = "popsync"` and `username = ACCOUNT` — what
//! `secret-tool lookup service popsync username ACCOUNT` finds, and what other tools built on
//! libsecret or the `keyring` crate use. Secrets travel with the "plain" algorithm: the
//! session bus is local to the user's session, as libsecret assumes for it too.
//!
//! A locked collection would need the user to answer an unlock prompt; popsync runs in the
//! background and never prompts, so it reports the keyring as locked instead.

use std::collections::HashMap;

use zbus::{Connection, OwnedObjectPath, OwnedVariant, Variant};

use super::{KeyringError, SERVICE};

const BUS_NAME: &str = "org.freedesktop.secrets";
const PATH: &str = "/org/freedesktop/secrets";
const SERVICE_IFACE: &str = "org.freedesktop.Secret.Service";
const COLLECTION_IFACE: &str = "org.freedesktop.Secret.Collection";
const ITEM_IFACE: &str = "org.freedesktop.Secret.Item";

/// A secret as the API carries it: session, parameters, value, content type.
type WireSecret = (OwnedObjectPath, Vec<u8>, Vec<u8>, String);

fn unavailable(e: impl std::fmt::Display) -> KeyringError {
    KeyringError::Unavailable {
        detail: e.to_string(),
    }
}

fn other(e: impl std::fmt::Display) -> KeyringError {
    KeyringError::Other(e.to_string())
}

struct Session {
    conn: Connection,
    path: OwnedObjectPath,
}

fn is_none(path: &OwnedObjectPath) -> bool {
    path.as_str() == "/"
}

impl Session {
    async fn open() -> Result<Self, KeyringError> {
        let conn = Connection::session()
            .await
            .map_err(|e| unavailable(format!("no D-Bus session bus: {e}")))?;
        let reply = conn
            .call_method(
                Some(BUS_NAME),
                PATH,
                Some(SERVICE_IFACE),
                "OpenSession",
                &("plain", Variant::from("")),
            )
            .await
            .map_err(|e| unavailable(format!("{BUS_NAME} does not answer: {e}")))?;
        let (_, path): (OwnedVariant, OwnedObjectPath) =
            reply.body().deserialize().map_err(other)?;
        Ok(Self { conn, path })
    }

    async fn call<B, R>(
        &self,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> Result<R, KeyringError>
    where
        B: serde::Serialize + zbus::Type,
        R: for<'d> serde::Deserialize<'d> + zbus::Type,
    {
        let reply = self
            .conn
            .call_method(Some(BUS_NAME), path, Some(iface), method, body)
            .await
            .map_err(|e| other(format!("{method}: {e}")))?;
        reply
            .body()
            .deserialize()
            .map_err(|e| other(format!("{method}: {e}")))
    }

    /// The items for `account`: (unlocked, locked).
    async fn search(
        &self,
        account: &str,
    ) -> Result<(Vec<OwnedObjectPath>, Vec<OwnedObjectPath>), KeyringError> {
        let attributes = HashMap::from([("service", SERVICE), ("username", account)]);
        self.call(PATH, SERVICE_IFACE, "SearchItems", &(attributes,))
            .await
    }
}

fn locked(account: &str) -> KeyringError {
    KeyringError::Other(format!(
        "the keyring holding the password of account {account:?} is locked; unlock it (log in \
         to the desktop, or `gnome-keyring-daemon --unlock`) and popsync tries again"
    ))
}

/// The password stored for `account`.
pub async fn get(account: &str) -> Result<String, KeyringError> {
    let s = Session::open().await?;
    let (unlocked, locked_items) = s.search(account).await?;
    let Some(item) = unlocked.first() else {
        return Err(if locked_items.is_empty() {
            KeyringError::NotFound {
                account: account.to_owned(),
            }
        } else {
            locked(account)
        });
    };
    let secrets: HashMap<OwnedObjectPath, WireSecret> = s
        .call(
            PATH,
            SERVICE_IFACE,
            "GetSecrets",
            &(vec![item.clone()], s.path.clone()),
        )
        .await?;
    let (_, _, value, _) = secrets
        .into_values()
        .next()
        .ok_or_else(|| other("the keyring returned no secret"))?;
    String::from_utf8(value).map_err(|_| other("the stored password is not UTF-8"))
}

/// Stores `password` for `account` in the default collection, replacing what was there.
pub async fn set(account: &str, password: &str) -> Result<(), KeyringError> {
    let s = Session::open().await?;
    let collection: OwnedObjectPath = s
        .call(PATH, SERVICE_IFACE, "ReadAlias", &("default",))
        .await?;
    if is_none(&collection) {
        return Err(other(
            "the keyring has no default collection (create one in your keyring manager, e.g. \
             Seahorse)",
        ));
    }
    let attributes: HashMap<&str, &str> =
        HashMap::from([("service", SERVICE), ("username", account)]);
    let label = format!("popsync password of account {account}");
    let properties: HashMap<&str, Variant<'_>> = HashMap::from([
        (
            "org.freedesktop.Secret.Item.Label",
            Variant::from(label.as_str()),
        ),
        (
            "org.freedesktop.Secret.Item.Attributes",
            Variant::from(attributes),
        ),
    ]);
    let secret: WireSecret = (
        s.path.clone(),
        Vec::new(),
        password.as_bytes().to_vec(),
        "text/plain".to_owned(),
    );
    let (_item, prompt): (OwnedObjectPath, OwnedObjectPath) = s
        .call(
            collection.as_str(),
            COLLECTION_IFACE,
            "CreateItem",
            &(properties, secret, true),
        )
        .await?;
    if !is_none(&prompt) {
        return Err(locked(account));
    }
    Ok(())
}

/// Removes every item stored for `account`. `Ok(false)` if there was none.
pub async fn delete(account: &str) -> Result<bool, KeyringError> {
    let s = Session::open().await?;
    let (unlocked, locked_items) = s.search(account).await?;
    if unlocked.is_empty() && !locked_items.is_empty() {
        return Err(locked(account));
    }
    for item in &unlocked {
        let prompt: OwnedObjectPath = s.call(item.as_str(), ITEM_IFACE, "Delete", &()).await?;
        if !is_none(&prompt) {
            return Err(locked(account));
        }
    }
    Ok(!unlocked.is_empty())
}
