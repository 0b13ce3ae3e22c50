//! The Windows startup entry: a value under the user's
//! `HKCU\Software\Microsoft\Windows\CurrentVersion\Run` key, which Windows runs at logon in
//! the user's session, where toasts can show. (A Task Scheduler logon task could also
//! restart the agent after a failure, but `schtasks /sc onlogon` makes a task for any user's
//! logon, which takes an administrator; the Run value needs nothing, shows in Task Manager's
//! "Startup apps" where it can be switched off, and is removed by deleting one value.)
//!
//! Its data is one command line, which the program started splits into arguments by the
//! Microsoft C runtime's rules (those of `CommandLineToArgvW`): the program in double
//! quotes, each argument quoted when it needs to be, backslashes doubled only where they
//! come before a double quote.

use super::{Cmd, ServiceError, utf8};
use std::path::Path;

/// The value's name under the Run key.
pub const VALUE: &str = "popsync";
/// The Run key.
pub const RUN_KEY: &str = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";
/// The AppUserModelID that toasts carry, so that Windows attributes them to popsync.
pub const APP_ID: &str = "popsync";
/// Where an unpackaged program registers its AppUserModelID and the name toasts show.
pub const APP_ID_KEY: &str = r"HKCU\Software\Classes\AppUserModelId\popsync";

/// The Run value's data: `"exe" daemon --config config`.
pub fn run_command_line(exe: &Path, config: &Path) -> Result<String, ServiceError> {
    let program = utf8(exe)?;
    if program.contains('"') || program.chars().any(char::is_control) {
        return Err(ServiceError::Unrepresentable {
            path: exe.to_owned(),
            why: "a program's path on a Windows command line cannot hold a double quote or a control character",
        });
    }
    let config_text = utf8(config)?;
    if config_text.chars().any(char::is_control) {
        return Err(ServiceError::Unrepresentable {
            path: config.to_owned(),
            why: "it holds a control character",
        });
    }
    Ok(command_line(program, &["daemon", "--config", config_text]))
}

/// A command line that splits into `program` and `args` by the Microsoft C runtime's rules.
/// `program` must not hold a double quote (Windows paths cannot).
pub fn command_line(program: &str, args: &[&str]) -> String {
    // The program name is read up to the closing quote, with no escapes at all.
    let mut line = format!("\"{program}\"");
    for arg in args {
        line.push(' ');
        line.push_str(&quote_arg(arg));
    }
    line
}

/// One argument, quoted when it is empty or holds a space, a tab or a double quote.
pub fn quote_arg(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\u{b}', '"']) {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                // Each backslash before a quote is doubled, and the quote escaped.
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
                continue;
            }
            _ => {}
        }
        if c != '\\' {
            out.extend(std::iter::repeat_n('\\', backslashes));
            backslashes = 0;
            out.push(c);
        }
    }
    // Backslashes before the closing quote are doubled too.
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
    out
}

/// A `.reg` file that sets the Run value (for regedit, or `reg import`).
pub fn reg_file(command_line: &str) -> String {
    let escaped = command_line.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "Windows Registry Editor Version 5.00\r\n\
         \r\n\
         ; popsync's agent, started when you log on (what `popsync service install` sets up)\r\n\
         [HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run]\r\n\
         \"{VALUE}\"=\"{escaped}\"\r\n\
         \r\n\
         ; the name Windows shows on popsync's notifications\r\n\
         [HKEY_CURRENT_USER\\Software\\Classes\\AppUserModelId\\{APP_ID}]\r\n\
         \"DisplayName\"=\"popsync\"\r\n"
    )
}

/// The commands that register the app id and the Run value.
pub fn install_commands(command_line: &str) -> Vec<Cmd> {
    vec![
        reg(&[
            "add",
            APP_ID_KEY,
            "/v",
            "DisplayName",
            "/t",
            "REG_SZ",
            "/d",
            "popsync",
            "/f",
        ]),
        reg(&[
            "add",
            RUN_KEY,
            "/v",
            VALUE,
            "/t",
            "REG_SZ",
            "/d",
            command_line,
            "/f",
        ]),
    ]
}

pub fn reg(args: &[&str]) -> Cmd {
    Cmd::new("reg", args.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_by_the_c_runtime_rules() {
        assert_eq!(quote_arg("daemon"), "daemon");
        assert_eq!(quote_arg(r"C:\a\b"), r"C:\a\b");
        assert_eq!(quote_arg(r"C:\a b\c"), r#""C:\a b\c""#);
        assert_eq!(quote_arg(r"C:\a b\"), r#""C:\a b\\""#);
        assert_eq!(quote_arg(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(quote_arg(r#"a\"b"#), r#""a\\\"b""#);
        assert_eq!(quote_arg(""), r#""""#);
    }

    #[test]
    fn the_run_value_quotes_the_program_always() {
        let line = run_command_line(
            Path::new(r"C:\Program Files\popsync\popsync.exe"),
            Path::new(r"C:\Users\Me\AppData\Roaming\popsync\config\config.toml"),
        )
        .unwrap();
        assert_eq!(
            line,
            r#""C:\Program Files\popsync\popsync.exe" daemon --config C:\Users\Me\AppData\Roaming\popsync\config\config.toml"#
        );
    }
}
