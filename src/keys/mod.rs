//! Declaring configuration keys, and reading them with every problem collected; the values
//! keys hold that are more than strings ([`duration`], [`values`]).
//!
//! This is the bottom of the configuration: it knows no key by name. The keys themselves
//! are declared where they are read — the account's groups in `config`, each kind of
//! delivery target's in its own module in `delivery`.
//!
//! A key is declared once, in the group that reads it, with [`keys!`]: its name, its default
//! and the lines that document it (for `popsync generate`, the example file's test and the
//! "did you mean" of an unknown key). The declaration makes a struct with one [`Key`] per
//! key, taken from the account (or `[defaults]`) in one go; the group's reader turns each
//! into a value with the readers here, which report problems in popsync's words. So:
//!
//! - a key that is not declared cannot be read: readers get the struct, never the table,
//!   and a key not declared in some group is an unknown key in every file;
//! - a key declared but never read does not compile: its field is never used, and the
//!   declared struct denies dead code.
//!
//! Nothing is reported twice: a value in `[defaults]` that is wrong is reported once, as
//! `[defaults]`, not once per account that inherits it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

pub mod duration;
pub mod values;

use duration::{format_duration, parse_duration};
use values::expand_path;

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

/// A key as declared: its name, default and documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    pub name: &'static str,
    /// What it is when not set (`""` when it must be set, or there is no default).
    pub default: &'static str,
    /// A value to show, as it is written in the file.
    pub example: &'static str,
    /// What it does, one paragraph.
    pub doc: &'static str,
}

/// Declares a group of keys: a struct with one [`Key`] per key, and its [`KeyDoc`]s.
///
/// ```text
/// keys! {
///     /// What the group is for.
///     pub struct TimingKeys {
///         /// How long to wait for the server.
///         timeout: "timeout" { default: "1m", example: "\"30s\"" },
///     }
/// }
/// ```
macro_rules! keys {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident: $key:literal { default: $default:literal, example: $example:literal },
            )*
        }
    ) => {
        $(#[$attr])*
        #[deny(dead_code)]
        $vis struct $name<'t> {
            $( $field: $crate::keys::Key<'t>, )*
        }

        impl<'t> $name<'t> {
            /// Every key of the group, in the order they are listed to the user.
            $vis const DOCS: &'static [$crate::keys::KeyDoc] = &[
                $( $crate::keys::KeyDoc {
                    name: $key,
                    default: $default,
                    example: $example,
                    doc: concat!($($doc),+),
                }, )*
            ];

            /// The group's keys in the account (or `[defaults]`).
            $vis fn take(layers: &$crate::keys::Layered<'t>) -> Self {
                let mut keys = layers.take(Self::DOCS).into_iter();
                Self { $( $field: keys.next().expect("one key per declaration"), )* }
            }
        }
    };
}
pub(crate) use keys;

