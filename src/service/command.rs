//! The one place where popsync runs the service manager's tools (`systemctl`, `launchctl`,
//! `reg`, `taskkill`): looked up on `PATH` like any command, so the tests can put recording
//! stand-ins first on `PATH` and the real code path still runs.

use std::fmt;
use std::process::{Command, Output, Stdio};

/// A command to run: a program looked up on `PATH`, and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: program.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// Runs it to the end, its output captured.
    pub fn run(&self) -> std::io::Result<Output> {
        Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .output()
    }

    /// Starts it and does not wait: the agent, on Windows, in a console window of its own
    /// (as it starts at logon), which stops it cleanly when closed.
    pub fn spawn_detached(&self) -> std::io::Result<u32> {
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null());
        #[cfg(windows)]
        {
            use std::os::windows::process::CommandExt;
            const CREATE_NEW_CONSOLE: u32 = 0x0000_0010;
            const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
            command.creation_flags(CREATE_NEW_CONSOLE | CREATE_NEW_PROCESS_GROUP);
        }
        #[cfg(not(windows))]
        {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        command.spawn().map(|child| child.id())
    }

    /// The command as a line to type into a shell (POSIX quoting on Unix, Windows quoting on
    /// Windows), for messages and `--dry-run`.
    pub fn display(&self) -> CmdDisplay<'_> {
        CmdDisplay(self)
    }
}

/// See [`Cmd::display`].
#[derive(Debug)]
pub struct CmdDisplay<'a>(&'a Cmd);

impl fmt::Display for CmdDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = std::iter::once(&self.0.program).chain(&self.0.args);
        for (i, word) in words.enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if cfg!(windows) {
                f.write_str(&super::windows::quote_arg(word))?;
            } else {
                f.write_str(&shell_quote(word))?;
            }
        }
        Ok(())
    }
}

/// `word` as a POSIX shell reads it back: bare when that is safe, else in single quotes.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_leaves_plain_words_bare_and_quotes_the_rest() {
        assert_eq!(shell_quote("gui/501/popsync"), "gui/501/popsync");
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }
}
