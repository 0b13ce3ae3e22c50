//! An `[[imap]]` section of the configuration file: an IMAP server, the login there and
//! the mailbox that accounts naming it (`imap-destination`) deliver into.
//!
//! Its server and login keys are the accounts' own (`host`, `port`, `security`, `ca-file`,
//! `tls-fingerprint`, `username`, `password`, `password-command`, `password-keyring`,
//! `oauth2-*`, `auth`), read by the same readers, with IMAP's ports (993, or 143 for
//! STARTTLS). `[defaults]` does not apply to it. Its secret is kept under the name
//! `imap=NAME` (`popsync password set --imap NAME`, `popsync oauth2 login --imap NAME`).

use std::sync::Arc;
use std::time::Duration;

use toml::de::DeValue;

use super::ImapFailure;
use crate::config::credentials::{self, CredentialKeys};
use crate::config::server::{self, Protocol, ServerKeys};
use crate::config::{Login, Server};
use crate::imap::{Client, Error as ImapError};
use crate::keys::{Checker, KeyDoc, Layered, keys};
use crate::pop3::{ConnectOptions, Credentials};

/// The file's table of these sections.
pub const TABLE: &str = "imap";

keys! {
    /// An IMAP destination's own keys.
    struct SectionKeys {
        /// The section's name, which accounts give as `imap-destination`.
        name: "name" { default: "", example: "\"gmail\"" },
        /// The mailbox messages are appended to (for Gmail, a label: "INBOX" shows them in
        /// the inbox).
        mailbox: "mailbox" { default: "\"INBOX\"", example: "\"Archive/pop\"" },
        /// The limit for connecting, the TLS handshake and each of the server's answers.
        timeout: "timeout" { default: "\"1m\"", example: "\"30s\"" },
    }
}

/// The server keys whose defaults differ for IMAP, as an `[[imap]]` section documents them.
static IMAP_HOST: KeyDoc = KeyDoc {
    name: "host",
    default: "none (imap.gmail.com or outlook.office365.com with oauth2-provider \"google\" or \"microsoft\")",
    example: "\"imap.example.net\"",
    doc: "The IMAP server's host name (or IP address, an IPv6 one without brackets).",
};
static IMAP_PORT: KeyDoc = KeyDoc {
    name: "port",
    default: "993 for \"tls\", 143 otherwise",
    example: "993",
    doc: "The server's port.",
};

/// Every key an `[[imap]]` section may set.
pub fn section_keys() -> Vec<&'static KeyDoc> {
    let mut keys: Vec<&'static KeyDoc> = SectionKeys::DOCS.iter().collect();
    keys.extend(ServerKeys::DOCS.iter().map(|k| match k.name {
        "host" => &IMAP_HOST,
        "port" => &IMAP_PORT,
        _ => k,
    }));
    keys.extend(CredentialKeys::DOCS);
    keys
}

/// One `[[imap]]` section, read.
#[derive(Debug)]
pub struct Section {
    pub name: String,
    pub server: Server,
    pub login: Login,
    pub mailbox: String,
    pub timeout: Duration,
}

impl Section {
    /// The name its secrets are kept under (in the keyring, the OAuth2 token store): not a
    /// name an account can have.
    pub fn credential_name(name: &str) -> String {
        format!("imap={name}")
    }

    /// What the state database records as where a message went.
    pub fn destination(&self) -> String {
        format!(
            "imap://{}@{}:{}/{}",
            self.login.username, self.server.host, self.server.port, self.mailbox
        )
    }

    /// An error of this destination's session, while `doing`.
    pub fn failure(&self, source: ImapError, doing: &'static str) -> ImapFailure {
        if let ImapError::Refused { answer, .. } = &source
            && matches!(
                answer.code_name().as_deref(),
                Some("TRYCREATE" | "NONEXISTENT")
            )
        {
            return ImapFailure::NoMailbox {
                name: self.name.clone(),
                mailbox: self.mailbox.clone(),
                answer: Box::new(answer.clone()),
            };
        }
        ImapFailure::Session {
            name: self.name.clone(),
            host: format!("{}:{}", self.server.host, self.server.port),
            doing,
            source: Box::new(source),
        }
    }

    fn connect_options(&self) -> Result<ConnectOptions, ImapFailure> {
        self.server
            .connect_options(self.timeout)
            .map_err(|source| ImapFailure::CaFile {
                name: self.name.clone(),
                path: self.server.ca_file.clone().unwrap_or_default(),
                source,
            })
    }

