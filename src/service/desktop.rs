//! The desktop entry: `packaging/desktop/popsync.desktop` with the real path of popsync and
//! of the configuration on its `Exec=` line. Installed beside the systemd unit, it is what
//! the `desktop-entry=popsync` hint of every notification names: notification servers show
//! popsync's name and icon, and desktops list it in their notification settings.

use std::path::{Path, PathBuf};

use super::{ServiceError, utf8};

/// The entry's file name.
pub const FILE: &str = "popsync.desktop";

/// The entry in `packaging/`.
pub const TEMPLATE: &str = include_str!("../../packaging/desktop/popsync.desktop");

/// Where a user's desktop entries go: `$XDG_DATA_HOME/applications/popsync.desktop`.
pub fn entry_path(data_home: &Path) -> PathBuf {
    data_home.join("applications").join(FILE)
}

/// The entry whose `Exec=` runs `exe daemon --config config`.
pub fn entry(exe: &Path, config: &Path) -> Result<String, ServiceError> {
    let exec = [
        exec_arg(exe)?,
        "daemon".to_owned(),
        "--config".to_owned(),
        exec_arg(config)?,
    ]
    .join(" ");
    let mut out = format!(
        "# popsync's desktop entry, written by `popsync service install` (popsync {}); \n\
         # `popsync service uninstall` removes it. It gives popsync's notifications a name.\n",
        env!("CARGO_PKG_VERSION")
    );
    let body = TEMPLATE
        .find("[Desktop Entry]")
        .map_or(TEMPLATE, |at| &TEMPLATE[at..]);
    let mut replaced = false;
    for line in body.lines() {
        if line.starts_with("Exec=") {
            out.push_str("Exec=");
            out.push_str(&exec);
            replaced = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(replaced, "packaging/desktop/popsync.desktop has no Exec=");
    Ok(out)
}

/// One argument of an `Exec=` line (Desktop Entry Specification, "The Exec key"): in
/// double quotes when it holds a reserved character, with `"`, `` ` ``, `$` and `\`
/// escaped by a backslash inside them; then, as the value is a string, every backslash
/// doubled; `%` doubled everywhere (field codes). Control characters cannot be written.
fn exec_arg(path: &Path) -> Result<String, ServiceError> {
    let text = utf8(path)?;
    if text.chars().any(char::is_control) {
        return Err(ServiceError::Unrepresentable {
            path: path.to_owned(),
            why: "a desktop entry's Exec= cannot hold control characters",
        });
    }
    const RESERVED: &[char] = &[
        ' ', '\t', '"', '\'', '\\', '>', '<', '~', '|', '&', ';', '$', '*', '?', '#', '(', ')',
        '`', '=',
    ];
    let quoted = if text.contains(RESERVED) {
        let mut q = String::from("\"");
        for c in text.chars() {
            if matches!(c, '"' | '`' | '$' | '\\') {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    } else {
        text.to_owned()
    };
    Ok(quoted.replace('\\', "\\\\").replace('%', "%%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_is_the_template_with_the_real_command() {
        let e = entry(
            Path::new("/home/me/.cargo/bin/popsync"),
            Path::new("/home/me/My Mail/100% popsync.toml"),
        )
        .unwrap();
        assert!(e.contains("\n[Desktop Entry]\n"), "{e}");
        assert!(
            e.contains(
                "\nExec=/home/me/.cargo/bin/popsync daemon --config \"/home/me/My Mail/100%% popsync.toml\"\n"
            ),
            "{e}"
        );
        assert!(e.contains("\nNoDisplay=true\n") && e.contains("\nName=popsync\n"));
        assert_eq!(e.matches("Exec=").count(), 1);
    }

    #[test]
    fn arguments_are_quoted_and_escaped_twice() {
        assert_eq!(exec_arg(Path::new("/a/b")).unwrap(), "/a/b");
        assert_eq!(
            exec_arg(Path::new("/a/$b \"c\\")).unwrap(),
            r#""/a/\\$b \\"c\\\\""#
        );
        assert!(exec_arg(Path::new("/a\nb")).is_err());
    }
}
