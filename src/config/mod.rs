//! Configuration: where it is found, what it may say, and what it means.
//!
//! The TOML file is parsed with spans, then every key is checked, so that one run reports
//! *every* problem at once, each naming the file, line and column, the account and the key
//! (with a "did you mean" for misspelt keys). Each key is declared once, with its default
//! and documentation, in the group that reads it (see `crate::keys`): the file's own keys
//! and the reading of `[defaults]` and accounts in `load`; per account the name (`account`),
//! the server and TLS (`server`), the login (`credentials`), where mail goes (each delivery
//! kind's own keys, in `crate::delivery`), retention and sizes (`limits`), timing
//! (`timing`), notifications and the hook (`notifications`). What comes out is a validated
//! [`Config`]: paths expanded and absolute, durations parsed, defaults applied, exactly one
//! password source per account. A file that holds a password and can be read by group or
//! others is refused.
//!
//! Lookup order for the file: `--config FILE`, then `$POPSYNC_CONFIG`, then the platform's
//! config directory (`~/.config/popsync/config.toml` on Linux). The state directory:
//! `$POPSYNC_STATE_DIR`, then `state-dir` in the file, then the platform's state directory
//! (`~/.local/state/popsync` on Linux).

mod account;
pub(crate) mod credentials;
pub mod keyring;
mod limits;
mod load;
mod notifications;
pub mod secret;
pub(crate) mod server;
mod timing;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::keys::duration::{format_duration, parse_duration};
pub use crate::keys::values::{QuietHours, expand_path, parse_size};
pub use crate::keys::{KeyDoc, Problem};
pub use account::account_keys;
pub(crate) use account::valid_name;
pub use credentials::Login;
pub use limits::Limits;
pub use load::{ConfigError, top_keys};
pub use notifications::Notifications;
pub use secret::PasswordSource;
pub use server::Server;
pub use timing::Timing;

pub use crate::delivery::Delivery;

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "POPSYNC_CONFIG";
/// The environment variable naming the state directory (overrides `state-dir`).
pub const STATE_DIR_ENV: &str = "POPSYNC_STATE_DIR";

/// Who a stored secret (keyring password, OAuth2 refresh token) belongs to, from the name
/// it is kept under: in words, and as the option that names it on the command line
/// (`account "home"` and `--account home`, or `IMAP destination "gmail"` and `--imap gmail`).
pub fn whose(credential_name: &str) -> (String, String) {
    match credential_name.strip_prefix("imap=") {
        Some(name) => (
            format!("IMAP destination {name:?}"),
            format!("--imap {name}"),
        ),
        None => (
            format!("account {credential_name:?}"),
            format!("--account {credential_name}"),
        ),
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Where the state database and lock files live.
    pub state_dir: PathBuf,
    pub accounts: Vec<Account>,
    /// `log-level`: the daemon's default log filter (`-v` and `RUST_LOG` win).
    pub log_level: Option<String>,
    /// `max-parallel`: most accounts polled at the same time.
    pub max_parallel: usize,
    /// `notify-failure-after`: an account failing this long gets a problem notification.
    pub notify_failure_after: Duration,
    /// Where the file writes a password (`[defaults]` or account names), whether or not the
    /// password is used: the file must then be private.
    pub(crate) password_sections: Vec<String>,
    /// The `[[imap]]` sections: IMAP mailboxes accounts deliver into.
    pub imap: Vec<std::sync::Arc<crate::delivery::imap::Section>>,
    /// Where each key's value came from: the file's own keys, then each account's (in the
    /// order of `accounts`), for `popsync config`.
    pub origins: Origins,
}

/// Where the value of each key came from.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    pub top: Vec<(&'static KeyDoc, Origin)>,
    pub accounts: Vec<Vec<(&'static KeyDoc, Origin)>>,
    /// Each `[[imap]]` section's, by its name.
    pub imap: Vec<(String, Vec<(&'static KeyDoc, Origin)>)>,
}

/// Where one key's value came from, with the value as written (secrets not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Set in the account's own section (or, for the file's own keys, in the file).
    Account(String),
    /// Set in `[defaults]`.
    Defaults(String),
    /// Not set: popsync's default (the key's declared default).
    Default,
    /// Set in `[defaults]` but not in effect: the account sets another source of its
    /// login secret, which replaces every one in `[defaults]`.
    Superseded(String),
}

/// What happens to messages on the server after they were downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Leave them on the server (the default).
    Keep,
    /// Delete them from the server once they are safely stored.
    Delete,
    /// Delete them this long after they were downloaded.
    After(Duration),
}

/// One POP3 account, fully validated: its name, then what each group of keys says (each
/// group's keys, their reading and what they mean are in one module).
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    /// Where the server is and how the connection is protected (`server`).
    pub server: Server,
    /// Who logs in, with what secret, and how (`credentials`).
    pub login: Login,
    /// Where new mail goes (each kind of target's keys are in its module in `delivery`).
    pub delivery: Delivery,
    /// What is deleted from the server, and what is too big to download (`limits`).
    pub limits: Limits,
    /// How long popsync waits, and how often the agent polls (`timing`).
    pub timing: Timing,
    /// What the agent tells the user, and what runs after new mail (`notifications`).
    pub notifications: Notifications,
}

