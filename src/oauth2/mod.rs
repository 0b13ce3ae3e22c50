//! OAuth2 sign-in built in: popsync gets its own tokens from the account's authorization
//! server, for the POP3 servers that take only OAuth2 (Gmail, Microsoft 365 / Outlook.com).
//!
//! - Signing in (`popsync oauth2 login`) runs a grant that needs the user once: the
//!   authorization code grant with PKCE through the browser and a loopback redirect
//!   ([`loopback`]), or the device authorization grant (RFC 8628: a code typed in on any
//!   browser). The refresh token it brings is kept in the account's token store ([`store`]);
//!   nothing else is kept.
//! - Before a session, [`access_token`] gives an access token: the one in memory while it
//!   has more than [`MARGIN`] left (for clock skew and a slow login), else a new one from
//!   the refresh grant. When the server rotates the refresh token, the new one is stored
//!   before the access token is used, so a crash can never leave popsync holding only a
//!   refresh token the server has already replaced.
//! - `invalid_grant` (a revoked or expired sign-in) is [`Error::SignInNeeded`]: the user must
//!   sign in again (exit 77). A token endpoint that cannot be reached is temporary (75).
//!
//! No token, code or verifier is ever written to a log or shown in an error.

pub mod http;
pub mod loopback;
pub mod store;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::exit::ErrorClass;
use crate::pop3::Secret;
use http::Url;

/// An access token with less than this left is renewed before a session (or halfway
/// through its life, if it lives less than twice this).
pub const MARGIN: Duration = Duration::from_secs(120);

/// Whose authorization server, with its endpoints and scopes known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Google,
    Microsoft,
    Custom,
}

/// An account's OAuth2 settings, from its configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The account's name (the token store's key).
    pub account: String,
    pub preset: Preset,
    pub client_id: String,
    /// Google's "installed application" clients have one; it is not secret, but it is not
    /// shown either.
    pub client_secret: Option<Secret>,
    pub endpoints: Endpoints,
    /// Space-separated.
    pub scopes: String,
    pub store: store::Store,
}

/// Where the grants are made: given, or found by OpenID Connect discovery from an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    Known {
        authorization: Option<String>,
        token: String,
        device: Option<String>,
    },
    Issuer(String),
}

/// The endpoints, once known.
#[derive(Debug, Clone, Deserialize)]
pub struct Resolved {
    #[serde(rename = "authorization_endpoint")]
    pub authorization: Option<String>,
    #[serde(rename = "token_endpoint")]
    pub token: String,
    #[serde(rename = "device_authorization_endpoint")]
    pub device: Option<String>,
}

impl Preset {
    /// The endpoints and scopes a preset fills in (`tenant` for Microsoft: "common",
    /// "organizations", "consumers" or the directory's id).
    pub fn defaults(self, tenant: &str) -> Option<(Endpoints, &'static str)> {
        match self {
            Self::Google => Some((
                Endpoints::Known {
                    authorization: Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
                    token: "https://oauth2.googleapis.com/token".into(),
                    // Google's device sign-in does not grant the Gmail scope.
                    device: None,
                },
                "https://mail.google.com/",
            )),
            Self::Microsoft => {
                let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
                Some((
                    Endpoints::Known {
                        authorization: Some(format!("{base}/authorize")),
                        token: format!("{base}/token"),
                        device: Some(format!("{base}/devicecode")),
                    },
                    "https://outlook.office.com/POP.AccessAsUser.All offline_access",
                ))
            }
            Self::Custom => None,
        }
    }

    /// The provider's POP3 server and the SASL mechanism it takes, for an account that
    /// sets no `host` (or `auth`) of its own. Both listen with implicit TLS on 995, the
    /// defaults. Both document XOAUTH2 for POP3; Microsoft's takes nothing else.
    pub fn pop3_server(self) -> Option<(&'static str, crate::pop3::AuthMethod)> {
        match self {
            Self::Google => Some(("pop.gmail.com", crate::pop3::AuthMethod::XOAuth2)),
            Self::Microsoft => Some(("outlook.office365.com", crate::pop3::AuthMethod::XOAuth2)),
            Self::Custom => None,
        }
    }

