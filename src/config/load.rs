//! Reading a configuration file: the file's top level, `[defaults]` and each account
//! (see `account`), with every problem collected and reported at once, sorted by where it
//! stands in the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::account::{self, account_keys};
use super::{Config, default_state_dir};
use crate::keys::{Checker, KeyDoc, Layered, Problem, keys};

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but has problems (syntax or content); all of them are listed.
    Invalid(Vec<Problem>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { file, source } if source.kind() == std::io::ErrorKind::NotFound => write!(
                f,
                "no configuration file at {} (create one from config.example.toml, or pass --config FILE)",
                file.display()
            ),
            Self::Read { file, source } => {
                write!(
                    f,
                    "cannot read configuration file {}: {source}",
                    file.display()
                )
            }
            Self::Invalid(problems) => {
                let n = problems.len();
                write!(
                    f,
                    "{n} problem{} in the configuration:",
                    if n == 1 { "" } else { "s" }
                )?;
                for p in problems {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

keys! {
    /// The file's own keys, outside any account.
    pub struct TopKeys {
        /// Where popsync keeps its state database and lock files ($POPSYNC_STATE_DIR wins).
        state_dir: "state-dir" { default: "~/.local/state/popsync on Linux", example: "\"~/.local/state/popsync\"" },
        /// How much the agent logs: "error", "warn", "info", "debug" or "trace" (-v and
        /// RUST_LOG win).
        log_level: "log-level" { default: "\"info\"", example: "\"debug\"" },
        /// At most this many accounts are polled at the same time (1 to 64).
        max_parallel: "max-parallel" { default: "4", example: "2" },
        /// An account that keeps failing this long gets a desktop notification.
        notify_failure_after: "notify-failure-after" { default: "\"1h\"", example: "\"30m\"" },
    }
}

/// The keys a file may set outside any account.
pub fn top_keys() -> &'static [KeyDoc] {
    TopKeys::DOCS
}

/// The tables at the top level, beside [`TopKeys`].
const TABLES: [&str; 3] = ["defaults", "account", crate::delivery::imap::section::TABLE];

pub(super) fn load(
    file: &Path,
    state_dir_override: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })?;
    let mut config = parse(&text, file, state_dir_override)?;
    check_permissions(file, &config.password_sections)?;
    config.file = absolute(file);
    Ok(config)
}

fn absolute(file: &Path) -> PathBuf {
    std::path::absolute(file).unwrap_or_else(|_| file.to_owned())
}

