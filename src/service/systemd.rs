//! The systemd user unit: `packaging/systemd/popsync.service` with the real path of popsync
//! and of the configuration on its `ExecStart=` line, so the installed unit and the one in
//! `packaging/` never drift apart.

use std::path::{Path, PathBuf};

use super::{Cmd, ServiceError, utf8};

/// The unit's name.
pub const UNIT: &str = "popsync.service";

/// The unit in `packaging/`, the template of the one `popsync service install` writes.
pub const TEMPLATE: &str = include_str!("../../packaging/systemd/popsync.service");

/// Where a user's units go: `$XDG_CONFIG_HOME/systemd/user/popsync.service`.
pub fn unit_path(config_home: &Path) -> PathBuf {
    config_home.join("systemd").join("user").join(UNIT)
}

/// The unit that runs `exe daemon --config config`.
pub fn unit(exe: &Path, config: &Path) -> Result<String, ServiceError> {
    let exec = [
        exec_program(exe)?,
        "daemon".to_owned(),
        "--config".to_owned(),
        exec_arg(config)?,
    ]
    .join(" ");
    let mut out = format!(
        "# popsync's agent as a systemd user service, written by `popsync service install`\n\
         # (popsync {}); `popsync service uninstall` stops it and removes this file, and\n\
         # `popsync service install` again rewrites it. The template, with the reasons for each\n\
         # setting, is packaging/systemd/popsync.service in popsync's source.\n\
         # Logs: journalctl --user -u popsync     Poll now: popsync poll     Reload: systemctl --user reload popsync\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut replaced = false;
    // The template's own header (the lines before [Unit]) tells how to install it by hand.
    let body = TEMPLATE
        .find("\n[Unit]")
        .map_or(TEMPLATE, |at| &TEMPLATE[at + 1..]);
    for line in body.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str("ExecStart=");
            out.push_str(&exec);
            replaced = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(
        replaced,
        "packaging/systemd/popsync.service has no ExecStart="
    );
    Ok(out)
}

/// The program of a command line in a unit file: in double quotes when it holds white
/// space, `%` doubled (systemd expands specifiers everywhere; a `$` in the program's path is
/// taken as it is). systemd refuses quotes, backslashes and control characters there.
pub fn exec_program(path: &Path) -> Result<String, ServiceError> {
    let word = utf8(path)?;
    if word
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(ServiceError::Unrepresentable {
            path: path.to_owned(),
            why: "systemd does not run a program whose path holds a quote, a backslash or a control character; install popsync elsewhere",
        });
    }
    let escaped = word.replace('%', "%%");
    if escaped.contains(char::is_whitespace) || escaped.contains(';') {
        Ok(format!("\"{escaped}\""))
    } else {
        Ok(escaped)
    }
}

/// An argument on a command line in a unit file: `%` and `$` doubled (systemd expands
/// specifiers and variables), in double quotes with `\` and `"` escaped when it holds
/// anything that would split or unescape it.
pub fn exec_arg(path: &Path) -> Result<String, ServiceError> {
    let word = utf8(path)?;
    if word.chars().any(char::is_control) {
        return Err(ServiceError::Unrepresentable {
            path: path.to_owned(),
            why: "it holds a control character, which a unit file cannot",
        });
    }
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && !escaped
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        Ok(escaped)
    } else {
        Ok(format!(
            "\"{}\"",
            escaped.replace('\\', "\\\\").replace('"', "\\\"")
        ))
    }
}

/// The commands that make systemd take up a unit just written: `changed` when it replaced a
/// different one, which the running agent must be restarted for.
pub fn install_commands(changed: bool) -> Vec<Cmd> {
    let mut cmds = vec![systemctl(&["daemon-reload"])];
    if changed {
        // Restarts it only if it runs; `enable --now` then starts it if it does not.
        cmds.push(systemctl(&["try-restart", UNIT]));
    }
    cmds.push(systemctl(&["enable", "--now", UNIT]));
    cmds
}

pub fn systemctl(args: &[&str]) -> Cmd {
    Cmd::new(
        "systemctl",
        std::iter::once("--user").chain(args.iter().copied()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_the_template_with_the_real_command() {
        let unit = unit(
            Path::new("/opt/pop sync/bin/popsync"),
            Path::new("/home/me/.config/popsync/config.toml"),
        )
        .unwrap();
        assert!(unit.contains(
            "\nExecStart=\"/opt/pop sync/bin/popsync\" daemon --config /home/me/.config/popsync/config.toml\n"
        ));
        assert!(unit.starts_with("# popsync's agent as a systemd user service, written by"));
        let template_body = &TEMPLATE[TEMPLATE.find("[Unit]").unwrap()..];
        let unit_body = &unit[unit.find("[Unit]").unwrap()..];
        let differing: Vec<_> = template_body
            .lines()
            .zip(unit_body.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(differing.len(), 1, "{differing:?}");
        assert!(differing[0].0.starts_with("ExecStart=%h/"));
        assert_eq!(template_body.lines().count(), unit_body.lines().count());
    }

    #[test]
    fn arguments_escape_specifiers_variables_quotes_and_backslashes() {
        let arg = |s: &str| exec_arg(Path::new(s)).unwrap();
        assert_eq!(arg("/usr/bin/popsync"), "/usr/bin/popsync");
        assert_eq!(arg("/a b"), "\"/a b\"");
        assert_eq!(arg("/100%/$HOME"), "/100%%/$$HOME");
        assert_eq!(arg(r#"/a"b\c"#), r#""/a\"b\\c""#);
        assert_eq!(arg("/a;b"), "\"/a;b\"");
        assert!(exec_arg(Path::new("/a\nb")).is_err());
    }

    #[test]
    fn the_program_escapes_specifiers_only_and_refuses_what_systemd_refuses() {
        let program = |s: &str| exec_program(Path::new(s));
        assert_eq!(
            program("/a b/%n $X/popsync").unwrap(),
            "\"/a b/%%n $X/popsync\""
        );
        assert_eq!(program("/usr/bin/popsync").unwrap(), "/usr/bin/popsync");
        for bad in ["/a'b/popsync", "/a\"b/popsync", "/a\\b/popsync", "/a\tb"] {
            assert!(program(bad).is_err(), "{bad}");
        }
    }
}