    /// The provider's IMAP server and the mechanism it takes, for an `[[imap]]` section
    /// that sets no `host` (or `auth`): implicit TLS on 993, the default.
    pub fn imap_server(self) -> Option<(&'static str, crate::pop3::AuthMethod)> {
        match self {
            Self::Google => Some(("imap.gmail.com", crate::pop3::AuthMethod::XOAuth2)),
            Self::Microsoft => Some(("outlook.office365.com", crate::pop3::AuthMethod::XOAuth2)),
            Self::Custom => None,
        }
    }
}

/// The scopes a Microsoft sign-in asks for to log in by IMAP (its POP scope does not
/// cover IMAP; Google's one scope covers both).
pub const MICROSOFT_IMAP_SCOPES: &str =
    "https://outlook.office.com/IMAP.AccessAsUser.All offline_access";

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{} is not signed in (or its sign-in was revoked or has expired{}): \
         run `popsync oauth2 login {}`",
        crate::config::whose(.account).0,
        reason_note(.reason),
        crate::config::whose(.account).1
    )]
    SignInNeeded {
        account: String,
        reason: Option<String>,
    },
    #[error("the authorization server: {0}")]
    Http(#[from] http::HttpError),
    #[error("the authorization server refused: {0}")]
    Refused(String),
    #[error("the authorization server's answer: {0}")]
    Protocol(String),
    #[error("the token store: {0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Config(String),
    /// Trouble on this machine: no port to listen on, no random numbers.
    #[error("{0}")]
    Local(String),
}

fn reason_note(reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!("; the server said: {r}"),
        None => String::new(),
    }
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::SignInNeeded { .. } | Self::Refused(_) => ErrorClass::Auth,
            Self::Http(_) | Self::Protocol(_) => ErrorClass::Temporary,
            Self::Store(e) => e.class(),
            Self::Config(_) => ErrorClass::Config,
            Self::Local(_) => ErrorClass::Local,
        }
    }
}

/// What a token endpoint gives.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// An error answer (RFC 6749 section 5.2, RFC 8628 section 3.5).
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl ErrorAnswer {
    fn shown(&self) -> String {
        match &self.error_description {
            Some(d) => format!("{} ({})", self.error, printable(d)),
            None => self.error.clone(),
        }
    }
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Tokens from a grant.
#[derive(Debug)]
pub struct Tokens {
    pub access: Secret,
    pub expires_in: Option<Duration>,
    pub refresh: Option<Secret>,
}

impl Settings {
    /// The endpoints: as configured, or from the issuer's discovery document.
    pub async fn resolve(&self) -> Result<Resolved, Error> {
        match &self.endpoints {
            Endpoints::Known {
                authorization,
                token,
                device,
            } => Ok(Resolved {
                authorization: authorization.clone(),
                token: token.clone(),
                device: device.clone(),
            }),
            Endpoints::Issuer(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let url = Url::parse(&url).map_err(Error::Config)?;
                let answer = http::exchange(&url, None).await?;
                if answer.status != 200 {
                    return Err(Error::Protocol(format!(
                        "{url} answered {} to the discovery request",
                        answer.status
                    )));
                }
                serde_json::from_slice(&answer.body)
                    .map_err(|e| Error::Protocol(format!("{url} is not a discovery document: {e}")))
            }
        }
    }

    /// The client's own fields of a token request.
    fn client_fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("client_id", self.client_id.clone())];
        if let Some(s) = &self.client_secret {
            f.push(("client_secret", s.expose().to_owned()));
        }
        f
    }
}

/// POSTs a grant to the token endpoint: tokens, or the error answer.
async fn token_request(
    token_endpoint: &str,
    fields: &[(&str, String)],
) -> Result<Result<Tokens, ErrorAnswer>, Error> {
    let url = Url::parse(token_endpoint).map_err(Error::Config)?;
    let answer = http::exchange(&url, Some(&http::form(fields))).await?;
    if answer.status == 200 {
        let t: TokenAnswer = serde_json::from_slice(&answer.body)
            .map_err(|_| Error::Protocol(format!("{url} answered 200 without an access token")))?;
        return Ok(Ok(Tokens {
            access: Secret::new(t.access_token),
            expires_in: t.expires_in.map(Duration::from_secs),
            refresh: t.refresh_token.map(Secret::new),
        }));
    }
    match serde_json::from_slice::<ErrorAnswer>(&answer.body) {
        Ok(e) => Ok(Err(e)),
        Err(_) if answer.status >= 500 => Err(Error::Protocol(format!(
            "{url} answered {} (a server error)",
            answer.status
        ))),
        Err(_) => Err(Error::Protocol(format!(
            "{url} answered {} without an OAuth2 error",
            answer.status
        ))),
    }
}

