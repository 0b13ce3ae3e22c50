//! The keys that say who an account logs in as, where the secret comes from, and how.

use super::PasswordSource;
use crate::keys::{Checker, Key, Layered, keys};
use crate::pop3::{AuthMethod, Secret, Security};

keys! {
    /// The login.
    pub struct CredentialKeys {
        /// The login name.
        username: "username" { default: "", example: "\"me@example.net\"" },
        /// The password, written here (the file must then be readable by you alone).
        password: "password" { default: "", example: "\"hunter2\"" },
        /// A command whose first line of output is the password (program and arguments,
        /// no shell).
        password_command: "password-command" { default: "", example: "[\"pass\", \"show\", \"mail/home\"]" },
        /// The password is in the system keyring, stored with `popsync password set`.
        password_keyring: "password-keyring" { default: "false", example: "true" },
        /// A command that prints an OAuth2 access token, run before every session.
        oauth2_token_command: "oauth2-token-command" { default: "", example: "[\"oama\", \"access\", \"me@gmail.com\"]" },
        /// How to log in: "auto", "user", "apop", "plain", "xoauth2" or "oauthbearer".
        auth: "auth" { default: "\"auto\"", example: "\"plain\"" },
    }
}

/// Who logs in, with what secret, and how.
#[derive(Debug, Clone)]
pub struct Login {
    pub username: String,
    pub password: PasswordSource,
    /// The login method, `None` for automatic.
    pub auth: Option<AuthMethod>,
}

/// Reads the credential keys of the account `name`, whose connection is protected by
/// `security`.
pub fn read(
    c: &mut Checker<'_>,
    layers: &Layered<'_>,
    name: &str,
    security: Security,
) -> Option<Login> {
    let keys = CredentialKeys::take(layers);
    let username = keys
        .username
        .required(c, "the login name, e.g. username = \"me@example.net\"");
    if let Some((u, at)) = &username
        && u.chars().any(|ch| matches!(ch, '\r' | '\n' | '\0'))
    {
        c.problem(
            Some(*at),
            Some("username"),
            "must not contain line breaks or NUL",
        );
    }

    let password = password_source(c, &keys, name);

    let auth = keys
        .auth
        .one_of(
            c,
            &[
                ("auto", None),
                ("user", Some(AuthMethod::User)),
                ("apop", Some(AuthMethod::Apop)),
                ("plain", Some(AuthMethod::Plain)),
                ("xoauth2", Some(AuthMethod::XOAuth2)),
                ("oauthbearer", Some(AuthMethod::OAuthBearer)),
            ],
        )
        .flatten();
    if let (Some(method), Some(source)) = (auth, &password)
        && method.uses_token() != source.is_token()
    {
        c.problem(
            keys.auth.at(),
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
    Some(Login {
        username: username?.0,
        password: password?,
        auth,
    })
}

/// Exactly one source; one set in the account replaces any set in `[defaults]`.
fn password_source(
    c: &mut Checker<'_>,
    keys: &CredentialKeys<'_>,
    name: &str,
) -> Option<PasswordSource> {
    let sources: [&Key<'_>; 4] = [
        &keys.password,
        &keys.password_command,
        &keys.password_keyring,
        &keys.oauth2_token_command,
    ];
    let is_set = |key: &Key<'_>, from_defaults: Option<bool>| {
        key.is_set()
            && from_defaults.is_none_or(|want| key.from_defaults() == want)
            && !(key.name() == "password-keyring"
                && matches!(key.value(), Some(toml::de::DeValue::Boolean(false))))
    };
    let own: Vec<&Key<'_>> = sources
        .into_iter()
        .filter(|k| is_set(k, Some(false)))
        .collect();
    let set: Vec<&Key<'_>> = if own.is_empty() {
        sources.into_iter().filter(|k| is_set(k, None)).collect()
    } else {
        own
    };
    match set.as_slice() {
        [] => {
            let at = c.account_at;
            c.problem(
                Some(at),
                Some("password"),
                "missing: set `password` or `password-command` (or `password-keyring` or \
                 `oauth2-token-command`)",
            );
            None
        }
        [first, second, ..] => {
            let names = sources.map(|k| format!("`{}`", k.name())).join(", ");
            c.problem(
                second.at(),
                Some(second.name()),
                format!(
                    "set only one of {names}, not both `{}` and `{}`",
                    first.name(),
                    second.name()
                ),
            );
            None
        }
        [only] if only.name() == "password" => match keys.password.string(c) {
            Some((s, at)) if s.chars().any(|ch| matches!(ch, '\r' | '\n' | '\0')) => {
                c.problem(
                    Some(at),
                    Some("password"),
                    "must not contain line breaks or NUL",
                );
                None
            }
            Some((s, _)) => Some(PasswordSource::Inline(Secret::new(s))),
            None => None,
        },
        [only] if only.name() == "password-command" => {
            keys.password_command.argv(c).map(PasswordSource::Command)
        }
        [only] if only.name() == "oauth2-token-command" => keys
            .oauth2_token_command
            .argv(c)
            .map(PasswordSource::TokenCommand),
        [_keyring] => match keys.password_keyring.boolean(c, false) {
            (true, _) => Some(PasswordSource::Keyring {
                account: name.to_owned(),
            }),
            _ => None,
        },
    }
}
