//! Reading the TOML file and checking every key, collecting all problems.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::secret::PasswordSource;
use super::{
    Account, Config, DEFAULT_FORGET_AFTER, DEFAULT_HOOK_TIMEOUT, DEFAULT_INTERVAL, DEFAULT_TIMEOUT,
    Delivery, Oversize, QuietHours, Retention, default_state_dir, expand_path, parse_duration,
};
use crate::delivery::mbox::{KernelLock, Locking as MboxLocking};
use crate::delivery::{maildir, mbox, mda};
use crate::pop3::{AuthMethod, Secret, Security, TlsOptions};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line and column, where known.
    pub position: Option<(usize, usize)>,
    pub account: Option<String>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        match (&self.account, &self.key) {
            (Some(a), Some(k)) if a.starts_with('[') => write!(f, "{a}, key `{k}`: ")?,
            (Some(a), Some(k)) => write!(f, "account {a:?}, key `{k}`: ")?,
            (Some(a), None) => write!(f, "account {a:?}: ")?,
            (None, Some(k)) => write!(f, "key `{k}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

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

const TOP_KEYS: &[&str] = &[
    "state-dir",
    "log-level",
    "max-parallel",
    "notify-failure-after",
    "defaults",
    "account",
];
/// The keys an `[[account]]` (or `[defaults]`) may set.
pub const ACCOUNT_KEYS: &[&str] = &[
    "name",
    "host",
    "port",
    "security",
    "ca-file",
    "tls-fingerprint",
    "dangerous-accept-invalid-certs",
    "username",
    "password",
    "password-command",
    "password-keyring",
    "oauth2-token-command",
    "auth",
    "maildir",
    "mbox",
    "mbox-locking",
    "mbox-lock-timeout",
    "mda",
    "mda-from-line",
    "mda-timeout",
    "retention",
    "max-size",
    "oversize",
    "headers-only-over",
    "timeout",
    "forget-after",
    "interval",
    "notify",
    "open-command",
    "quiet-hours",
    "on-new-mail",
    "hook-timeout",
];

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

struct Checker<'a> {
    file: PathBuf,
    text: &'a str,
    base: PathBuf,
    /// Where `[defaults]` is: problems there are reported once, as `[defaults]`, not once
    /// per account that inherits the value.
    defaults_spans: Vec<std::ops::Range<usize>>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn problem(
        &mut self,
        at: Option<usize>,
        account: Option<&str>,
        key: Option<&str>,
        message: impl Into<String>,
    ) {
        let position = at.map(|o| self.position(o));
        let in_defaults = at.is_some_and(|o| self.defaults_spans.iter().any(|r| r.contains(&o)));
        let problem = Problem {
            file: self.file.clone(),
            position,
            account: if in_defaults {
                Some("[defaults]".to_owned())
            } else {
                account.map(str::to_owned)
            },
            key: key.map(str::to_owned),
            message: message.into(),
        };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        known: &[&str],
        account: Option<&str>,
    ) {
        let name = key.get_ref().as_ref();
        let hint = closest(name, known)
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_else(|| format!(" (known keys: {})", known.join(", ")));
        self.problem(
            Some(key.span().start),
            account,
            Some(name),
            format!("unknown key{hint}"),
        );
    }
}

/// Looks up `key` in the account table, then in `[defaults]`.
struct Layered<'t, 'i> {
    account: &'t DeTable<'i>,
    defaults: Option<&'t DeTable<'i>>,
}

impl<'t, 'i> Layered<'t, 'i> {
    fn get(&self, key: &str) -> Option<(&'t Spanned<DeValue<'i>>, bool)> {
        self.account
            .get(key)
            .map(|v| (v, false))
            .or_else(|| self.defaults.and_then(|d| d.get(key)).map(|v| (v, true)))
    }
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
    let mut c = Checker {
        file: file.to_owned(),
        text,
        base,
        defaults_spans: Vec::new(),
        problems: Vec::new(),
    };
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let at = e.span().map(|s| s.start);
            let message = format!("TOML syntax error: {}", e.message().trim());
            c.problem(at, None, None, message);
        }
        return Err(ConfigError::Invalid(c.problems));
    }
    let root = root.into_inner();
    if let Some(DeValue::Table(t)) = root.get("defaults").map(|v| v.get_ref()) {
        c.defaults_spans = t.iter().flat_map(|(k, v)| [k.span(), v.span()]).collect();
    }

    for key in root.keys() {
        if !TOP_KEYS.contains(&key.get_ref().as_ref()) {
            if ACCOUNT_KEYS.contains(&key.get_ref().as_ref()) {
                let name = key.get_ref().to_string();
                c.problem(
                    Some(key.span().start),
                    None,
                    Some(&name),
                    "account keys belong in an [[account]] section or in [defaults]",
                );
            } else {
                c.unknown_key(key, TOP_KEYS, None);
            }
        }
    }

    let log_level = match root.get("log-level") {
        None => None,
        Some(v) => {
            match string(&mut c, v, None, "log-level") {
                Some(l) if ["error", "warn", "info", "debug", "trace"].contains(&l) => {
                    Some(l.to_owned())
                }
                Some(l) => {
                    c.problem(
                    Some(v.span().start),
                    None,
                    Some("log-level"),
                    format!("{l:?} is not one of \"error\", \"warn\", \"info\", \"debug\", \"trace\""),
                );
                    None
                }
                None => None,
            }
        }
    };
    let max_parallel = match root.get("max-parallel") {
        None => super::DEFAULT_MAX_PARALLEL,
        Some(v) => match v
            .get_ref()
            .as_integer()
            .and_then(|i| i.as_str().parse::<usize>().ok())
        {
            Some(n) if (1..=64).contains(&n) => n,
            _ => {
                c.problem(
                    Some(v.span().start),
                    None,
                    Some("max-parallel"),
                    "must be a number from 1 to 64",
                );
                super::DEFAULT_MAX_PARALLEL
            }
        },
    };
    let notify_failure_after = match root.get("notify-failure-after") {
        None => super::DEFAULT_NOTIFY_FAILURE_AFTER,
        Some(v) => match string(&mut c, v, None, "notify-failure-after").map(parse_duration) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                c.problem(Some(v.span().start), None, Some("notify-failure-after"), e);
                super::DEFAULT_NOTIFY_FAILURE_AFTER
            }
            None => super::DEFAULT_NOTIFY_FAILURE_AFTER,
        },
    };

    let mut state_dir = None;
    if let Some(v) = root.get("state-dir")
        && let Some(s) = string(&mut c, v, None, "state-dir")
    {
        match expand_path(s, &c.base.clone()) {
            Ok(p) => state_dir = Some(p),
            Err(e) => c.problem(Some(v.span().start), None, Some("state-dir"), e),
        }
    }

    let defaults = match root.get("defaults") {
        None => None,
        Some(v) => match v.get_ref() {
            DeValue::Table(t) => {
                for key in t.keys() {
                    let k = key.get_ref().as_ref();
                    if k == "name" {
                        c.problem(
                            Some(key.span().start),
                            None,
                            Some("name"),
                            "[defaults] cannot set an account's name",
                        );
                    } else if !ACCOUNT_KEYS.contains(&k) {
                        c.unknown_key(key, ACCOUNT_KEYS, None);
                    }
                }
                Some(t)
            }
            _ => {
                c.problem(
                    Some(v.span().start),
                    None,
                    Some("defaults"),
                    "must be a table: [defaults]",
                );
                None
            }
        },
    };

    let mut accounts = Vec::new();
    match root.get("account") {
        None => c.problem(
            None,
            None,
            None,
            "no accounts: add an [[account]] section (see config.example.toml)",
        ),
        Some(v) => match v.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item.get_ref() {
                        DeValue::Table(t) => {
                            if let Some(a) = account(&mut c, i, item.span().start, t, defaults) {
                                accounts.push(a);
                            }
                        }
                        _ => c.problem(
                            Some(item.span().start),
                            None,
                            Some("account"),
                            "each account must be a table",
                        ),
                    }
                }
            }
            DeValue::Table(_) => c.problem(
                Some(v.span().start),
                None,
                Some("account"),
                "accounts are written [[account]], with double brackets",
            ),
            _ => c.problem(
                Some(v.span().start),
                None,
                Some("account"),
                "must be [[account]] sections",
            ),
        },
    }

    // Names must be unique: they key the state database and the locks.
    for (i, a) in accounts.iter().enumerate() {
        if accounts[..i].iter().any(|b| b.name == a.name) {
            c.problem(
                None,
                Some(&a.name),
                Some("name"),
                "two accounts have this name; names must be unique",
            );
        }
    }

    let state_dir = state_dir_override.or(state_dir).or_else(default_state_dir);
    let Some(state_dir) = state_dir else {
        c.problem(
            None,
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
    warn_about_likely_mistakes(&accounts);

    // Every place the file writes a password, used or overridden.
    let mut password_sections = Vec::new();
    if defaults.is_some_and(|d| d.contains_key("password")) {
        password_sections.push("[defaults]".to_owned());
    }
    if let Some(DeValue::Array(items)) = root.get("account").map(|v| v.get_ref()) {
        for (i, item) in items.iter().enumerate() {
            if let DeValue::Table(t) = item.get_ref()
                && t.contains_key("password")
            {
                let name = t
                    .get("name")
                    .and_then(|n| n.get_ref().as_str())
                    .map_or_else(|| format!("#{}", i + 1), str::to_owned);
                password_sections.push(format!("account {name}"));
            }
        }
    }
    Ok(Config {
        file: file.to_owned(),
        state_dir,
        accounts,
        log_level,
        max_parallel,
        notify_failure_after,
        password_sections,
    })
}

fn string<'v>(
    c: &mut Checker<'_>,
    v: &'v Spanned<DeValue<'_>>,
    account: Option<&str>,
    key: &str,
) -> Option<&'v str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            c.problem(
                Some(v.span().start),
                account,
                Some(key),
                format!("must be a string in quotes, not {}", other.type_str()),
            );
            None
        }
    }
}

