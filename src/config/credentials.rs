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
        /// OAuth2 sign-in built in, with `popsync oauth2 login`: "google", "microsoft" or
        /// "custom" (with oauth2-issuer, or oauth2-token-endpoint and the others).
        oauth2_provider: "oauth2-provider" { default: "", example: "\"google\"" },
        /// The OAuth2 application (client) id you registered (see README).
        oauth2_client_id: "oauth2-client-id" { default: "", example: "\"1234.apps.googleusercontent.com\"" },
        /// The application's client secret, if it has one (Google's installed applications do).
        oauth2_client_secret: "oauth2-client-secret" { default: "", example: "\"GOCSPX-...\"" },
        /// Microsoft's directory: "common", "organizations", "consumers" or a tenant id.
        oauth2_tenant: "oauth2-tenant" { default: "\"common\"", example: "\"organizations\"" },
        /// A custom provider's issuer, whose endpoints are found by OpenID Connect discovery.
        oauth2_issuer: "oauth2-issuer" { default: "", example: "\"https://login.example.net\"" },
        /// A custom provider's authorization endpoint (browser sign-in).
        oauth2_authorization_endpoint: "oauth2-authorization-endpoint" { default: "", example: "\"https://login.example.net/authorize\"" },
        /// A custom provider's token endpoint.
        oauth2_token_endpoint: "oauth2-token-endpoint" { default: "", example: "\"https://login.example.net/token\"" },
        /// A custom provider's device authorization endpoint (`oauth2 login --device`).
        oauth2_device_endpoint: "oauth2-device-endpoint" { default: "", example: "\"https://login.example.net/device\"" },
        /// The scopes asked for, space-separated (the presets know theirs).
        oauth2_scopes: "oauth2-scopes" { default: "the provider's", example: "\"openid offline_access pop\"" },
        /// Where the refresh token is kept: "keyring" or "file" (in the state directory).
        oauth2_token_store: "oauth2-token-store" { default: "\"keyring\"", example: "\"file\"" },
        /// How to log in: "auto", "user", "apop", "plain", "xoauth2" or "oauthbearer".
        auth: "auth" { default: "\"auto\" (\"xoauth2\" with oauth2-provider \"google\" or \"microsoft\")", example: "\"plain\"" },
    }
}