/// Collects the problems of one file.
#[derive(Debug)]
pub struct Checker<'a> {
    pub file: PathBuf,
    text: &'a str,
    /// The file's directory: relative paths in the file are relative to it.
    pub base: PathBuf,
    /// Where `[defaults]` is: problems there are reported once, as `[defaults]`, not once
    /// per account that inherits the value.
    pub defaults_spans: Vec<std::ops::Range<usize>>,
    /// The account being read (its name, or `#N` until the name is known), and where it
    /// starts.
    pub account: Option<String>,
    pub account_at: usize,
    pub problems: Vec<Problem>,
    /// Sections of the file that accounts refer to by name (`[[imap]]`), read before the
    /// accounts: their table, name and what was read of them.
    pub named: Vec<(
        &'static str,
        String,
        std::sync::Arc<dyn std::any::Any + Send + Sync>,
    )>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &Path, text: &'a str, base: PathBuf) -> Self {
        Self {
            file: file.to_owned(),
            text,
            base,
            defaults_spans: Vec::new(),
            account: None,
            account_at: 0,
            problems: Vec::new(),
            named: Vec::new(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// A problem with `key` of the current account (or of the file, outside accounts).
    pub fn problem(&mut self, at: Option<usize>, key: Option<&str>, message: impl Into<String>) {
        let account = self.account.clone();
        self.problem_of(at, account.as_deref(), key, message);
    }

    /// A problem of `account`.
    pub fn problem_of(
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

    /// A key no group declares, with the closest declared one if it is a likely typo.
    pub fn unknown_key(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, known: &[&str]) {
        let name = key.get_ref().as_ref();
        let hint = closest(name, known)
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_else(|| format!(" (known keys: {})", known.join(", ")));
        self.problem(
            Some(key.span().start),
            Some(name),
            format!("unknown key{hint}"),
        );
    }
}

/// Where keys are looked up: an account's table, then `[defaults]` (or the file's top
/// level alone).
#[derive(Debug, Clone, Copy)]
pub struct Layered<'t> {
    table: &'t DeTable<'t>,
    defaults: Option<&'t DeTable<'t>>,
}

impl<'t> Layered<'t> {
    pub fn new(table: &'t DeTable<'t>, defaults: Option<&'t DeTable<'t>>) -> Self {
        Self { table, defaults }
    }

    /// The keys `docs` declares, in order (only [`keys!`] asks).
    pub fn take(&self, docs: &'static [KeyDoc]) -> Vec<Key<'t>> {
        docs.iter()
            .map(|doc| {
                let (value, from_defaults) = match self.table.get(doc.name) {
                    Some(v) => (Some(v), false),
                    None => (self.defaults.and_then(|d| d.get(doc.name)), true),
                };
                Key {
                    doc,
                    value,
                    from_defaults: value.is_some() && from_defaults,
                }
            })
            .collect()
    }
}

/// One declared key as a file sets it (or not), ready to be read as what it should be.
#[derive(Debug, Clone, Copy)]
pub struct Key<'t> {
    doc: &'static KeyDoc,
    value: Option<&'t Spanned<DeValue<'t>>>,
    from_defaults: bool,
}

impl<'t> Key<'t> {
    pub fn name(&self) -> &'static str {
        self.doc.name
    }

    pub fn is_set(&self) -> bool {
        self.value.is_some()
    }

    /// Set in `[defaults]`, not in the account itself.
    pub fn from_defaults(&self) -> bool {
        self.from_defaults
    }

    /// Where its value starts in the file.
    pub fn at(&self) -> Option<usize> {
        self.value.map(|v| v.span().start)
    }

    /// The value as written, for keys with readings of their own.
    pub fn value(&self) -> Option<&'t DeValue<'t>> {
        self.value.map(Spanned::get_ref)
    }

    /// A string, and where it stands; anything else is reported.
    pub fn string(&self, c: &mut Checker<'_>) -> Option<(&'t str, usize)> {
        let v = self.value?;
        string_value(c, v, self.doc.name).map(|s| (s, v.span().start))
    }

    /// A string that must be set and not blank; `missing` says what it is for.
    pub fn required(&self, c: &mut Checker<'_>, missing: &str) -> Option<(String, usize)> {
        match self.string(c) {
            Some((s, at)) if !s.trim().is_empty() => Some((s.to_owned(), at)),
            Some((_, at)) => {
                c.problem(Some(at), Some(self.doc.name), "must not be empty");
                None
            }
            None => {
                if !self.is_set() {
                    let at = c.account_at;
                    c.problem(Some(at), Some(self.doc.name), format!("missing: {missing}"));
                }
                None
            }
        }
    }

    /// True or false: its value (or `default`, also when it is not a boolean, which is
    /// reported), and where it stands, if it is set.
    pub fn boolean(&self, c: &mut Checker<'_>, default: bool) -> (bool, Option<usize>) {
        let Some(v) = self.value else {
            return (default, None);
        };
        match v.get_ref() {
            DeValue::Boolean(b) => (*b, Some(v.span().start)),
            other => {
                c.problem(
                    Some(v.span().start),
                    Some(self.doc.name),
                    format!(
                        "must be true or false (no quotes), not {}",
                        other.type_str()
                    ),
                );
                (default, Some(v.span().start))
            }
        }
    }

    /// A duration of at least `min` (or `default`, when it is not set or wrong).
    pub fn duration(&self, c: &mut Checker<'_>, default: Duration, min: Duration) -> Duration {
        let Some((s, at)) = self.string(c) else {
            return default;
        };
        match parse_duration(s) {
            Ok(d) if d >= min => d,
            Ok(_) => {
                c.problem(
                    Some(at),
                    Some(self.doc.name),
                    format!("must be at least {}", format_duration(min)),
                );
                default
            }
            Err(e) => {
                c.problem(Some(at), Some(self.doc.name), e);
                default
            }
        }
    }

    /// A size, `"20MB"`.
    pub fn size(&self, c: &mut Checker<'_>) -> Option<u64> {
        let (s, at) = self.string(c)?;
        match values::parse_size(s) {
            Ok(n) => Some(n),
            Err(e) => {
                c.problem(Some(at), Some(self.doc.name), e);
                None
            }
        }
    }

    /// A path: `~` expanded, relative to the file's directory.
    pub fn path(&self, c: &mut Checker<'_>) -> Option<(PathBuf, usize)> {
        let (s, at) = self.string(c)?;
        match expand_path(s, &c.base.clone()) {
            Ok(p) => Some((p, at)),
            Err(e) => {
                c.problem(Some(at), Some(self.doc.name), e);
                None
            }
        }
    }

    /// A path that must not be blank (a mailbox).
    pub fn nonempty_path(&self, c: &mut Checker<'_>) -> Option<PathBuf> {
        let v = self.value?;
        let s = string_value(c, v, self.doc.name)?;
        if s.trim().is_empty() {
            c.problem(
                Some(v.span().start),
                Some(self.doc.name),
                "must not be empty",
            );
            return None;
        }
        self.path(c).map(|(p, _)| p)
    }

    /// A program and its arguments, never a shell string. A program named by a relative
    /// path is found from the config file's directory; a bare name is looked up in `PATH`.
    pub fn argv(&self, c: &mut Checker<'_>) -> Option<Vec<String>> {
        let v = self.value?;
        let (key, example) = (self.doc.name, self.doc.example);
        let DeValue::Array(items) = v.get_ref() else {
            c.problem(
                Some(v.span().start),
                Some(key),
                format!(
                    "must be a list of program and arguments, e.g. {example} (it is not run by a shell)"
                ),
            );
            return None;
        };
        let mut argv = Vec::new();
        for item in items.iter() {
            argv.push(string_value(c, item, key)?.to_owned());
        }
        if argv.first().is_none_or(|p| p.is_empty()) {
            c.problem(
                Some(v.span().start),
                Some(key),
                format!("must name a program, e.g. {example}"),
            );
            return None;
        }
        if argv[0].contains('/') && !Path::new(&argv[0]).is_absolute() {
            argv[0] = c.base.join(&argv[0]).to_string_lossy().into_owned();
        }
        Some(argv)
    }

    /// One of `choices` (as written, and what it means); anything else is reported.
    pub fn one_of<T: Copy>(&self, c: &mut Checker<'_>, choices: &[(&str, T)]) -> Option<T> {
        let (s, at) = self.string(c)?;
        match choices.iter().find(|(name, _)| *name == s) {
            Some((_, value)) => Some(*value),
            None => {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                c.problem(
                    Some(at),
                    Some(self.doc.name),
                    format!("{s:?} is not one of {}", names.join(", ")),
                );
                None
            }
        }
    }
}

/// A string value; anything else is reported under `key`.
pub fn string_value<'v>(
    c: &mut Checker<'_>,
    v: &'v Spanned<DeValue<'_>>,
    key: &str,
) -> Option<&'v str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            c.problem(
                Some(v.span().start),
                Some(key),
                format!("must be a string in quotes, not {}", other.type_str()),
            );
            None
        }
    }
}

/// The known key closest to a misspelt one, if it is close enough to be a likely typo.
pub fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
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