pub(super) fn parse(
    text: &str,
    file: &Path,
    state_dir_override: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    let base = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .map(absolute)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut c = Checker::new(file, text, base);
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let at = e.span().map(|s| s.start);
            let message = format!("TOML syntax error: {}", e.message().trim());
            c.problem(at, None, message);
        }
        return Err(ConfigError::Invalid(c.problems));
    }
    let root = root.into_inner();
    if let Some(DeValue::Table(t)) = root.get("defaults").map(|v| v.get_ref()) {
        c.defaults_spans = t.iter().flat_map(|(k, v)| [k.span(), v.span()]).collect();
    }

    let account_names: Vec<&str> = account_keys().iter().map(|k| k.name).collect();
    let top_names: Vec<&str> = TopKeys::DOCS.iter().map(|k| k.name).chain(TABLES).collect();
    for key in root.keys() {
        let name = key.get_ref().as_ref();
        if top_names.contains(&name) {
            continue;
        }
        if account_names.contains(&name) {
            c.problem(
                Some(key.span().start),
                Some(name),
                "account keys belong in an [[account]] section or in [defaults]",
            );
        } else {
            c.unknown_key(key, &top_names);
        }
    }

    let top = TopKeys::take(&Layered::new(&root, None));
    let log_level = top
        .log_level
        .one_of(
            &mut c,
            &[
                ("error", "error"),
                ("warn", "warn"),
                ("info", "info"),
                ("debug", "debug"),
                ("trace", "trace"),
            ],
        )
        .map(str::to_owned);
    let max_parallel = match top.max_parallel.value() {
        None => super::DEFAULT_MAX_PARALLEL,
        Some(v) => match v
            .as_integer()
            .and_then(|i| i.as_str().parse::<usize>().ok())
        {
            Some(n) if (1..=64).contains(&n) => n,
            _ => {
                c.problem(
                    top.max_parallel.at(),
                    Some("max-parallel"),
                    "must be a number from 1 to 64",
                );
                super::DEFAULT_MAX_PARALLEL
            }
        },
    };
    let notify_failure_after = top.notify_failure_after.duration(
        &mut c,
        super::DEFAULT_NOTIFY_FAILURE_AFTER,
        Duration::ZERO,
    );
    let state_dir = top.state_dir.path(&mut c).map(|(p, _)| p);

    let defaults = match root.get("defaults") {
        None => None,
        Some(v) => match v.get_ref() {
            DeValue::Table(t) => {
                for key in t.keys() {
                    let k = key.get_ref().as_ref();
                    if k == "name" {
                        c.problem(
                            Some(key.span().start),
                            Some("name"),
                            "[defaults] cannot set an account's name",
                        );
                    } else if !account_names.contains(&k) {
                        c.unknown_key(key, &account_names);
                    }
                }
                Some(t)
            }
            _ => {
                c.problem(
                    Some(v.span().start),
                    Some("defaults"),
                    "must be a table: [defaults]",
                );
                None
            }
        },
    };

    let state_dir = state_dir_override.or(state_dir).or_else(default_state_dir);

    // The IMAP destinations accounts may name, before the accounts.
    crate::delivery::imap::read_sections(&mut c, root.get("imap"), state_dir.as_deref());

    let mut accounts = Vec::new();
    match root.get("account") {
        None => c.problem(
            None,
            None,
            "no accounts: add an [[account]] section (see config.example.toml)",
        ),
        Some(v) => match v.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item.get_ref() {
                        DeValue::Table(t) => {
                            if let Some(a) =
                                account::read(&mut c, i, item.span().start, t, defaults)
                            {
                                accounts.push(a);
                            }
                        }
                        _ => c.problem(
                            Some(item.span().start),
                            Some("account"),
                            "each account must be a table",
                        ),
                    }
                }
            }
            DeValue::Table(_) => c.problem(
                Some(v.span().start),
                Some("account"),
                "accounts are written [[account]], with double brackets",
            ),
            _ => c.problem(
                Some(v.span().start),
                Some("account"),
                "must be [[account]] sections",
            ),
        },
    }

    // Names must be unique: they key the state database and the locks.
    for (i, a) in accounts.iter().enumerate() {
        if accounts[..i].iter().any(|b| b.name == a.name) {
            c.problem_of(
                None,
                Some(&a.name),
                Some("name"),
                "two accounts have this name; names must be unique",
            );
        }
    }

    let Some(state_dir) = state_dir else {
        c.problem(
            None,
            Some("state-dir"),
            "cannot find a default state directory; set state-dir",
        );
        return Err(ConfigError::Invalid(c.problems));
    };

    if !c.problems.is_empty() {
        c.problems
            .sort_by_key(|p| p.position.unwrap_or((usize::MAX, 0)));
        return Err(ConfigError::Invalid(c.problems));
    }
    let mut accounts = accounts;
    for a in &mut accounts {
        if let super::PasswordSource::OAuth2(s) = &mut a.login.password
            && let crate::oauth2::store::Store::File(dir) = &mut s.store
        {
            dir.clone_from(&state_dir);
        }
    }
    account::warn_about_likely_mistakes(&accounts);

    // Every place the file writes a password, used or overridden.
    let mut password_sections = Vec::new();
    if defaults.is_some_and(|d| d.contains_key("password")) {
        password_sections.push("[defaults]".to_owned());
    }
    for (table, label) in [("account", "account"), ("imap", "[[imap]]")] {
        let Some(DeValue::Array(items)) = root.get(table).map(|v| v.get_ref()) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            if let DeValue::Table(t) = item.get_ref()
                && t.contains_key("password")
            {
                let name = t
                    .get("name")
                    .and_then(|n| n.get_ref().as_str())
                    .map_or_else(|| format!("#{}", i + 1), str::to_owned);
                password_sections.push(format!("{label} {name}"));
            }
        }
    }
    let mut origins = super::Origins {
        top: origins_in(TopKeys::DOCS.iter(), &root, None),
        accounts: Vec::new(),
        imap: Vec::new(),
    };
    if let Some(DeValue::Array(items)) = root.get("imap").map(|v| v.get_ref()) {
        for item in items {
            if let DeValue::Table(t) = item.get_ref()
                && let Some(name) = t.get("name").and_then(|n| n.get_ref().as_str())
            {
                let keys = crate::delivery::imap::section_keys().into_iter();
                origins
                    .imap
                    .push((name.to_owned(), origins_in(keys, t, None)));
            }
        }
    }
    if let Some(DeValue::Array(items)) = root.get("account").map(|v| v.get_ref()) {
        for item in items {
            if let DeValue::Table(t) = item.get_ref() {
                let mut these = origins_in(account_keys().into_iter(), t, defaults);
                // An account's own source of its secret replaces every one in [defaults].
                if these.iter().any(|(doc, o)| {
                    SOURCE_KEYS.contains(&doc.name) && matches!(o, super::Origin::Account(_))
                }) {
                    for (doc, o) in &mut these {
                        if let super::Origin::Defaults(v) = o
                            && SOURCE_KEYS.contains(&doc.name)
                        {
                            *o = super::Origin::Superseded(std::mem::take(v));
                        }
                    }
                }
                origins.accounts.push(these);
            }
        }
    }
    let imap = c
        .named
        .iter()
        .filter(|(table, ..)| *table == crate::delivery::imap::section::TABLE)
        .filter_map(|(_, _, s)| s.clone().downcast::<crate::delivery::imap::Section>().ok())
        .collect();
    Ok(Config {
        imap,
        file: file.to_owned(),
        state_dir,
        accounts,
        log_level,
        max_parallel,
        notify_failure_after,
        password_sections,
        origins,
    })
}

