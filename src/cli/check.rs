//! `popsync check`: connect and log in without fetching, and show what the server offers
//! (like `mpop --serverinfo`).

use std::fmt::Write as _;

use super::Cli;
use super::progress::human_bytes;
use crate::config::{Account, Config};
use crate::plan::{self, Policy};
use crate::poll::{self, ErrorClass, FetchError};
use crate::pop3::{self, Capabilities, Credentials, Security};
use crate::store::Store;

/// Connect to each account (or the ones named), log in and show the server's certificate,
/// capabilities, the login method and the message count, without fetching anything
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Only this account (repeat for several)
    #[arg(long, short, value_name = "NAME")]
    account: Vec<String>,
}

pub fn run(cli: &Cli, args: &CheckArgs) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let accounts = match super::select(&config, &args.account) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut worst: Option<ErrorClass> = None;
    for (i, account) in accounts.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let mut out = String::new();
        let result = runtime.block_on(check(&config, account, &mut out));
        // The local side, as a fetch would use it.
        let local = local(&config, account, &mut out);
        let result = result.and(local);
        print!("{out}");
        if let Err(e) = result {
            println!("  result:         FAILED: {}", crate::error_chain(&e));
            eprintln!(
                "popsync: {}: error: {}",
                account.name,
                crate::error_chain(&e)
            );
            worst = worst.max(Some(e.class()));
        } else {
            println!("  result:         ok");
        }
    }
    worst.map_or(0, ErrorClass::exit_code)
}

fn security_label(s: Security) -> &'static str {
    match s {
        Security::Tls => "implicit TLS",
        Security::StartTls => "STLS (STARTTLS)",
        Security::DangerousPlaintext => "NO ENCRYPTION (dangerous-plaintext)",
    }
}

fn caps_line(caps: &Capabilities) -> String {
    if !caps.known {
        "(the server does not answer CAPA)".to_owned()
    } else {
        caps.lines.join(" | ")
    }
}

