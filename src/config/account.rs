//! One `[[account]]`: its name, then each group of keys read by its own reader, put together
//! into an [`Account`].

use toml::de::DeTable;

use super::{Account, credentials, limits, notifications, server, timing};
use crate::delivery::{Delivery, KINDS};
use crate::keys::{Checker, KeyDoc, Layered, keys};
use crate::pop3::Security;

keys! {
    /// The account's name.
    pub struct AccountKeys {
        /// A short name of your choosing: letters, digits and . _ @ + -. It keys popsync's
        /// state, so renaming an account makes its mail new again.
        name: "name" { default: "", example: "\"home\"" },
    }
}

/// Every key an account (or `[defaults]`) may set, in the order they are listed to the
/// user: the name, the server and TLS, the login, where mail goes (each kind of target's
/// own keys), retention and sizes, timing, notifications and hooks.
pub fn account_keys() -> Vec<&'static KeyDoc> {
    let mut keys: Vec<&'static KeyDoc> = AccountKeys::DOCS.iter().collect();
    keys.extend(server::ServerKeys::DOCS);
    keys.extend(credentials::CredentialKeys::DOCS);
    for kind in KINDS {
        keys.extend(kind.keys);
    }
    keys.extend(limits::LimitKeys::DOCS);
    keys.extend(timing::TimingKeys::DOCS);
    keys.extend(notifications::NotificationKeys::DOCS);
    keys
}

/// Reads the `index`-th account, which starts at `at`. `None` when it has problems (all of
/// them reported).
pub fn read(
    c: &mut Checker<'_>,
    index: usize,
    at: usize,
    table: &DeTable<'_>,
    defaults: Option<&DeTable<'_>>,
) -> Option<Account> {
    let before = c.problems.len();
    // The name first, so that every other problem can name the account. It is the
    // account's own: [defaults] cannot give one.
    let label = format!("#{}", index + 1);
    c.account = Some(label.clone());
    c.account_at = at;
    let own = AccountKeys::take(&Layered::new(table, None));
    let name = match own.name.value() {
        None => {
            c.problem(
                Some(at),
                Some("name"),
                "missing: every account needs a name",
            );
            label
        }
        Some(_) => match own.name.string(c) {
            Some((n, _)) if valid_name(n) => n.to_owned(),
            Some((n, name_at)) => {
                c.problem_of(
                    Some(name_at),
                    Some(n),
                    Some("name"),
                    "names may use letters, digits and . _ @ + - (starting with a letter or digit, at most 64 characters)",
                );
                n.to_owned()
            }
            None => label,
        },
    };
    c.account = Some(name.clone());
    let known: Vec<&str> = account_keys().iter().map(|k| k.name).collect();
    for key in table.keys() {
        if !known.contains(&key.get_ref().as_ref()) {
            c.unknown_key(key, &known);
        }
    }

    let layers = Layered::new(table, defaults);
    let preset = credentials::preset(&layers).and_then(crate::oauth2::Preset::pop3_server);
    let server = server::read(
        c,
        &layers,
        preset.map(|(host, _)| host),
        server::Protocol::Pop3,
    );
    let credentials = credentials::read(c, &layers, &name, server.security, server::Protocol::Pop3);
    let delivery = delivery(c, &layers);
    let limits = limits::read(c, &layers);
    let timing = timing::read(c, &layers);
    let notifications = notifications::read(c, &layers);
    c.account = None;
    if c.problems.len() > before {
        return None;
    }
    Some(Account {
        name,
        server,
        login: credentials?,
        delivery: delivery?,
        limits,
        timing,
        notifications,
    })
}

/// Where the account's mail goes: exactly one kind of delivery target, chosen by its key.
fn delivery(c: &mut Checker<'_>, layers: &Layered<'_>) -> Option<Delivery> {
    let given: Vec<_> = KINDS
        .iter()
        .filter(|kind| layers.take(&kind.keys[..1])[0].is_set())
        .collect();
    let at = Some(c.account_at);
    match given.as_slice() {
        [] => {
            let ways: Vec<&str> = KINDS.iter().map(|k| k.example).collect();
            let (last, rest) = ways.split_last().expect("at least one kind");
            c.problem(
                at,
                Some(KINDS[0].name),
                format!(
                    "missing: say where mail goes, with {} or {last}",
                    rest.join(", ")
                ),
            );
            None
        }
        [kind] => (kind.configure)(c, layers),
        many => {
            let names: Vec<&str> = many.iter().map(|k| k.keys[0].name).collect();
            c.problem(
                at,
                Some(names[1]),
                format!(
                    "set only one of {} (mail goes to one place)",
                    names.join(", ")
                ),
            );
            None
        }
    }
}

/// A name that is safe as a file name and in messages.
pub(crate) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c))
}

/// Settings that are valid but probably not what the user meant.
pub fn warn_about_likely_mistakes(accounts: &[Account]) {
    for a in accounts {
        match (a.server.security, a.server.port) {
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
            if a.server.host.eq_ignore_ascii_case(&b.server.host)
                && a.server.port == b.server.port
                && a.login.username == b.login.username
            {
                tracing::warn!(
                    "accounts {} and {} fetch the same mailbox ({} at {}); every message will be downloaded twice",
                    b.name,
                    a.name,
                    a.login.username,
                    a.server.host
                );
            }
        }
    }
}