fn account(
    c: &mut Checker<'_>,
    index: usize,
    at: usize,
    table: &DeTable<'_>,
    defaults: Option<&DeTable<'_>>,
) -> Option<Account> {
    let before = c.problems.len();
    // The name first, so that every other problem can name the account.
    let label = format!("#{}", index + 1);
    let name = match table.get("name") {
        None => {
            c.problem(
                Some(at),
                Some(&label),
                Some("name"),
                "missing: every account needs a name",
            );
            label.clone()
        }
        Some(v) => match string(c, v, Some(&label), "name") {
            Some(n) if valid_name(n) => n.to_owned(),
            Some(n) => {
                c.problem(
                    Some(v.span().start),
                    Some(n),
                    Some("name"),
                    "names may use letters, digits and . _ @ + - (starting with a letter or digit, at most 64 characters)",
                );
                n.to_owned()
            }
            None => label.clone(),
        },
    };
    let acct = Some(name.as_str());
    for key in table.keys() {
        if !ACCOUNT_KEYS.contains(&key.get_ref().as_ref()) {
            c.unknown_key(key, ACCOUNT_KEYS, acct);
        }
    }
    let layers = Layered {
        account: table,
        defaults,
    };
    let base = c.base.clone();

    let str_key = |c: &mut Checker<'_>, key: &str| -> Option<(&str, usize)> {
        let (v, _) = layers.get(key)?;
        string(c, v, acct, key).map(|s| (s, v.span().start))
    };
    let required = |c: &mut Checker<'_>, key: &str, what: &str| -> Option<(String, usize)> {
        match str_key(c, key) {
            Some((s, at)) if !s.trim().is_empty() => Some((s.to_owned(), at)),
            Some((_, at)) => {
                c.problem(Some(at), acct, Some(key), "must not be empty");
                None
            }
            None => {
                if layers.get(key).is_none() {
                    c.problem(Some(at), acct, Some(key), format!("missing: {what}"));
                }
                None
            }
        }
    };

    let host = required(
        c,
        "host",
        "the POP3 server's host name, e.g. host = \"pop.example.net\"",
    );
    if let Some((h, at)) = &host
        && h.chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '/')
    {
        c.problem(
            Some(*at),
            acct,
            Some("host"),
            "a host name cannot contain spaces or slashes",
        );
    } else if let Some((h, at)) = &host
        && h.contains(':')
        && h.parse::<std::net::Ipv6Addr>().is_err()
    {
        c.problem(
            Some(*at),
            acct,
            Some("host"),
            format!(
                "{h:?} is not a host name; the port goes in `port` (an IPv6 address is written without brackets)"
            ),
        );
    }

    let security = match str_key(c, "security") {
        None => Security::Tls,
        Some((s, at)) => match s {
            "tls" => Security::Tls,
            "starttls" => Security::StartTls,
            "dangerous-plaintext" => Security::DangerousPlaintext,
            _ => {
                c.problem(
                    Some(at),
                    acct,
                    Some("security"),
                    format!("{s:?} is not one of \"tls\", \"starttls\", \"dangerous-plaintext\""),
                );
                Security::Tls
            }
        },
    };

    let port = match layers.get("port") {
        None => security.default_port(),
        Some((v, _)) => match v.get_ref() {
            DeValue::Integer(i) => match i.as_str().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    c.problem(
                        Some(v.span().start),
                        acct,
                        Some("port"),
                        format!("must be a number from 1 to 65535, not {}", i.as_str()),
                    );
                    0
                }
            },
            other => {
                c.problem(
                    Some(v.span().start),
                    acct,
                    Some("port"),
                    format!("must be a number (no quotes), not {}", other.type_str()),
                );
                0
            }
        },
    };

    let ca_file = match str_key(c, "ca-file") {
        None => None,
        Some((s, at)) => match expand_path(s, &base) {
            Err(e) => {
                c.problem(Some(at), acct, Some("ca-file"), e);
                None
            }
            Ok(p) => {
                match std::fs::read(&p) {
                    Err(e) => c.problem(
                        Some(at),
                        acct,
                        Some("ca-file"),
                        format!("cannot read {}: {e}", p.display()),
                    ),
                    Ok(bytes) => {
                        if let Err(e) = (TlsOptions {
                            extra_roots: vec![bytes],
                            ..TlsOptions::default()
                        })
                        .validate()
                        {
                            c.problem(
                                Some(at),
                                acct,
                                Some("ca-file"),
                                format!("{}: {e}", p.display()),
                            );
                        }
                    }
                }
                Some(p)
            }
        },
    };

    let tls_fingerprint = match str_key(c, "tls-fingerprint") {
        None => None,
        Some((s, at)) => match crate::pop3::parse_fingerprint(s) {
            Ok(pin) => Some((pin, at)),
            Err(e) => {
                c.problem(Some(at), acct, Some("tls-fingerprint"), e);
                None
            }
        },
    };
    let (dangerous_accept_invalid_certs, accept_at) =
        bool_key(c, &layers, acct, "dangerous-accept-invalid-certs", false);
    if let (Some((_, at)), true) = (&tls_fingerprint, dangerous_accept_invalid_certs) {
        c.problem(
            Some((*at).max(accept_at.unwrap_or(0))),
            acct,
            Some("dangerous-accept-invalid-certs"),
            "set either `tls-fingerprint` (trust exactly that certificate) or \
             `dangerous-accept-invalid-certs` (trust any), not both",
        );
    }
    if security == Security::DangerousPlaintext {
        for (key, set, at) in [
            (
                "tls-fingerprint",
                tls_fingerprint.is_some(),
                tls_fingerprint.map(|(_, at)| at),
            ),
            (
                "dangerous-accept-invalid-certs",
                dangerous_accept_invalid_certs,
                accept_at,
            ),
        ] {
            if set {
                c.problem(
                    at,
                    acct,
                    Some(key),
                    "has no meaning with security = \"dangerous-plaintext\" (there is no TLS)",
                );
            }
        }
    }

    let username = required(
        c,
        "username",
        "the login name, e.g. username = \"me@example.net\"",
    );
    if let Some((u, at)) = &username
        && u.chars().any(|ch| matches!(ch, '\r' | '\n' | '\0'))
    {
        c.problem(
            Some(*at),
            acct,
            Some("username"),
            "must not contain line breaks or NUL",
        );
    }

    let password = {
        // Exactly one source; one set in the account replaces any set in [defaults].
        const SOURCES: [&str; 4] = [
            "password",
            "password-command",
            "password-keyring",
            "oauth2-token-command",
        ];
        let is_set = |key: &str, from_defaults: Option<bool>| {
            layers.get(key).is_some_and(|(v, d)| {
                from_defaults.is_none_or(|want| d == want)
                    && !(key == "password-keyring"
                        && matches!(v.get_ref(), DeValue::Boolean(false)))
            })
        };
        let own: Vec<&str> = SOURCES
            .into_iter()
            .filter(|k| is_set(k, Some(false)))
            .collect();
        let set: Vec<&str> = if own.is_empty() {
            SOURCES.into_iter().filter(|k| is_set(k, None)).collect()
        } else {
            own
        };
        match set.as_slice() {
            [] => {
                c.problem(
                    Some(at),
                    acct,
                    Some("password"),
                    "missing: set `password` or `password-command` (or `password-keyring` or \
                     `oauth2-token-command`)",
                );
                None
            }
            [_, second, ..] => {
                let at = layers.get(second).map(|(v, _)| v.span().start);
                c.problem(
                    at,
                    acct,
                    Some(second),
                    format!(
                        "set only one of {}, not both `{}` and `{second}`",
                        SOURCES.map(|k| format!("`{k}`")).join(", "),
                        set[0]
                    ),
                );
                None
            }
            ["password"] => {
                let (p, _) = layers.get("password").expect("set");
                match string(c, p, acct, "password") {
                    Some(s) if s.chars().any(|ch| matches!(ch, '\r' | '\n' | '\0')) => {
                        c.problem(
                            Some(p.span().start),
                            acct,
                            Some("password"),
                            "must not contain line breaks or NUL",
                        );
                        None
                    }
                    Some(s) => Some(PasswordSource::Inline(Secret::new(s))),
                    None => None,
                }
            }
            ["password-command"] => argv_key(
                c,
                &layers,
                acct,
                "password-command",
                "[\"pass\", \"show\", \"mail/home\"]",
                &base,
            )
            .map(PasswordSource::Command),
            ["oauth2-token-command"] => argv_key(
                c,
                &layers,
                acct,
                "oauth2-token-command",
                "[\"oama\", \"access\", \"me@gmail.com\"]",
                &base,
            )
            .map(PasswordSource::TokenCommand),
            [_keyring] => match bool_key(c, &layers, acct, "password-keyring", false) {
                (true, _) => Some(PasswordSource::Keyring {
                    account: name.to_owned(),
                }),
                _ => None,
            },
        }
    };

    let auth = match str_key(c, "auth") {
        None => None,
        Some((s, at)) => match s {
            "auto" => None,
            "user" => Some(AuthMethod::User),
            "apop" => Some(AuthMethod::Apop),
            "plain" => Some(AuthMethod::Plain),
            "xoauth2" => Some(AuthMethod::XOAuth2),
            "oauthbearer" => Some(AuthMethod::OAuthBearer),
            _ => {
                c.problem(
                    Some(at),
                    acct,
                    Some("auth"),
                    format!(
                        "{s:?} is not one of \"auto\", \"user\", \"apop\", \"plain\", \
                         \"xoauth2\", \"oauthbearer\""
                    ),
                );
                None
            }
        },
    };
    if let (Some(method), Some(source)) = (auth, &password)
        && method.uses_token() != source.is_token()
    {
        let at = layers.get("auth").map(|(v, _)| v.span().start);
        c.problem(
            at,
            acct,
            Some("auth"),
            if source.is_token() {
                format!(
                    "{method} logs in with a password, but the account has an \
                     oauth2-token-command: use \"xoauth2\", \"oauthbearer\" or \"auto\""
                )
            } else {
                format!(
                    "{method} logs in with an OAuth2 token: set oauth2-token-command instead \
                     of a password"
                )
            },
        );
    }
    if security == Security::DangerousPlaintext
        && matches!(auth, Some(AuthMethod::User | AuthMethod::Plain))
    {
        tracing::warn!(
            "account {name}: the password will cross the network unencrypted (security = \"dangerous-plaintext\")"
        );
    }

    let delivery = delivery(c, &layers, acct, at, &base);
    let retention = match str_key(c, "retention") {
        None => Retention::Keep,
        Some((s, at)) => {
            match s {
                "keep" => Retention::Keep,
                "delete" => Retention::Delete,
                other => {
                    match parse_duration(other) {
                        Ok(d) => Retention::After(d),
                        Err(e) => {
                            c.problem(Some(at), acct, Some("retention"), format!("must be \"keep\", \"delete\" or a duration such as \"14d\": {e}"));
                            Retention::Keep
                        }
                    }
                }
            }
        }
    };

    let duration_key =
        |c: &mut Checker<'_>, key: &str, default: Duration, min: Duration| -> Duration {
            match str_key(c, key) {
                None => default,
                Some((s, at)) => match parse_duration(s) {
                    Ok(d) if d >= min => d,
                    Ok(_) => {
                        c.problem(
                            Some(at),
                            acct,
                            Some(key),
                            format!("must be at least {}", super::format_duration(min)),
                        );
                        default
                    }
                    Err(e) => {
                        c.problem(Some(at), acct, Some(key), e);
                        default
                    }
                },
            }
        };
    let timeout = duration_key(c, "timeout", DEFAULT_TIMEOUT, Duration::from_millis(100));
    let forget_after = duration_key(c, "forget-after", DEFAULT_FORGET_AFTER, Duration::ZERO);
    let interval = duration_key(c, "interval", DEFAULT_INTERVAL, Duration::from_secs(10));
    let size_key = |c: &mut Checker<'_>, key: &str| -> Option<u64> {
        let (s, at) = str_key(c, key)?;
        match super::parse_size(s) {
            Ok(n) => Some(n),
            Err(e) => {
                c.problem(Some(at), acct, Some(key), e);
                None
            }
        }
    };
    let max_size = size_key(c, "max-size");
    let headers_only_over = size_key(c, "headers-only-over");
    let oversize = match str_key(c, "oversize") {
        None => Oversize::Skip,
        Some(("skip", _)) => Oversize::Skip,
        Some(("delete", _)) => Oversize::Delete,
        Some((s, at)) => {
            c.problem(
                Some(at),
                acct,
                Some("oversize"),
                format!("{s:?} is not one of \"skip\", \"delete\""),
            );
            Oversize::Skip
        }
    };
    if oversize == Oversize::Delete && max_size.is_none() {
        c.problem(
            layers.get("oversize").map(|(v, _)| v.span().start),
            acct,
            Some("oversize"),
            "\"delete\" needs `max-size` to say what is too big",
        );
    }
    let hook_timeout = duration_key(
        c,
        "hook-timeout",
        DEFAULT_HOOK_TIMEOUT,
        Duration::from_secs(1),
    );
    let (notify, _) = bool_key(c, &layers, acct, "notify", true);
    let open_command = argv_key(
        c,
        &layers,
        acct,
        "open-command",
        "[\"thunderbird\"] or [\"foot\", \"neomutt\"]",
        &base,
    );
    let on_new_mail = argv_key(
        c,
        &layers,
        acct,
        "on-new-mail",
        "[\"notmuch\", \"new\"]",
        &base,
    );
    let quiet_hours = match str_key(c, "quiet-hours") {
        None => None,
        Some((s, at)) => match QuietHours::parse(s) {
            Ok(q) => Some(q),
            Err(e) => {
                c.problem(Some(at), acct, Some("quiet-hours"), e);
                None
            }
        },
    };

    if c.problems.len() > before {
        return None;
    }
    Some(Account {
        name,
        host: host?.0,
        port,
        security,
        ca_file,
        tls_fingerprint: tls_fingerprint.map(|(pin, _)| pin),
        dangerous_accept_invalid_certs,
        username: username?.0,
        password: password?,
        auth,
        delivery: delivery?,
        max_size,
        oversize,
        headers_only_over,
        retention,
        timeout,
        forget_after,
        interval,
        notify,
        open_command,
        quiet_hours,
        on_new_mail,
        hook_timeout,
    })
}

