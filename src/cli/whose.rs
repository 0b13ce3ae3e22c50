//! Whose login a `password` or `oauth2` command is about: an account (`--account NAME`), or
//! an IMAP mailbox accounts deliver into (`--imap NAME`, an `[[imap]]` section).

use crate::config::{Config, Login};
use crate::exit;

/// `--account NAME` or `--imap NAME`, exactly one.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct WhoseArgs {
    /// The account (its name in the configuration)
    #[arg(long, short, value_name = "NAME")]
    pub account: Option<String>,
    /// The IMAP mailbox accounts deliver into (the name of its [[imap]] section)
    #[arg(long, value_name = "NAME")]
    pub imap: Option<String>,
}

/// A login the configuration describes, and who it belongs to.
#[derive(Debug)]
pub struct Whose<'c> {
    /// The name its secrets are kept under.
    pub key: String,
    /// In words: `account "home"`, `IMAP destination "gmail"`.
    pub label: String,
    pub login: &'c Login,
    pub host: &'c str,
    /// The accounts whose polls depend on it (to try again at once after a new secret).
    pub accounts: Vec<String>,
}

/// The login `args` names, or the usage status after saying why there is none.
pub fn whose<'c>(config: &'c Config, args: &WhoseArgs) -> Result<Whose<'c>, u8> {
    if let Some(name) = &args.imap {
        let Some(section) = config.imap.iter().find(|s| &s.name == name) else {
            let known: Vec<&str> = config.imap.iter().map(|s| s.name.as_str()).collect();
            eprintln!(
                "popsync: no [[imap]] section is named {name:?} in {} ({})",
                config.file.display(),
                if known.is_empty() {
                    "it has none".to_owned()
                } else {
                    format!("it has {}", known.join(", "))
                }
            );
            return Err(exit::USAGE);
        };
        let key = crate::delivery::imap::Section::credential_name(name);
        let accounts = config
            .accounts
            .iter()
            .filter(|a| {
                a.delivery
                    .settings::<crate::delivery::imap::Settings>()
                    .is_some_and(|s| &s.section.name == name)
            })
            .map(|a| a.name.clone())
            .collect();
        return Ok(Whose {
            label: crate::config::whose(&key).0,
            key,
            login: &section.login,
            host: &section.server.host,
            accounts,
        });
    }
    let name = args.account.clone().unwrap_or_default();
    let account = super::select(config, std::slice::from_ref(&name))?[0];
    Ok(Whose {
        key: account.name.clone(),
        label: crate::config::whose(&account.name).0,
        login: &account.login,
        host: &account.server.host,
        accounts: vec![account.name.clone()],
    })
}