    /// Connects and logs in. An OAuth2 access token held from an earlier poll that the
    /// server refuses (the sign-in was revoked meanwhile) is replaced once from the refresh
    /// token, which says so if the sign-in itself is gone.
    pub async fn session(&self) -> Result<Client, ImapFailure> {
        let key = Self::credential_name(&self.name);
        let held = self.login.password.is_token() && crate::oauth2::holds(&key);
        match self.log_in().await {
            Err(ImapFailure::Session { source, .. })
                if held && matches!(*source, ImapError::Login { .. }) =>
            {
                tracing::info!(
                    "IMAP destination {}: the server refused the OAuth2 access token held from \
                     an earlier poll ({source}); asking the authorization server for a new one",
                    self.name
                );
                crate::oauth2::forget(&key);
                self.log_in().await
            }
            other => other,
        }
    }

    async fn log_in(&self) -> Result<Client, ImapFailure> {
        let options = self.connect_options()?;
        let mut client = crate::imap::connect(&options)
            .await
            .map_err(|e| self.failure(e, "connecting"))?;
        let secret =
            self.login
                .password
                .resolve()
                .await
                .map_err(|source| ImapFailure::Password {
                    name: self.name.clone(),
                    source,
                })?;
        let credentials = if self.login.password.is_token() {
            Credentials::token(self.login.username.clone(), secret)
        } else {
            Credentials::password(self.login.username.clone(), secret)
        };
        client
            .login(&credentials, self.login.auth)
            .await
            .map_err(|e| self.failure(e, "logging in"))?;
        Ok(client)
    }
}

/// Reads every `[[imap]]` section into `c.named`.
pub fn read_all(
    c: &mut Checker<'_>,
    value: Option<&toml::Spanned<DeValue<'_>>>,
    state_dir: Option<&std::path::Path>,
) {
    let Some(value) = value else { return };
    let items = match value.get_ref() {
        DeValue::Array(items) => items,
        DeValue::Table(_) => {
            c.problem(
                Some(value.span().start),
                Some(TABLE),
                "IMAP destinations are written [[imap]], with double brackets",
            );
            return;
        }
        _ => {
            c.problem(
                Some(value.span().start),
                Some(TABLE),
                "must be [[imap]] sections",
            );
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let DeValue::Table(table) = item.get_ref() else {
            c.problem(
                Some(item.span().start),
                Some(TABLE),
                "each [[imap]] section must be a table",
            );
            continue;
        };
        let at = item.span().start;
        let before = c.problems.len();
        c.account = Some(format!("[[imap]] #{}", i + 1));
        c.account_at = at;
        let layers = Layered::new(table, None);
        let own = SectionKeys::take(&layers);
        let name = own.name.required(
            c,
            "every [[imap]] section needs a name, e.g. name = \"gmail\"",
        );
        if let Some((n, name_at)) = &name {
            if !crate::config::valid_name(n) {
                c.problem(
                    Some(*name_at),
                    Some("name"),
                    "names may use letters, digits and . _ @ + - (starting with a letter or digit, at most 64 characters)",
                );
            }
            c.account = Some(format!("[[imap]] {n:?}"));
        }
        let known: Vec<&str> = section_keys().iter().map(|k| k.name).collect();
        for key in table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                c.unknown_key(key, &known);
            }
        }
        let credential_name =
            Section::credential_name(name.as_ref().map_or("", |(n, _)| n.as_str()));
        let preset = credentials::preset(&layers).and_then(crate::oauth2::Preset::imap_server);
        let server = server::read(c, &layers, preset.map(|(h, _)| h), Protocol::Imap);
        let login = credentials::read(
            c,
            &layers,
            &credential_name,
            server.security,
            Protocol::Imap,
        );
        let mailbox = match own.mailbox.string(c) {
            None => "INBOX".to_owned(),
            Some((m, at)) => {
                if m.is_empty() || m.chars().any(|ch| ch.is_control()) {
                    c.problem(
                        Some(at),
                        Some("mailbox"),
                        "must be a mailbox name, without line breaks",
                    );
                }
                m.to_owned()
            }
        };
        let timeout =
            own.timeout
                .duration(c, crate::config::DEFAULT_TIMEOUT, Duration::from_secs(1));
        if let Some((n, name_at)) = &name
            && c.named
                .iter()
                .any(|(t, other, _)| *t == TABLE && other == n)
        {
            c.problem(
                Some(*name_at),
                Some("name"),
                "two [[imap]] sections have this name; names must be unique",
            );
        }
        c.account = None;
        let Some((name, _)) = name else { continue };
        let (Some(mut login), false) = (login, c.problems.len() > before) else {
            // Known by name all the same, so that an account naming it is not told it is
            // missing: its own problems are told.
            c.named.push((TABLE, name, Arc::new(())));
            continue;
        };
        if let crate::config::PasswordSource::OAuth2(s) = &mut login.password
            && let crate::oauth2::store::Store::File(dir) = &mut s.store
            && let Some(state_dir) = state_dir
        {
            dir.clone_from(&state_dir.to_owned());
        }
        let section = Section {
            name: name.clone(),
            server,
            login,
            mailbox,
            timeout,
        };
        c.named.push((TABLE, name, Arc::new(section)));
    }
}