/// Settings that are valid but probably not what the user meant.
fn warn_about_likely_mistakes(accounts: &[Account]) {
    for a in accounts {
        match (a.security, a.port) {
            (Security::Tls, 110) => tracing::warn!(
                "account {}: port 110 is usually plain POP3, but security = \"tls\" expects TLS from the first byte; for STLS on port 110 write security = \"starttls\"",
                a.name
            ),
            (Security::StartTls | Security::DangerousPlaintext, 995) => tracing::warn!(
                "account {}: port 995 is usually POP3 over TLS from the first byte; for it write security = \"tls\"",
                a.name
            ),
            _ => {}
        }
    }
    for (i, a) in accounts.iter().enumerate() {
        for b in &accounts[..i] {
            if a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port && a.username == b.username
            {
                tracing::warn!(
                    "accounts {} and {} fetch the same mailbox ({} at {}); every message will be downloaded twice",
                    b.name,
                    a.name,
                    a.username,
                    a.host
                );
            }
        }
    }
}

/// Where the account's mail goes: exactly one of `maildir`, `mbox` and `mda`.
fn delivery(
    c: &mut Checker<'_>,
    layers: &Layered<'_, '_>,
    acct: Option<&str>,
    at: usize,
    base: &Path,
) -> Option<Delivery> {
    let given: Vec<&str> = ["maildir", "mbox", "mda"]
        .into_iter()
        .filter(|k| layers.get(k).is_some())
        .collect();
    let path_of = |c: &mut Checker<'_>, key: &str| -> Option<std::path::PathBuf> {
        let (v, _) = layers.get(key)?;
        let s = string(c, v, acct, key)?;
        if s.trim().is_empty() {
            c.problem(Some(v.span().start), acct, Some(key), "must not be empty");
            return None;
        }
        match expand_path(s, base) {
            Ok(p) => Some(p),
            Err(e) => {
                c.problem(Some(v.span().start), acct, Some(key), e);
                None
            }
        }
    };
    let timeout = |c: &mut Checker<'_>, key: &str, default: Duration| -> Duration {
        let Some((v, _)) = layers.get(key) else {
            return default;
        };
        match string(c, v, acct, key).map(parse_duration) {
            Some(Ok(d)) if d >= Duration::from_secs(1) => d,
            Some(Ok(_)) => {
                c.problem(Some(v.span().start), acct, Some(key), "must be at least 1s");
                default
            }
            Some(Err(e)) => {
                c.problem(Some(v.span().start), acct, Some(key), e);
                default
            }
            None => default,
        }
    };
    match given.as_slice() {
        [] => {
            c.problem(
                Some(at),
                acct,
                Some("maildir"),
                "missing: say where mail goes, with maildir = \"~/Mail/inbox\", mbox = \"~/Mail/inbox.mbox\" or mda = [\"procmail\"]",
            );
            None
        }
        ["maildir"] => path_of(c, "maildir").map(|path| Delivery::new(maildir::Settings { path })),
        ["mbox"] => {
            let path = path_of(c, "mbox")?;
            let (dotlock, kernel) = match layers.get("mbox-locking") {
                None => (true, KernelLock::Fcntl),
                Some((v, _)) => match string(c, v, acct, "mbox-locking")? {
                    "dotlock+fcntl" => (true, KernelLock::Fcntl),
                    "dotlock+flock" => (true, KernelLock::Flock),
                    "fcntl" => (false, KernelLock::Fcntl),
                    "flock" => (false, KernelLock::Flock),
                    "dotlock" => (true, KernelLock::None),
                    other => {
                        c.problem(
                            Some(v.span().start),
                            acct,
                            Some("mbox-locking"),
                            format!(
                                "{other:?} is not one of \"dotlock+fcntl\", \"dotlock+flock\", \"fcntl\", \"flock\", \"dotlock\""
                            ),
                        );
                        return None;
                    }
                },
            };
            let timeout = timeout(c, "mbox-lock-timeout", Duration::from_secs(120));
            Some(Delivery::new(mbox::Settings {
                path,
                locking: MboxLocking {
                    dotlock,
                    kernel,
                    timeout,
                },
            }))
        }
        ["mda"] => {
            let argv = argv_key(
                c,
                layers,
                acct,
                "mda",
                "[\"procmail\"] or [\"/usr/lib/dovecot/deliver\"]",
                base,
            )?;
            let (from_line, _) = bool_key(c, layers, acct, "mda-from-line", false);
            let timeout = timeout(c, "mda-timeout", Duration::from_secs(300));
            Some(Delivery::new(mda::Settings {
                argv,
                from_line,
                timeout,
            }))
        }
        many => {
            c.problem(
                Some(at),
                acct,
                Some(many[1]),
                format!(
                    "set only one of {} (mail goes to one place)",
                    many.join(", ")
                ),
            );
            None
        }
    }
}

