//! The words of the agent's problem notifications: their titles, by kind of problem, and
//! what the user can do about each.

use super::{Account, FetchError, Problem};

/// The title of a pause that only signing in again ends (`popsync status` says how).
pub const SIGN_IN_AGAIN: &str = "popsync: sign in again";

/// The titles of problems that need the user, by kind.
const TITLES: &[(Problem, &str)] = &[
    (
        Problem::CertificateChanged,
        "popsync: the server's certificate has changed",
    ),
    (
        Problem::CertificateUntrusted,
        "popsync: the server's certificate is not trusted",
    ),
    (Problem::LoginRefused, "popsync: login refused"),
    (Problem::NoPassword, "popsync: no password"),
    (Problem::SignInNeeded, SIGN_IN_AGAIN),
    (
        Problem::Misconfigured,
        "popsync: the account cannot work as configured",
    ),
];

pub(super) fn problem_title(e: &FetchError) -> &'static str {
    let problem = e.problem();
    TITLES
        .iter()
        .find(|(p, _)| *p == problem)
        .map_or(PLAIN_FAILURE, |(_, t)| t)
}

/// The title recorded with a pause, as one of [`TITLES`].
pub(super) fn problem_title_named(text: &str) -> &'static str {
    TITLES
        .iter()
        .chain(&[(Problem::Other, PLAIN_FAILURE)])
        .find(|(_, t)| *t == text)
        .map_or(PLAIN_FAILURE, |(_, t)| t)
}

/// The title of a problem that is told only once it has lasted `notify-failure-after`.
pub(super) const PLAIN_FAILURE: &str = "popsync: cannot fetch mail";

/// A path as a user writes it in a popup: "~/.config/popsync/config.toml", not the whole
/// home directory.
pub(super) fn as_user_writes(path: &std::path::Path) -> String {
    let home = directories::BaseDirs::new().map(|b| b.home_dir().to_owned());
    match home.as_deref().and_then(|h| path.strip_prefix(h).ok()) {
        Some(rest) if !rest.as_os_str().is_empty() && cfg!(unix) => {
            format!("~/{}", rest.display())
        }
        _ => path.display().to_string(),
    }
}

