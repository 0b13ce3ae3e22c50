//! Where an account's refresh token is kept: the system keyring (the same store as
//! `password-keyring`, under the entry `NAME/oauth2`), or, with `oauth2-token-store =
//! "file"`, a file of its own in the state directory (`oauth2/NAME.token`, mode 0600, in a
//! directory only the user can enter), replaced atomically. Never the configuration, the
//! state database or a log.

use std::path::{Path, PathBuf};

use crate::config::keyring::{self, KeyringError};
use crate::exit::ErrorClass;
use crate::pop3::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    Keyring,
    /// The state directory.
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{0}; or keep the refresh token in a file of its own in the state directory with \
         oauth2-token-store = \"file\""
    )]
    Keyring(KeyringError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Keyring(e) => e.class(),
            Self::File { .. } => ErrorClass::Local,
        }
    }
}

/// The keyring entry of an account's refresh token (the password has the plain name).
fn keyring_entry(account: &str) -> String {
    format!("{account}/oauth2")
}

impl Store {
    /// The file that holds the refresh token (for `File`).
    pub fn file_of(state_dir: &Path, account: &str) -> PathBuf {
        state_dir.join("oauth2").join(format!("{account}.token"))
    }

    /// The stored refresh token, if there is one.
    pub async fn load(&self, account: &str) -> Result<Option<Secret>, StoreError> {
        match self {
            Self::Keyring => match keyring::get(&keyring_entry(account)).await {
                Ok(s) => Ok(Some(s)),
                Err(KeyringError::NotFound { .. }) => Ok(None),
                Err(e) => Err(StoreError::Keyring(e)),
            },
            Self::File(state_dir) => {
                let path = Self::file_of(state_dir, account);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let t = text.trim();
                        Ok((!t.is_empty()).then(|| Secret::new(t)))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(StoreError::File { path, source }),
                }
            }
        }
    }

    /// Stores `refresh`, replacing what was stored.
    pub async fn save(&self, account: &str, refresh: &Secret) -> Result<(), StoreError> {
        match self {
            Self::Keyring => keyring::set(&keyring_entry(account), refresh.clone())
                .await
                .map_err(StoreError::Keyring),
            Self::File(state_dir) => {
                let path = Self::file_of(state_dir, account);
                write_private(&path, refresh.expose().as_bytes())
                    .map_err(|source| StoreError::File { path, source })
            }
        }
    }

    /// Removes the stored token. `Ok(false)` if there was none.
    pub async fn delete(&self, account: &str) -> Result<bool, StoreError> {
        match self {
            Self::Keyring => keyring::delete(&keyring_entry(account))
                .await
                .map_err(StoreError::Keyring),
            Self::File(state_dir) => {
                let path = Self::file_of(state_dir, account);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(source) => Err(StoreError::File { path, source }),
                }
            }
        }
    }

    /// Where it is kept, in words.
    pub fn describe(&self, account: &str) -> String {
        match self {
            Self::Keyring => format!(
                "the system keyring (service {:?}, entry {:?})",
                keyring::SERVICE,
                keyring_entry(account)
            ),
            Self::File(state_dir) => Self::file_of(state_dir, account).display().to_string(),
        }
    }
}

/// Writes `bytes` to `path` readable by the user alone, through a temporary file renamed
/// over it (a crash leaves the old token or the new one, never half of one), flushed first.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_store_keeps_one_token_private_and_replaces_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::File(dir.path().to_owned());
        assert!(store.load("home").await.unwrap().is_none());
        store.save("home", &Secret::new("first")).await.unwrap();
        store.save("home", &Secret::new("second")).await.unwrap();
        assert_eq!(
            store.load("home").await.unwrap().unwrap().expose(),
            "second"
        );
        let path = Store::file_of(dir.path(), "home");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700);
        }
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["home.token"], "no temporary file left");
        assert!(store.delete("home").await.unwrap());
        assert!(!store.delete("home").await.unwrap());
        assert!(store.load("home").await.unwrap().is_none());
    }
}