/// A key holding a program and its arguments, never a shell string. A program named by a
/// relative path is found from the config file's directory; a bare name is looked up in PATH.
/// A true-or-false key: its value (or `default`, also when it is not a boolean, which is
/// reported) and where it stands, if it is set.
fn bool_key(
    c: &mut Checker<'_>,
    layers: &Layered<'_, '_>,
    account: Option<&str>,
    key: &str,
    default: bool,
) -> (bool, Option<usize>) {
    let Some((v, _)) = layers.get(key) else {
        return (default, None);
    };
    match v.get_ref() {
        DeValue::Boolean(b) => (*b, Some(v.span().start)),
        other => {
            c.problem(
                Some(v.span().start),
                account,
                Some(key),
                format!(
                    "must be true or false (no quotes), not {}",
                    other.type_str()
                ),
            );
            (default, Some(v.span().start))
        }
    }
}

fn argv_key(
    c: &mut Checker<'_>,
    layers: &Layered<'_, '_>,
    account: Option<&str>,
    key: &str,
    example: &str,
    base: &Path,
) -> Option<Vec<String>> {
    let (v, _) = layers.get(key)?;
    let DeValue::Array(items) = v.get_ref() else {
        c.problem(
            Some(v.span().start),
            account,
            Some(key),
            format!(
                "must be a list of program and arguments, e.g. {example} (it is not run by a shell)"
            ),
        );
        return None;
    };
    let mut argv = Vec::new();
    for item in items.iter() {
        argv.push(string(c, item, account, key)?.to_owned());
    }
    if argv.first().is_none_or(|p| p.is_empty()) {
        c.problem(
            Some(v.span().start),
            account,
            Some(key),
            format!("must name a program, e.g. {example}"),
        );
        return None;
    }
    if argv[0].contains('/') && !Path::new(&argv[0]).is_absolute() {
        argv[0] = base.join(&argv[0]).to_string_lossy().into_owned();
    }
    Some(argv)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c))
}