/// What the user can do about a problem that needs them: in the account's configuration,
/// or in the `[[imap]]` section it delivers into when that is what failed.
pub(super) fn advice(account: &Account, e: &FetchError, file: &std::path::Path) -> Option<String> {
    use crate::config::PasswordSource;
    let name = &account.name;
    let file = as_user_writes(file);
    let then_poll = format!("then run: popsync poll --account {name}");
    let section = e.imap_destination().and_then(|dest| {
        account
            .delivery
            .settings::<crate::delivery::imap::Settings>()
            .map(|s| &s.section)
            .filter(|s| s.name == dest)
    });
    // Whose login and configuration: the account's, or its IMAP destination's (whose
    // words say so: " of the [[imap]] section gmail").
    let (login, of_whose, option, keys_of, of_section) = match section {
        Some(s) => (
            &s.login,
            format!(" of the IMAP destination {}", s.name),
            format!("--imap {}", s.name),
            format!("the [[imap]] section {}", s.name),
            format!(" of the [[imap]] section {}", s.name),
        ),
        None => (
            &account.login,
            String::new(),
            format!("--account {name}"),
            format!("account {name}"),
            String::new(),
        ),
    };
    let secret = |what: &str| match &login.password {
        PasswordSource::Keyring { .. } => {
            format!("Store the {what} password{of_whose} with: popsync password set {option}")
        }
        PasswordSource::Inline(_) => {
            format!("Correct password for {keys_of} in {file}, {then_poll}")
        }
        PasswordSource::Command(_) => {
            format!("Check what password-command of {keys_of} prints, {then_poll}")
        }
        PasswordSource::TokenCommand(_) => format!(
            "Check oauth2-token-command of {keys_of} (the sign-in may need renewing), {then_poll}"
        ),
        PasswordSource::OAuth2(_) => {
            format!("Sign in again with: popsync oauth2 login {option}")
        }
    };
    Some(match e.problem() {
        // (A sign-in is needed only by logins with oauth2-provider: "Sign in again".)
        Problem::LoginRefused | Problem::SignInNeeded => secret("new"),
        Problem::NoPassword => secret("missing"),
        Problem::CertificateChanged => format!(
            "If the server's certificate was renewed, see the new one with `popsync check --account {name}` and update tls-fingerprint{of_section} in {file}; {then_poll}"
        ),
        Problem::CertificateUntrusted => format!(
            "See the certificate with `popsync check --account {name}`; fix ca-file{of_section} or the server, {then_poll}"
        ),
        Problem::Misconfigured => format!("Fix {keys_of} in {file}, {then_poll}"),
        Problem::Other => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::DeliveryError;
    use crate::delivery::imap::ImapFailure;
    use crate::imap::Error as ImapError;
    use crate::imap::wire::{State, Tagged};

    /// `home` delivering into the IMAP mailbox `dest`, whose login is `login` (keys).
    fn config(login: &str) -> crate::config::Config {
        let text = format!(
            "[[imap]]\nname = \"dest\"\nhost = \"imap.example.net\"\nusername = \"me\"\n{login}\n\n\
             [[account]]\nname = \"home\"\nhost = \"pop.example.net\"\nusername = \"me\"\n\
             password-keyring = true\nimap-destination = \"dest\"\n"
        );
        crate::config::Config::parse(&text, std::path::Path::new("/etc/popsync.toml"), None)
            .unwrap()
    }

    fn imap(failure: ImapFailure) -> FetchError {
        FetchError::Delivery(DeliveryError::Imap(Box::new(failure)))
    }

    fn session(source: ImapError) -> FetchError {
        imap(ImapFailure::Session {
            name: "dest".into(),
            host: "imap.example.net".into(),
            doing: "logging in",
            source: Box::new(source),
        })
    }

    /// What to do about an IMAP destination's failure is said of its `[[imap]]` section and
    /// with `--imap`, never of the account (whose own login is fine).
    #[test]
    fn advice_for_an_imap_destination_names_its_section() {
        let refused = || {
            session(ImapError::Login {
                method: "LOGIN".into(),
                text: "NO [AUTHENTICATIONFAILED]".into(),
            })
        };
        let file = std::path::Path::new("/etc/popsync.toml");
        let advise = |login: &str, e: &FetchError| {
            let config = config(login);
            advice(&config.accounts[0], e, file).unwrap()
        };
        assert_eq!(
            advise("password = \"old\"", &refused()),
            "Correct password for the [[imap]] section dest in /etc/popsync.toml, then run: popsync poll --account home"
        );
        assert_eq!(
            advise("password-keyring = true", &refused()),
            "Store the new password of the IMAP destination dest with: popsync password set --imap dest"
        );
        assert_eq!(
            advise(
                "password-command = [\"pass\", \"show\", \"imap\"]",
                &refused()
            ),
            "Check what password-command of the [[imap]] section dest prints, then run: popsync poll --account home"
        );
        let missing = imap(ImapFailure::NoMailbox {
            name: "dest".into(),
            mailbox: "Archive".into(),
            answer: Box::new(Tagged {
                tag: "a3".into(),
                state: State::No,
                code: Some("NONEXISTENT".into()),
                text: "Mailbox doesn't exist".into(),
            }),
        });
        assert_eq!(missing.problem(), Problem::Misconfigured);
        assert_eq!(
            advise("password = \"old\"", &missing),
            "Fix the [[imap]] section dest in /etc/popsync.toml, then run: popsync poll --account home"
        );
        // Passing trouble at the destination needs no one.
        let lost = session(ImapError::Bye("shutting down".into()));
        assert_eq!(lost.problem(), Problem::Other);
        assert_eq!(
            advice(&config("password = \"x\"").accounts[0], &lost, file),
            None
        );
    }

    #[cfg(unix)]
    #[test]
    fn paths_in_popups_are_written_from_home() {
        let home = directories::BaseDirs::new().unwrap().home_dir().to_owned();
        assert_eq!(
            as_user_writes(&home.join(".config/popsync/config.toml")),
            "~/.config/popsync/config.toml"
        );
        assert_eq!(
            as_user_writes(std::path::Path::new("/etc/popsync.toml")),
            "/etc/popsync.toml"
        );
    }
}
