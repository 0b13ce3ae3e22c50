//! Where an account's password comes from, and getting it.
//!
//! A password is either written in the config file or printed by a command the user names
//! as an argv list (never run through a shell). The command's first line of output is the
//! password; it runs with a time limit (see `child` for how it is run), and when it fails
//! its stderr is shown so the user can see why (a locked password store, say).

use std::time::Duration;

use crate::child::Ended;

use crate::pop3::Secret;

#[derive(Debug, Clone)]
pub enum PasswordSource {
    /// Written in the config file.
    Inline(Secret),
    /// Printed by this command (program and arguments).
    Command(Vec<String>),
    /// An OAuth 2.0 access token printed by this command (`oauth2-token-command`), run
    /// before every session so that it can refresh the token.
    TokenCommand(Vec<String>),
    /// In the system's credential store (`password-keyring = true`), under the account's
    /// name (`popsync password set --account NAME` puts it there).
    Keyring { account: String },
    /// An OAuth 2.0 access token popsync gets itself, with the refresh token from
    /// `popsync oauth2 login` (`oauth2-provider`).
    OAuth2(Box<crate::oauth2::Settings>),
}

/// Why the password could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("{what} {program:?} could not be started")]
    Spawn {
        what: &'static str,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {program:?} did not finish within {}s", .after.as_secs())]
    Timeout {
        what: &'static str,
        program: String,
        after: Duration,
    },
    #[error("{what} {program:?} failed ({status}){}", stderr_note(.stderr))]
    Failed {
        what: &'static str,
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{what} {program:?} printed nothing")]
    Empty { what: &'static str, program: String },
    #[error("the system keyring: {0}")]
    Keyring(#[from] super::keyring::KeyringError),
    #[error("OAuth2: {0}")]
    OAuth2(#[from] crate::oauth2::Error),
}

/// What the errors call each kind of command.
const PASSWORD_COMMAND: &str = "password command";
const TOKEN_COMMAND: &str = "oauth2-token-command";

impl PasswordError {
    pub fn class(&self) -> crate::exit::ErrorClass {
        use crate::exit::ErrorClass;
        match self {
            // A command that cannot even be started is a configuration mistake ...
            Self::Spawn { .. } => ErrorClass::Config,
            // ... one that hangs may work next time ...
            Self::Timeout { .. } => ErrorClass::Temporary,
            // ... one that fails or prints nothing leaves popsync without credentials.
            Self::Failed { .. } | Self::Empty { .. } => ErrorClass::Auth,
            Self::Keyring(k) => k.class(),
            Self::OAuth2(e) => e.class(),
        }
    }

    /// Whether it was the OAuth2 token that could not be had.
    pub fn is_token(&self) -> bool {
        match self {
            Self::Spawn { what, .. }
            | Self::Timeout { what, .. }
            | Self::Failed { what, .. }
            | Self::Empty { what, .. } => *what == TOKEN_COMMAND,
            Self::Keyring(_) => false,
            Self::OAuth2(_) => true,
        }
    }
}

fn stderr_note(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        let s: String = s.chars().take(500).collect();
        format!(": {s}")
    }
}

/// How long a password command may take.
pub const PASSWORD_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl PasswordSource {
    /// Gets the password, running the command if there is one.
    pub async fn resolve(&self) -> Result<Secret, PasswordError> {
        match self {
            Self::Inline(s) => Ok(s.clone()),
            Self::Command(argv) => {
                run_password_command(argv, PASSWORD_COMMAND_TIMEOUT, PASSWORD_COMMAND).await
            }
            Self::TokenCommand(argv) => {
                run_password_command(argv, PASSWORD_COMMAND_TIMEOUT, TOKEN_COMMAND).await
            }
            Self::Keyring { account } => Ok(super::keyring::get(account).await?),
            Self::OAuth2(settings) => Ok(crate::oauth2::access_token(settings).await?),
        }
    }

    /// Whether the secret is an OAuth 2.0 access token rather than a password.
    pub fn is_token(&self) -> bool {
        matches!(self, Self::TokenCommand(_) | Self::OAuth2(_))
    }
}

async fn run_password_command(
    argv: &[String],
    limit: Duration,
    what: &'static str,
) -> Result<Secret, PasswordError> {
    let program = argv[0].clone();
    let spec = crate::child::Spec {
        // From a terminal it may prompt there (a password manager asking to be unlocked):
        // it stays in popsync's process group, which the terminal lets read.
        own_group: !std::io::IsTerminal::is_terminal(&std::io::stdin()),
        ..crate::child::Spec::new(argv, Some(limit))
    };
    let (status, out, err) = match crate::child::run_async(spec).await {
        Ended::NotStarted(source) => {
            return Err(PasswordError::Spawn {
                what,
                program,
                source,
            });
        }
        Ended::TimedOut { .. } => {
            return Err(PasswordError::Timeout {
                what,
                program,
                after: limit,
            });
        }
        Ended::Exited {
            status,
            stdout,
            stderr,
        } => (status, stdout, stderr),
    };
    if !status.success() {
        return Err(PasswordError::Failed {
            what,
            program,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out);
    let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first.is_empty() {
        return Err(PasswordError::Empty { what, program });
    }
    Ok(Secret::new(first))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn first_line_of_output_is_the_password() {
        let s = run_password_command(
            &argv(&["printf", "hunter2\\nignored\\n"]),
            Duration::from_secs(5),
            "password command",
        )
        .await
        .unwrap();
        assert_eq!(s.expose(), "hunter2");
    }

    #[tokio::test]
    async fn failure_shows_stderr_but_not_stdout() {
        let e = run_password_command(
            &argv(&[
                "sh",
                "-c",
                "echo leaked-secret; echo 'store is locked' >&2; exit 3",
            ]),
            Duration::from_secs(5),
            "password command",
        )
        .await
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("store is locked") && msg.contains("exit status: 3"),
            "{msg}"
        );
        assert!(!msg.contains("leaked-secret"), "{msg}");
    }

    #[tokio::test]
    async fn missing_program_and_timeout() {
        let e = run_password_command(
            &argv(&["/nonexistent/pw"]),
            Duration::from_secs(5),
            "password command",
        )
        .await
        .unwrap_err();
        assert!(matches!(e, PasswordError::Spawn { .. }), "{e}");
        let e = run_password_command(
            &argv(&["sleep", "10"]),
            Duration::from_millis(200),
            "password command",
        )
        .await
        .unwrap_err();
        assert!(matches!(e, PasswordError::Timeout { .. }), "{e}");
        let e = run_password_command(&argv(&["true"]), Duration::from_secs(5), "password command")
            .await
            .unwrap_err();
        assert!(matches!(e, PasswordError::Empty { .. }), "{e}");
    }
}