/// The known key closest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
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
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(
            text,
            Path::new("/home/u/.config/popsync/config.toml"),
            Some("/tmp/state".into()),
        )
    }

    fn problems(text: &str) -> Vec<String> {
        match parse_str(text) {
            Err(ConfigError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    const GOOD: &str = r#"
[defaults]
retention = "14d"
timeout = "30s"

[[account]]
name = "home"
host = "pop.example.net"
username = "me"
password = "secret"
maildir = "~/Mail/home"

[[account]]
name = "work"
host = "mail.example.com"
security = "starttls"
username = "me@example.com"
password-command = ["pass", "show", "work"]
maildir = "Mail/work"
retention = "keep"
auth = "plain"
"#;

    #[test]
    fn a_good_config_gets_defaults_applied() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));
        let [home, work] = &c.accounts[..] else {
            panic!()
        };
        assert_eq!(home.port, 995);
        assert_eq!(home.security, Security::Tls);
        assert_eq!(
            home.retention,
            Retention::After(Duration::from_secs(14 * 86_400))
        );
        assert_eq!(home.timeout, Duration::from_secs(30));
        let md = &home.delivery.settings::<maildir::Settings>().unwrap().path;
        assert!(md.is_absolute() && md.ends_with("Mail/home"));
        assert_eq!(work.port, 110);
        assert_eq!(work.retention, Retention::Keep);
        assert_eq!(work.auth, Some(AuthMethod::Plain));
        assert_eq!(
            work.delivery.settings::<maildir::Settings>(),
            Some(&maildir::Settings {
                path: PathBuf::from("/home/u/.config/popsync/Mail/work")
            })
        );
        assert!(
            matches!(&work.password, PasswordSource::Command(argv) if argv == &["pass", "show", "work"])
        );
    }

    #[test]
    fn every_problem_is_reported_with_file_line_account_and_key() {
        let p = problems(
            r#"
[[account]]
name = "home"
host = "pop.example.net"
port = 99999
security = "ssl"
username = "me"
pasword = "x"
maildir = "~/Mail"
retention = "sometimes"

[[account]]
host = "b"
"#,
        );
        let all = p.join("\n");
        assert!(all.contains(r#"config.toml:5:8: account "home", key `port`: must be a number from 1 to 65535, not 99999"#), "{all}");
        assert!(
            all.contains(
                r#"config.toml:6:12: account "home", key `security`: "ssl" is not one of"#
            ),
            "{all}"
        );
        assert!(all.contains(r#"config.toml:8:1: account "home", key `pasword`: unknown key (did you mean `password`?)"#), "{all}");
        assert!(
            all.contains(r#"account "home", key `password`: missing"#),
            "{all}"
        );
        assert!(
            all.contains(
                r#"account "home", key `retention`: must be "keep", "delete" or a duration"#
            ),
            "{all}"
        );
        assert!(
            all.contains(r##"account "#2", key `name`: missing"##),
            "{all}"
        );
        assert!(
            all.contains(r##"account "#2", key `username`: missing"##),
            "{all}"
        );
        assert!(
            all.contains(r##"account "#2", key `maildir`: missing"##),
            "{all}"
        );
        assert_eq!(p.len(), 9, "{all}");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let p = problems("[[account]]\nname = \"x\nhost = 1\n");
        assert!(
            p[0].starts_with("/home/u/.config/popsync/config.toml:2:"),
            "{p:?}"
        );
        assert!(p[0].contains("TOML syntax error"), "{p:?}");
    }

    #[test]
    fn a_bad_default_is_reported_once_as_defaults() {
        let base = "host='h'\nusername='u'\nmaildir='/m'\npassword='p'\n";
        let p = problems(&format!(
            "[defaults]\ntimeout = 'soon'\n[[account]]\nname='a'\n{base}[[account]]\nname='b'\n{base}"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains(":2:11: [defaults], key `timeout`: "), "{p:?}");
    }

    #[test]
    fn a_port_in_the_host_and_line_breaks_in_credentials_are_refused() {
        let p = problems(
            "[[account]]\nname='a'\nhost='pop.example.net:995'\nusername=\"u\\r\\nDELE 1\"\nmaildir='/m'\npassword=\"p\\n\"\n",
        );
        let all = p.join("\n");
        assert!(all.contains("the port goes in `port`"), "{all}");
        assert!(
            all.contains("key `username`: must not contain line breaks"),
            "{all}"
        );
        assert!(
            all.contains("key `password`: must not contain line breaks"),
            "{all}"
        );
        let c = parse_str(
            "[[account]]\nname='a'\nhost='::1'\nusername='u'\nmaildir='/m'\npassword='p'\n",
        )
        .unwrap();
        assert_eq!(c.accounts[0].host, "::1", "an IPv6 address is a host");
    }

    #[test]
    fn a_relative_password_program_is_found_from_the_config_directory() {
        let c = parse_str("[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword-command=['bin/pw', 'x']\n").unwrap();
        let PasswordSource::Command(argv) = &c.accounts[0].password else {
            panic!()
        };
        assert_eq!(argv, &["/home/u/.config/popsync/bin/pw", "x"]);
        let c = parse_str("[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword-command=['pass', 'x']\n").unwrap();
        let PasswordSource::Command(argv) = &c.accounts[0].password else {
            panic!()
        };
        assert_eq!(argv[0], "pass", "a bare name is looked up in PATH");
    }

    #[test]
    fn single_bracket_account_is_explained() {
        let p = problems("[account]\nname = \"x\"\n");
        assert!(p[0].contains("double brackets"), "{p:?}");
    }

    #[test]
    fn both_password_sources_are_refused() {
        let p = problems(
            "[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword='p'\npassword-command=['x']\n",
        );
        assert!(p[0].contains("not both"), "{p:?}");
    }

    #[test]
    fn password_command_must_be_a_list() {
        let p = problems(
            "[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword-command='pass show x'\n",
        );
        assert!(p[0].contains("not run by a shell"), "{p:?}");
    }

    #[test]
    fn duplicate_and_bad_names() {
        let base = "host='h'\nusername='u'\nmaildir='/m'\npassword='p'\n";
        let p = problems(&format!(
            "[[account]]\nname='a'\n{base}[[account]]\nname='a'\n{base}[[account]]\nname='../x'\n{base}"
        ));
        let all = p.join("\n");
        assert!(all.contains("names must be unique"), "{all}");
        assert!(
            all.contains(r#"account "../x", key `name`: names may use"#),
            "{all}"
        );
    }

    #[test]
    fn keys_at_top_level_are_pointed_to_the_right_place() {
        let p = problems(
            "host = 'x'\n[[account]]\nname='a'\nhost='h'\nusername='u'\nmaildir='/m'\npassword='p'\n",
        );
        assert!(p[0].contains("belong in an [[account]] section"), "{p:?}");
    }

    #[test]
    fn no_accounts() {
        let p = problems("state-dir = '/x'\n");
        assert!(p[0].contains("no accounts"), "{p:?}");
    }

    #[test]
    fn closest_key_suggestions() {
        assert_eq!(closest("pasword", ACCOUNT_KEYS), Some("password"));
        assert_eq!(closest("mail-dir", ACCOUNT_KEYS), Some("maildir"));
        assert_eq!(closest("zzzzzz", ACCOUNT_KEYS), None);
    }
}