/// The OAuth2 preset an account names in `oauth2-provider`, if it names one popsync knows
/// (what else may be wrong with the key is reported when the credentials are read).
pub fn preset(layers: &Layered<'_>) -> Option<crate::oauth2::Preset> {
    use crate::oauth2::Preset;
    match CredentialKeys::take(layers).oauth2_provider.value()? {
        toml::de::DeValue::String(s) => match s.as_ref() {
            "google" => Some(Preset::Google),
            "microsoft" => Some(Preset::Microsoft),
            _ => None,
        },
        _ => None,
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
    protocol: super::server::Protocol,
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

    let password = password_source(c, &keys, name, protocol);

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
        .flatten()
        .or_else(|| {
            // The preset's mechanism, for an account that signs in with the preset.
            let preset = match &password {
                Some(PasswordSource::OAuth2(s)) if !keys.auth.is_set() => s.preset,
                _ => return None,
            };
            match protocol {
                super::server::Protocol::Pop3 => preset.pop3_server(),
                super::server::Protocol::Imap => preset.imap_server(),
            }
            .map(|(_, method)| method)
        });
    if protocol == super::server::Protocol::Imap && auth == Some(AuthMethod::Apop) {
        c.problem(
            keys.auth.at(),
            Some("auth"),
            "APOP is a POP3 login: an IMAP login is \"user\" (LOGIN), \"plain\", \"xoauth2\", \"oauthbearer\" or \"auto\"",
        );
    }
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
        // (An [[imap]] section's login is read here under its credential name, imap=NAME.)
        let whose = name.strip_prefix("imap=").map_or_else(
            || format!("account {name}"),
            |n| format!("IMAP destination {n}"),
        );
        tracing::warn!(
            "{whose}: the password will cross the network unencrypted (security = \"dangerous-plaintext\")"
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
    protocol: super::server::Protocol,
) -> Option<PasswordSource> {
    let sources: [&Key<'_>; 5] = [
        &keys.password,
        &keys.password_command,
        &keys.password_keyring,
        &keys.oauth2_token_command,
        &keys.oauth2_provider,
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
                "missing: set `password` or `password-command` (or `password-keyring`, \
                 `oauth2-provider` or `oauth2-token-command`)",
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
        [only] if only.name() == "oauth2-provider" => {
            oauth2_settings(c, keys, name, protocol).map(|s| PasswordSource::OAuth2(Box::new(s)))
        }
        [_keyring] => match keys.password_keyring.boolean(c, false) {
            (true, _) => Some(PasswordSource::Keyring {
                account: name.to_owned(),
            }),
            _ => None,
        },
    }
}

/// The OAuth2 sign-in of an account with `oauth2-provider`. The token store's state
/// directory is filled in once the whole file is read.
fn oauth2_settings(
    c: &mut Checker<'_>,
    keys: &CredentialKeys<'_>,
    name: &str,
    protocol: super::server::Protocol,
) -> Option<crate::oauth2::Settings> {
    use crate::oauth2::{Endpoints, Preset, Settings, store::Store};
    let preset = keys.oauth2_provider.one_of(
        c,
        &[
            ("google", Preset::Google),
            ("microsoft", Preset::Microsoft),
            ("custom", Preset::Custom),
        ],
    )?;
    let client_id = keys.oauth2_client_id.required(
        c,
        "the OAuth2 application's client id, e.g. oauth2-client-id = \"1234.apps.googleusercontent.com\" (README: registering one)",
    );
    let client_secret = keys
        .oauth2_client_secret
        .string(c)
        .map(|(s, _)| Secret::new(s));
    let tenant = keys
        .oauth2_tenant
        .string(c)
        .map_or_else(|| "common".to_owned(), |(s, _)| s.to_owned());
    let url = |c: &mut Checker<'_>, key: &Key<'_>| -> Option<String> {
        let (text, at) = key.string(c)?;
        match crate::oauth2::http::Url::parse(text) {
            Ok(_) => Some(text.to_owned()),
            Err(e) => {
                c.problem(Some(at), Some(key.name()), e);
                None
            }
        }
    };
    let issuer = url(c, &keys.oauth2_issuer);
    let authorization = url(c, &keys.oauth2_authorization_endpoint);
    let token = url(c, &keys.oauth2_token_endpoint);
    let device = url(c, &keys.oauth2_device_endpoint);
    let scopes = keys.oauth2_scopes.string(c).map(|(s, _)| s.to_owned());
    let (endpoints, scopes) = match preset.defaults(&tenant) {
        Some((endpoints, preset_scopes)) => {
            for key in [
                &keys.oauth2_issuer,
                &keys.oauth2_authorization_endpoint,
                &keys.oauth2_token_endpoint,
                &keys.oauth2_device_endpoint,
            ] {
                if key.is_set() && !key.from_defaults() {
                    c.problem(
                        key.at(),
                        Some(key.name()),
                        "the provider's endpoints are known: set this only with oauth2-provider = \"custom\"",
                    );
                }
            }
            (
                endpoints,
                scopes.unwrap_or_else(|| {
                    // Microsoft grants POP and IMAP apart.
                    match (protocol, preset) {
                        (super::server::Protocol::Imap, Preset::Microsoft) => {
                            crate::oauth2::MICROSOFT_IMAP_SCOPES.to_owned()
                        }
                        _ => preset_scopes.to_owned(),
                    }
                }),
            )
        }
        None => {
            let endpoints = match (issuer, token) {
                (Some(_), Some(_)) => {
                    c.problem(
                        keys.oauth2_token_endpoint.at(),
                        Some("oauth2-token-endpoint"),
                        "set oauth2-issuer (its endpoints are then discovered) or the endpoints, not both",
                    );
                    return None;
                }
                (Some(issuer), None) => Endpoints::Issuer(issuer),
                (None, Some(token)) => Endpoints::Known {
                    authorization,
                    token,
                    device,
                },
                // Set, but not a usable address (already reported).
                (None, None)
                    if keys.oauth2_issuer.is_set() || keys.oauth2_token_endpoint.is_set() =>
                {
                    return None;
                }
                (None, None) => {
                    let at = keys.oauth2_provider.at();
                    c.problem(
                        at,
                        Some("oauth2-provider"),
                        "\"custom\" needs oauth2-issuer, or oauth2-token-endpoint (with oauth2-device-endpoint or oauth2-authorization-endpoint)",
                    );
                    return None;
                }
            };
            let Some(scopes) = scopes else {
                c.problem(
                    keys.oauth2_provider.at(),
                    Some("oauth2-scopes"),
                    "missing: a custom provider's scopes, e.g. oauth2-scopes = \"openid offline_access\"",
                );
                return None;
            };
            (endpoints, scopes)
        }
    };
    let in_file = if keys.oauth2_token_store.is_set() {
        keys.oauth2_token_store
            .one_of(c, &[("keyring", false), ("file", true)])?
    } else {
        false
    };
    let store = if in_file {
        Store::File(std::path::PathBuf::new())
    } else {
        Store::Keyring
    };
    Some(Settings {
        account: name.to_owned(),
        preset,
        client_id: client_id?.0,
        client_secret,
        endpoints,
        scopes,
        store,
    })
}