async fn check(config: &Config, account: &Account, out: &mut String) -> Result<(), FetchError> {
    let _ = writeln!(out, "account {}", account.name);
    let _ = writeln!(
        out,
        "  server:         {}:{} ({})",
        account.server.host,
        account.server.port,
        security_label(account.server.security)
    );
    let options = poll::connect_options(account)?;
    let greeted = pop3::connect(&options).await?;
    if let Some(cert) = greeted.certificate() {
        let _ = writeln!(out, "  certificate:");
        let _ = writeln!(out, "    subject:      {}", cert.subject);
        let _ = writeln!(out, "    issuer:       {}", cert.issuer);
        let _ = writeln!(
            out,
            "    valid:        {} to {}",
            cert.not_before, cert.not_after
        );
        let _ = writeln!(out, "    fingerprint:  {}", cert.sha256);
        let trust = if account.server.tls_fingerprint.is_some() {
            "pinned by tls-fingerprint (matches)"
        } else if account.server.dangerous_accept_invalid_certs {
            "NOT CHECKED (dangerous-accept-invalid-certs = true)"
        } else if account.server.ca_file.is_some() {
            "verified against the system's CAs and ca-file"
        } else {
            "verified against the system's CAs"
        };
        let _ = writeln!(out, "    trust:        {trust}");
    }
    let _ = writeln!(out, "  greeting:       {}", greeted.greeting());
    if let Some(before) = greeted.capabilities_before_tls() {
        let _ = writeln!(out, "  capabilities before STLS: {}", caps_line(before));
    }
    let _ = writeln!(
        out,
        "  capabilities:   {}",
        caps_line(greeted.capabilities())
    );
    let method = greeted.auth_method(account.login.auth, account.login.password.is_token())?;
    let _ = writeln!(
        out,
        "  login method:   {method}{}",
        if account.login.auth.is_none() {
            " (chosen automatically)"
        } else {
            ""
        }
    );
    if let crate::config::PasswordSource::OAuth2(s) = &account.login.password
        && let Ok(None) = s.store.load(&account.name).await
    {
        let _ = writeln!(out, "  oauth2 sign-in: not signed in");
        out.push_str(&login_would_do(s).await);
    }
    let credentials = Credentials {
        username: account.login.username.clone(),
        password: account.login.password.resolve().await?,
        token: account.login.password.is_token(),
    };
    if let crate::config::PasswordSource::OAuth2(s) = &account.login.password {
        let _ = writeln!(
            out,
            "  oauth2 sign-in: signed in (refresh token in {}); access token good for {}",
            s.store.describe(&account.name),
            match crate::oauth2::held_for(&account.name) {
                Some(d) if d.as_secs() >= 120 => format!("{} minutes", d.as_secs() / 60),
                Some(d) => format!("{} seconds", d.as_secs()),
                None => "an unknown time".into(),
            }
        );
    }
    let mut session = greeted.login(&credentials, account.login.auth).await?;
    let _ = writeln!(out, "  login:          ok as {}", account.login.username);
    // RFC 2449: the delay may be announced before login, or only after.
    let delay = session
        .capabilities()
        .login_delay
        .or(session.capabilities_before_login().login_delay)
        .filter(|d| *d > 0);
    if let Some(delay) = delay {
        let next = chrono::Local::now() + chrono::Duration::seconds(delay as i64);
        let _ = writeln!(
            out,
            "  login delay:    the server allows one login every {}: this check used it up, so a \
             fetch before {} is refused (the agent waits it out by itself)",
            crate::clock::span(delay),
            next.format("%H:%M:%S")
        );
    }
    let _ = writeln!(
        out,
        "  capabilities after login: {}",
        caps_line(session.capabilities())
    );
    let (count, size) = session.stat().await?;
    let _ = writeln!(
        out,
        "  mailbox:        {count} messages, {}",
        human_bytes(size)
    );
    let uidl = if account.limits.identify_by_headers {
        crate::poll::renumber::listing_by_headers(&mut session, &|| false)
            .await
            .map(|(uidl, _)| uidl)
    } else {
        session.uidl().await.map_err(FetchError::from)
    };
    let _ = session.quit().await;
    let uidl = uidl?;
    // What the next fetch would do, from the state (read, never created or changed here).
    let policy = Policy::of(account, false);
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let known = if config.state_dir.join(crate::store::DB_FILE).exists() {
        // (One from an older popsync is brought up to date, as any command would.)
        let store = Store::open_for_reading(&config.state_dir)
            .or_else(|_| Store::open(&config.state_dir))?;
        match store.find_account(&account.name)? {
            Some(id) => store.known(id)?,
            None => Default::default(),
        }
    } else {
        Default::default()
    };
    let p = plan::plan(&uidl, &known, &policy, now);
    if let Some(suspects) = crate::poll::renumber::suspects(&p, &known) {
        let _ = writeln!(
            out,
            "  renumbered?:    {} unknown message(s) listed where known ones went missing: the \
             server may have renumbered its mailbox; the fetch recognises those it has by their \
             headers first",
            suspects.len()
        );
    }
    let _ = writeln!(
        out,
        "  next fetch:     {} to download, {} to delete{}",
        p.fetch.len(),
        p.delete.len(),
        if p.duplicates > 0 {
            format!(
                " (warning: {} duplicate unique-ids; deletion would be skipped)",
                p.duplicates
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// What `popsync oauth2 login` would do for an account that is not signed in: where the
/// browser goes, for which application and access, and where the token would be kept.
async fn login_would_do(s: &crate::oauth2::Settings) -> String {
    let login = format!(
        "popsync oauth2 login {}",
        crate::config::whose(&s.account).1
    );
    let mut out = String::new();
    let (browser, device) = match s.resolve().await {
        Ok(e) => (e.authorization, e.device),
        Err(e) => {
            let _ = writeln!(
                out,
                "    `{login}` would first find the provider's endpoints, which failed now: {e}"
            );
            return out;
        }
    };
    match browser {
        Some(url) => {
            let _ = writeln!(
                out,
                "    `{login}` would open a browser at {} for you to let application {:?} \
                 use {:?}, then keep the refresh token in {}",
                url,
                s.client_id,
                s.scopes,
                s.store.describe(&s.account)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "    the provider has no browser sign-in for popsync (no authorization endpoint)"
            );
        }
    }
    if device.is_some() {
        let _ = writeln!(
            out,
            "    `{login} --device` would instead show a code to enter in a browser on any device"
        );
    }
    out
}

/// The mailbox, the state directory and the account's lock, as a fetch would use them,
/// found without changing anything: one line each.
fn local(config: &Config, account: &Account, out: &mut String) -> Result<(), FetchError> {
    let mailbox = account.delivery.check_local();
    let _ = writeln!(
        out,
        "  delivers to:    {}",
        match &mailbox {
            Ok(found) => found.clone(),
            Err(e) => format!("FAILED: {}", crate::error_chain(e)),
        }
    );
    let state = state_dir(config, account);
    let _ = writeln!(
        out,
        "  state:          {}",
        match &state {
            Ok(found) => found.clone(),
            Err(e) => format!("FAILED: {}", crate::error_chain(e)),
        }
    );
    mailbox?;
    state.map(drop)
}

/// The state directory writable (or creatable), its database writable, and whether another
/// popsync holds the account now (the lock looked at, not taken).
fn state_dir(config: &Config, account: &Account) -> Result<String, FetchError> {
    let dir = &config.state_dir;
    let unusable = |path: &std::path::Path, source: std::io::Error| {
        FetchError::Store(crate::store::StoreError::StateDir {
            path: path.to_owned(),
            source,
        })
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(unusable(
                dir,
                std::io::Error::other("it is not a directory"),
            ));
        }
        Ok(_) => {
            crate::delivery::probe_writable(dir).map_err(|e| unusable(dir, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let under = crate::delivery::creatable(dir).map_err(|e| match e {
                crate::delivery::DeliveryError::Mailbox { path, source } => unusable(&path, source),
                other => FetchError::Delivery(other),
            })?;
            return Ok(format!(
                "{}: not there yet; the first fetch creates it (in {}, writable)",
                dir.display(),
                under.display()
            ));
        }
        Err(e) => return Err(unusable(dir, e)),
    }
    let db = dir.join(crate::store::DB_FILE);
    if db.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&db)
            .map_err(|e| unusable(&db, e))?;
    }
    let lock = match crate::lock::AccountLock::holder(dir, &account.name) {
        None => "",
        Some(_) => "; another popsync is fetching this account now (a fetch would wait for it)",
    };
    Ok(format!("{}: writable{lock}", dir.display()))
}