/// The keys that say where an account's login secret comes from (one at most).
const SOURCE_KEYS: [&str; 5] = [
    "password",
    "password-command",
    "password-keyring",
    "oauth2-token-command",
    "oauth2-provider",
];

/// Keys whose values are secrets: shown as `<set>`.
const SECRET_KEYS: [&str; 2] = ["password", "oauth2-client-secret"];

/// Where each of `keys` gets its value: `table`, then `defaults`, else popsync's default.
fn origins_in<'k>(
    keys: impl Iterator<Item = &'k KeyDoc>,
    table: &DeTable<'_>,
    defaults: Option<&DeTable<'_>>,
) -> Vec<(&'k KeyDoc, super::Origin)>
where
    'k: 'static,
{
    keys.map(|doc| {
        let shown = |v: &DeValue<'_>| {
            if SECRET_KEYS.contains(&doc.name) {
                "<set>".to_owned()
            } else {
                written(v)
            }
        };
        let origin = match (table.get(doc.name), defaults.and_then(|d| d.get(doc.name))) {
            (Some(v), _) => super::Origin::Account(shown(v.get_ref())),
            (None, Some(v)) => super::Origin::Defaults(shown(v.get_ref())),
            (None, None) => super::Origin::Default,
        };
        (doc, origin)
    })
    .collect()
}

/// A value as TOML writes it.
fn written(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{:?}", s.as_ref()),
        DeValue::Integer(i) => i.as_str().to_owned(),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| written(i.get_ref()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DeValue::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{} = {}", k.get_ref(), written(v.get_ref())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A file holding a password must not be readable by group or others.
#[cfg(unix)]
fn check_permissions(file: &Path, with_password: &[String]) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    if with_password.is_empty() {
        return Ok(());
    }
    let mode = match std::fs::metadata(file) {
        Ok(m) => m.permissions().mode(),
        Err(source) => {
            return Err(ConfigError::Read {
                file: file.to_owned(),
                source,
            });
        }
    };
    if mode & 0o077 != 0 {
        return Err(ConfigError::Invalid(vec![Problem {
            file: file.to_owned(),
            position: None,
            account: None,
            key: None,
            message: format!(
                "holds a password ({}) but can be read by {} (mode {:04o}); \
                 make it private with: chmod 600 '{}' \
                 (or use password-command to keep the password elsewhere)",
                with_password.join(", "),
                if mode & 0o007 != 0 {
                    "anyone on this machine"
                } else {
                    "its group"
                },
                mode & 0o7777,
                file.display()
            ),
        }]));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_file: &Path, _with_password: &[String]) -> Result<(), ConfigError> {
    // Windows ACLs on the user's profile directory keep other users out by default.
    Ok(())
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