/// The access tokens popsync holds, by account: in memory only.
struct Held {
    token: Secret,
    expires_at: Instant,
    /// When it stops being used (its expiry less [`MARGIN`]).
    renew_at: Instant,
}

static HELD: Mutex<Option<HashMap<String, Held>>> = Mutex::new(None);

/// Forgets the access token held for `account` (after signing out or in again).
pub fn forget(account: &str) {
    if let Some(map) = HELD.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        map.remove(account);
    }
}

/// Whether the next session of `account` would get an access token held from an earlier
/// grant: if the server refuses that one (revoked meanwhile), a fresh one is worth a try.
pub fn holds(account: &str) -> bool {
    let guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .as_ref()
        .and_then(|m| m.get(account))
        .is_some_and(|held| Instant::now() < held.renew_at)
}

/// How long the access token held for `account` is still good, if one is held.
pub fn held_for(account: &str) -> Option<Duration> {
    let guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let held = guard.as_ref()?.get(account)?;
    Some(held.expires_at.saturating_duration_since(Instant::now()))
}

/// An access token for a session of this account: the one held while it is fresh enough,
/// else one from the refresh grant.
pub async fn access_token(settings: &Settings) -> Result<Secret, Error> {
    if let Some(map) = HELD.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        && let Some(held) = map.get(&settings.account)
        && Instant::now() < held.renew_at
    {
        return Ok(held.token.clone());
    }
    let refresh = settings
        .store
        .load(&settings.account)
        .await?
        .ok_or_else(|| Error::SignInNeeded {
            account: settings.account.clone(),
            reason: None,
        })?;
    let endpoints = settings.resolve().await?;
    let mut fields = settings.client_fields();
    fields.push(("grant_type", "refresh_token".into()));
    fields.push(("refresh_token", refresh.expose().to_owned()));
    let tokens = match token_request(&endpoints.token, &fields).await? {
        Ok(t) => t,
        Err(e) if e.error == "invalid_grant" => {
            // The server will never take this refresh token again: it is removed, so that
            // `oauth2 status` says what is true (not signed in). Only if it is still the
            // one stored: another popsync may have signed in again meanwhile.
            if let Ok(Some(stored)) = settings.store.load(&settings.account).await
                && stored.expose() == refresh.expose()
            {
                match settings.store.delete(&settings.account).await {
                    Ok(_) => tracing::info!(
                        "account {}: the authorization server refused the refresh token \
                         ({}); removed it from {}",
                        settings.account,
                        e.shown(),
                        settings.store.describe(&settings.account)
                    ),
                    Err(d) => tracing::warn!(
                        "account {}: could not remove the refused refresh token: {d}",
                        settings.account
                    ),
                }
            }
            return Err(Error::SignInNeeded {
                account: settings.account.clone(),
                reason: Some(e.shown()),
            });
        }
        Err(e) => return Err(Error::Refused(e.shown())),
    };
    // A rotated refresh token is stored before the access token is used.
    if let Some(new) = &tokens.refresh
        && new.expose() != refresh.expose()
    {
        settings.store.save(&settings.account, new).await?;
        tracing::debug!("the authorization server rotated the refresh token: stored the new one");
    }
    hold(&settings.account, &tokens);
    Ok(tokens.access)
}

fn hold(account: &str, tokens: &Tokens) {
    // Without an expiry, an hour, as most servers give. A token that lives less than twice
    // the margin is renewed halfway through its life.
    let life = tokens.expires_in.unwrap_or(Duration::from_secs(3600));
    let renew_at = Instant::now() + life.saturating_sub(MARGIN.min(life / 2));
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(
            account.to_owned(),
            Held {
                token: tokens.access.clone(),
                expires_at: Instant::now() + life,
                renew_at,
            },
        );
}

