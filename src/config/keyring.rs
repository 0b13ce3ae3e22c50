//! Passwords in the system's credential store: the Secret Service on Linux and the BSDs
//! (GNOME Keyring, KeePassXC, KWallet 6 ...), the Keychain on macOS, the Credential Manager
//! on Windows. Each password is stored under the service `popsync` and the account's name.
//!
//! The `keyring` crate is blocking, so every call runs on a blocking thread, with a time
//! limit: a keyring that wants to show an unlock prompt nobody answers must not hang popsync.

use std::sync::Arc;
use std::time::Duration;

use keyring_core::{CredentialStore, Entry};

use crate::pop3::Secret;

/// The service name entries are stored under.
pub const SERVICE: &str = "popsync";

/// How long a keyring call may take (an unlock prompt may be showing).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Why the keyring could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "no password stored for account {account:?}; store one with \
         `popsync password set --account {account}`"
    )]
    NotFound { account: String },
    #[error(
        "no keyring service is available ({detail}); start one (e.g. gnome-keyring-daemon or \
         KeePassXC with Secret Service enabled), or use `password-command` or `password` instead"
    )]
    Unavailable { detail: String },
    #[error("the keyring did not answer within {}s (is it locked and asking to be unlocked?)", .0.as_secs())]
    Timeout(Duration),
    #[error("{0}")]
    Other(String),
}

/// A fresh connection to the store for every call: the agent runs for weeks, and a keyring
/// daemon restarted meanwhile must not leave it with a dead session.
fn store() -> keyring_core::Result<Arc<CredentialStore>> {
    #[cfg(all(unix, not(target_os = "macos")))]
    let store: Arc<CredentialStore> = zbus_secret_service_keyring_store::Store::new()?;
    #[cfg(target_os = "macos")]
    let store: Arc<CredentialStore> = apple_native_keyring_store::keychain::Store::new()?;
    #[cfg(windows)]
    let store: Arc<CredentialStore> = windows_native_keyring_store::Store::new()?;
    Ok(store)
}

fn entry(account: &str) -> Result<Entry, KeyringError> {
    store()
        .and_then(|s| Entry::new_in_store(&s, SERVICE, account))
        .map_err(|e| classify(account, e))
}

fn classify(account: &str, e: keyring_core::Error) -> KeyringError {
    use keyring_core::Error;
    match e {
        Error::NoEntry => KeyringError::NotFound {
            account: account.to_owned(),
        },
        Error::PlatformFailure(_) | Error::NoStorageAccess(_) | Error::NoDefaultStore => {
            KeyringError::Unavailable {
                detail: e.to_string(),
            }
        }
        other => KeyringError::Other(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, KeyringError> + Send + 'static,
) -> Result<T, KeyringError> {
    match tokio::time::timeout(TIMEOUT, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(KeyringError::Other(format!(
            "the keyring call failed: {join}"
        ))),
        Err(_) => Err(KeyringError::Timeout(TIMEOUT)),
    }
}

/// The password stored for `account`.
pub async fn get(account: &str) -> Result<Secret, super::secret::PasswordError> {
    let name = account.to_owned();
    let password =
        blocking(move || entry(&name)?.get_password().map_err(|e| classify(&name, e))).await?;
    Ok(Secret::new(password))
}

/// Stores `password` for `account`, replacing any stored before.
pub async fn set(account: &str, password: Secret) -> Result<(), KeyringError> {
    let name = account.to_owned();
    blocking(move || {
        entry(&name)?
            .set_password(password.expose())
            .map_err(|e| classify(&name, e))
    })
    .await
}

/// Removes the password stored for `account`. `Ok(false)` if there was none.
pub async fn delete(account: &str) -> Result<bool, KeyringError> {
    let name = account.to_owned();
    blocking(move || match entry(&name)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring_core::Error::NoEntry) => Ok(false),
        Err(e) => Err(classify(&name, e)),
    })
    .await
}
