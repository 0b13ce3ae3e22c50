//! Passwords in the system's credential store: the Secret Service on Linux and the BSDs
//! (GNOME Keyring, KeePassXC, KWallet 6 ...), the Keychain on macOS, the Credential Manager
//! on Windows. Each password is stored under the service `popsync` and the account's name.
//!
//! On Linux and the BSDs popsync speaks the Secret Service API itself, over the D-Bus
//! session bus ([`secret_service`]); on macOS and Windows it goes through
//! `keyring-core`'s native stores. Every call has a time limit: a keyring that wants to show
//! an unlock prompt nobody answers must not hang popsync.

use std::time::Duration;

use crate::pop3::Secret;

/// The service name entries are stored under.
pub const SERVICE: &str = "popsync";

/// How long a keyring call may take (an unlock prompt may be showing).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Why the keyring could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "no password stored for {}; store one with `popsync password set {}`",
        crate::config::whose(.account).0,
        crate::config::whose(.account).1
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

impl KeyringError {
    /// Nothing stored: the user must store it; a keyring not (yet) running or not answering
    /// may be there next time.
    pub fn class(&self) -> crate::exit::ErrorClass {
        use crate::exit::ErrorClass;
        match self {
            Self::NotFound { .. } => ErrorClass::Auth,
            Self::Unavailable { .. } | Self::Timeout(_) => ErrorClass::Temporary,
            Self::Other(_) => ErrorClass::Local,
        }
    }
}

/// The Secret Service, over the session bus (no blocking, no extra D-Bus library).
#[cfg(all(unix, not(target_os = "macos")))]
mod secret_service;

#[cfg(all(unix, not(target_os = "macos")))]
mod platform {
    use super::KeyringError;
    use super::secret_service as ss;

    pub async fn get(account: &str) -> Result<String, KeyringError> {
        ss::get(account).await
    }

    pub async fn set(account: &str, password: &str) -> Result<(), KeyringError> {
        ss::set(account, password).await
    }

    pub async fn delete(account: &str) -> Result<bool, KeyringError> {
        ss::delete(account).await
    }
}

/// The Keychain and the Credential Manager, through `keyring-core`, which blocks: every call
/// runs on a blocking thread.
#[cfg(any(target_os = "macos", windows))]
mod platform {
    use std::sync::Arc;

    use keyring_core::{CredentialStore, Entry};

    use super::{KeyringError, SERVICE};

    /// A fresh connection to the store for every call.
    fn store() -> keyring_core::Result<Arc<CredentialStore>> {
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
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(join) => Err(KeyringError::Other(format!(
                "the keyring call failed: {join}"
            ))),
        }
    }

    pub async fn get(account: &str) -> Result<String, KeyringError> {
        let name = account.to_owned();
        blocking(move || entry(&name)?.get_password().map_err(|e| classify(&name, e))).await
    }

    pub async fn set(account: &str, password: &str) -> Result<(), KeyringError> {
        let (name, password) = (account.to_owned(), password.to_owned());
        blocking(move || {
            entry(&name)?
                .set_password(&password)
                .map_err(|e| classify(&name, e))
        })
        .await
    }

    pub async fn delete(account: &str) -> Result<bool, KeyringError> {
        let name = account.to_owned();
        blocking(move || match entry(&name)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(classify(&name, e)),
        })
        .await
    }
}

/// With a time limit: a keyring busy with an unlock prompt must not hang popsync.
async fn limited<T>(
    work: impl std::future::Future<Output = Result<T, KeyringError>>,
) -> Result<T, KeyringError> {
    tokio::time::timeout(TIMEOUT, work)
        .await
        .unwrap_or(Err(KeyringError::Timeout(TIMEOUT)))
}

/// The password stored for `account`.
pub async fn get(account: &str) -> Result<Secret, KeyringError> {
    Ok(Secret::new(limited(platform::get(account)).await?))
}

/// Stores `password` for `account`, replacing any stored before.
pub async fn set(account: &str, password: Secret) -> Result<(), KeyringError> {
    limited(platform::set(account, password.expose())).await
}

/// Removes the password stored for `account`. `Ok(false)` if there was none.
pub async fn delete(account: &str) -> Result<bool, KeyringError> {
    limited(platform::delete(account)).await
}