/// The first step of the device grant: what the user is to do.
#[derive(Debug)]
pub struct DeviceStart {
    device_code: Secret,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub interval: Duration,
    pub expires_in: Duration,
}

#[derive(Deserialize)]
struct DeviceAnswer {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Asks the device authorization endpoint for a code for the user (RFC 8628 section 3.1).
pub async fn device_start(settings: &Settings, endpoints: &Resolved) -> Result<DeviceStart, Error> {
    let device = endpoints.device.as_deref().ok_or_else(|| {
        Error::Config(if settings.preset == Preset::Google {
            "Google's device sign-in does not grant access to Gmail: sign in with the \
             browser instead. On a machine without one, `popsync oauth2 login --no-browser` \
             shows an address to open in a browser anywhere, and takes back the address \
             that browser ends at, pasted in"
                .to_owned()
        } else {
            format!(
                "account {:?}: the authorization server has no device authorization endpoint \
                 (set oauth2-device-endpoint, or sign in with the browser)",
                settings.account
            )
        })
    })?;
    let url = Url::parse(device).map_err(Error::Config)?;
    let mut fields = settings.client_fields();
    fields.push(("scope", settings.scopes.clone()));
    let answer = http::exchange(&url, Some(&http::form(&fields))).await?;
    if answer.status != 200 {
        return Err(match serde_json::from_slice::<ErrorAnswer>(&answer.body) {
            Ok(e) => Error::Refused(e.shown()),
            Err(_) => Error::Protocol(format!("{url} answered {}", answer.status)),
        });
    }
    let a: DeviceAnswer = serde_json::from_slice(&answer.body)
        .map_err(|e| Error::Protocol(format!("{url}: not a device authorization answer: {e}")))?;
    Ok(DeviceStart {
        device_code: Secret::new(a.device_code),
        user_code: printable(&a.user_code),
        verification_uri: printable(&a.verification_uri),
        verification_uri_complete: a.verification_uri_complete.map(|u| printable(&u)),
        // RFC 8628: 5 seconds when the server says nothing.
        interval: Duration::from_secs(a.interval.unwrap_or(5).max(1)),
        expires_in: Duration::from_secs(a.expires_in.unwrap_or(600)),
    })
}

/// Polls the token endpoint until the user has approved (or refused) the device code, at
/// the interval the server asks, 5 seconds more after each `slow_down` (RFC 8628 section
/// 3.5). Stores the refresh token before returning.
pub async fn device_finish(
    settings: &Settings,
    endpoints: &Resolved,
    start: &DeviceStart,
) -> Result<(), Error> {
    let deadline = Instant::now() + start.expires_in;
    let mut interval = start.interval;
    let mut fields = settings.client_fields();
    fields.push((
        "grant_type",
        "urn:ietf:params:oauth:grant-type:device_code".into(),
    ));
    fields.push(("device_code", start.device_code.expose().to_owned()));
    loop {
        tokio::time::sleep(interval).await;
        if Instant::now() > deadline {
            return Err(Error::Refused(
                "the code expired before it was approved: sign in again".into(),
            ));
        }
        match token_request(&endpoints.token, &fields).await? {
            Ok(tokens) => return keep(settings, tokens).await,
            Err(e) => match e.error.as_str() {
                "authorization_pending" => {}
                "slow_down" => {
                    interval += Duration::from_secs(5);
                    tracing::debug!(
                        "the authorization server asks to poll more slowly: every {}s",
                        interval.as_secs()
                    );
                }
                "access_denied" => {
                    return Err(Error::Refused("the sign-in was declined".into()));
                }
                "expired_token" => {
                    return Err(Error::Refused(
                        "the code expired before it was approved: sign in again".into(),
                    ));
                }
                _ => return Err(Error::Refused(e.shown())),
            },
        }
    }
}

/// Keeps what a sign-in brought: the refresh token in the store, the access token in memory.
async fn keep(settings: &Settings, tokens: Tokens) -> Result<(), Error> {
    let Some(refresh) = &tokens.refresh else {
        return Err(Error::Protocol(
            "the sign-in brought no refresh token (does the scope ask for offline access?)".into(),
        ));
    };
    settings.store.save(&settings.account, refresh).await?;
    forget(&settings.account);
    hold(&settings.account, &tokens);
    Ok(())
}