impl Account {
    /// A digest of what decides whether the account can log in and fetch: where it
    /// connects, how it logs in and where its secret comes from. The agent keeps it with a
    /// pause (after a refused login, say) and ends the pause when the digest changes. A
    /// password written in the file is part of it (hashed with everything else, in the
    /// state directory, which is as private as the file itself).
    pub fn login_digest(&self) -> String {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        h.update(format!("{:?}\0{:?}\0", self.server, self.login).as_bytes());
        if let PasswordSource::Inline(secret) = &self.login.password {
            h.update(secret.expose().as_bytes());
        }
        // The IMAP mailbox it delivers into logs in too: a pause for its sake ends when its
        // section changes. (Only then: the digests of other accounts stay what they were.)
        if let Some(imap) = self.delivery.settings::<crate::delivery::imap::Settings>() {
            let s = &imap.section;
            h.update(format!("imap\0{:?}\0{:?}\0{}\0", s.server, s.login, s.mailbox).as_bytes());
            if let PasswordSource::Inline(secret) = &s.login.password {
                h.update(secret.expose().as_bytes());
            }
        }
        h.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What happens to a message over `max-size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Left on the server, remembered, never downloaded.
    Skip,
    /// Deleted from the server without being downloaded (only when asked for).
    Delete,
}

/// Default response timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default grace period before a vanished message is forgotten.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(7 * 86_400);
/// Default time between polls.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Default limit for the new-mail hook.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// Default most accounts polled at once.
pub const DEFAULT_MAX_PARALLEL: usize = 4;
/// Default time an account may fail before the user is told.
pub const DEFAULT_NOTIFY_FAILURE_AFTER: Duration = Duration::from_secs(3600);

impl Config {
    /// Reads and validates `file`. `state_dir_override` is `$POPSYNC_STATE_DIR`, if set.
    pub fn load(file: &Path, state_dir_override: Option<PathBuf>) -> Result<Self, ConfigError> {
        load::load(file, state_dir_override)
    }

    /// Validates configuration text as if it had been read from `file`.
    pub fn parse(
        text: &str,
        file: &Path,
        state_dir_override: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        load::parse(text, file, state_dir_override)
    }

    /// The accounts named in `names`, or all of them if `names` is empty. Unknown names are
    /// an error listing the known ones.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Account>, String> {
        if names.is_empty() {
            return Ok(self.accounts.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.accounts.iter().find(|a| &a.name == n).ok_or_else(|| {
                    let known: Vec<_> = self.accounts.iter().map(|a| a.name.as_str()).collect();
                    format!(
                        "no account named {n:?} in {} (accounts: {})",
                        self.file.display(),
                        known.join(", ")
                    )
                })
            })
            .collect()
    }
}

/// The config file to use: `explicit` (from `--config`), else `$POPSYNC_CONFIG`, else the
/// platform default.
pub fn config_path(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    project_dirs()
        .map(|d| d.config_dir().join("config.toml"))
        .ok_or_else(|| "cannot find the home directory; pass --config FILE".to_owned())
}

/// The platform's default state directory.
pub fn default_state_dir() -> Option<PathBuf> {
    let dirs = project_dirs()?;
    Some(
        dirs.state_dir()
            .map(Path::to_owned)
            .unwrap_or_else(|| dirs.data_local_dir().to_owned()),
    )
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "popsync")
}
