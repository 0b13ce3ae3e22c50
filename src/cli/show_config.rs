//! `popsync config`: the configuration as popsync understands it, every key with its value
//! and where that came from (the account, `[defaults]`, or popsync's default), with the
//! paths and the server it resolves to.

use serde::Serialize;

use super::Cli;
use crate::config::Origin;
use crate::delivery::Destination as _;

/// Show the configuration as popsync understands it: every key of each account with its
/// value and where it came from (the account, [defaults] or popsync's default), paths
/// resolved, secrets shown as <set>
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Only this account (repeat for several)
    #[arg(long, short, value_name = "NAME")]
    account: Vec<String>,
    /// As JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Shown {
    file: String,
    state_dir: String,
    keys: Vec<KeyShown>,
    accounts: Vec<AccountShown>,
    /// The `[[imap]]` sections (those the chosen accounts deliver into).
    imap: Vec<ImapShown>,
}

#[derive(Debug, Serialize)]
struct ImapShown {
    name: String,
    /// The mailbox, resolved: "the IMAP mailbox "INBOX" of gmail (...)".
    mailbox: String,
    server: String,
    keys: Vec<KeyShown>,
}

#[derive(Debug, Serialize)]
struct AccountShown {
    name: String,
    /// Where the mail goes, resolved: "the Maildir /home/me/Mail".
    delivers_to: String,
    /// host:port and how the connection is protected.
    server: String,
    keys: Vec<KeyShown>,
}

#[derive(Debug, Serialize)]
struct KeyShown {
    key: &'static str,
    /// As written in the file, or popsync's default in words.
    value: String,
    /// "account" (or "file" for the file's own keys), "defaults", "defaults, not used" (a
    /// login source the account replaces with its own) or "popsync".
    from: &'static str,
}

fn keys(origins: &[(&'static crate::config::KeyDoc, Origin)], own: &'static str) -> Vec<KeyShown> {
    origins
        .iter()
        .map(|(doc, origin)| {
            let (value, from) = match origin {
                Origin::Account(v) => (v.clone(), own),
                Origin::Defaults(v) => (v.clone(), "defaults"),
                Origin::Superseded(v) => (v.clone(), "defaults, not used"),
                Origin::Default => (
                    if doc.default.is_empty() {
                        "none".to_owned()
                    } else {
                        doc.default.to_owned()
                    },
                    "popsync",
                ),
            };
            KeyShown {
                key: doc.name,
                value,
                from,
            }
        })
        .collect()
}

fn server(a: &crate::config::Server) -> String {
    use crate::pop3::Security;
    format!(
        "{}:{} ({})",
        a.host,
        a.port,
        match a.security {
            Security::Tls => "implicit TLS",
            Security::StartTls => "STLS",
            Security::DangerousPlaintext => "no encryption",
        }
    )
}

pub fn run(cli: &Cli, args: &ConfigArgs) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let chosen = match super::select(&config, &args.account) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let shown = Shown {
        file: config.file.display().to_string(),
        state_dir: config.state_dir.display().to_string(),
        keys: keys(&config.origins.top, "file"),
        accounts: chosen
            .iter()
            .map(|a| {
                let i = config
                    .accounts
                    .iter()
                    .position(|b| b.name == a.name)
                    .expect("a chosen account is one of them");
                AccountShown {
                    name: a.name.clone(),
                    delivers_to: a.delivery.describe(),
                    server: server(&a.server),
                    keys: config
                        .origins
                        .accounts
                        .get(i)
                        .map(|o| keys(o, "account"))
                        .unwrap_or_default(),
                }
            })
            .collect(),
        imap: config
            .imap
            .iter()
            .filter(|section| {
                args.account.is_empty()
                    || chosen.iter().any(|a| {
                        a.delivery
                            .settings::<crate::delivery::imap::Settings>()
                            .is_some_and(|s| s.section.name == section.name)
                    })
            })
            .map(|section| ImapShown {
                name: section.name.clone(),
                mailbox: crate::delivery::imap::Settings {
                    section: section.clone(),
                }
                .describe(),
                server: server(&section.server),
                keys: config
                    .origins
                    .imap
                    .iter()
                    .find(|(n, _)| *n == section.name)
                    .map(|(_, o)| keys(o, "section"))
                    .unwrap_or_default(),
            })
            .collect(),
    };
    if args.json {
        match serde_json::to_string_pretty(&shown) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("popsync: {e}");
                return crate::exit::SOFTWARE;
            }
        }
        return 0;
    }
    print!("{}", text(&shown));
    0
}

fn text(s: &Shown) -> String {
    let mut out = format!(
        "file:            {}\nstate directory: {}\n",
        s.file, s.state_dir
    );
    let width = s
        .keys
        .iter()
        .chain(s.accounts.iter().flat_map(|a| &a.keys))
        .chain(s.imap.iter().flat_map(|i| &i.keys))
        .map(|k| k.key.len() + 3 + k.value.len())
        .max()
        .unwrap_or(0)
        .min(60);
    let line = |k: &KeyShown| {
        let from = match k.from {
            "popsync" => "(popsync's default)",
            "defaults" => "([defaults])",
            "defaults, not used" => "([defaults], not used: the account's own login source wins)",
            "file" => "(the file)",
            "section" => "(the section)",
            _ => "(the account)",
        };
        format!("  {:<width$}  {from}\n", format!("{} = {}", k.key, k.value))
    };
    for k in &s.keys {
        out.push_str(&line(k));
    }
    for a in &s.accounts {
        out.push_str(&format!(
            "\naccount {}\n  delivers to:    {}\n  server:         {}\n",
            a.name, a.delivers_to, a.server
        ));
        for k in &a.keys {
            out.push_str(&line(k));
        }
    }
    for i in &s.imap {
        out.push_str(&format!(
            "\n[[imap]] {}\n  mailbox:        {}\n  server:         {}\n",
            i.name, i.mailbox, i.server
        ));
        for k in &i.keys {
            out.push_str(&line(k));
        }
    }
    out
}
