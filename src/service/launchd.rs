//! The launchd agent (macOS): a property list in `~/Library/LaunchAgents/`, loaded into the
//! user's GUI domain (`gui/UID`) so that it runs in the login session, where notifications
//! can show. launchd expands neither `~` nor variables, so every path in it is absolute.

use std::path::{Path, PathBuf};

use super::{Cmd, ServiceError, utf8};

/// The job's label, also the plist's file name.
pub const LABEL: &str = "popsync";
/// Seconds launchd waits before starting the agent again after it exits.
pub const THROTTLE_SECONDS: u32 = 30;

/// `~/Library/LaunchAgents/popsync.plist`.
pub fn plist_path(home: &Path) -> PathBuf {
    home.join("Library")
        .join("LaunchAgents")
        .join(format!("{LABEL}.plist"))
}

/// `~/Library/Logs/popsync/`, where the agent's output goes.
pub fn log_dir(home: &Path) -> PathBuf {
    home.join("Library").join("Logs").join("popsync")
}

/// The property list that runs `exe daemon --config config`: started at login and when
/// loaded, started again (after [`THROTTLE_SECONDS`]) if it exits with a failure, as a
/// background process of the Aqua (GUI) session, its output appended to
/// `~/Library/Logs/popsync/popsync.log`.
pub fn plist(exe: &Path, config: &Path, home: &Path) -> Result<String, ServiceError> {
    let log = log_dir(home).join("popsync.log");
    let mut arguments = String::new();
    for word in [
        xml_text(exe)?,
        "daemon".to_owned(),
        "--config".to_owned(),
        xml_text(config)?,
    ] {
        arguments.push_str(&format!("\t\t<string>{word}</string>\n"));
    }
    let log = xml_text(&log)?;
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- popsync's agent for launchd, as `popsync service install` writes it;
     `popsync service uninstall` unloads it and removes this file. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{LABEL}</string>
	<key>ProgramArguments</key>
	<array>
{arguments}	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>{THROTTLE_SECONDS}</integer>
	<key>ProcessType</key>
	<string>Background</string>
	<key>LimitLoadToSessionType</key>
	<string>Aqua</string>
	<key>StandardOutPath</key>
	<string>{log}</string>
	<key>StandardErrorPath</key>
	<string>{log}</string>
</dict>
</plist>
"#
    ))
}

/// `gui/UID`, the user's login-session domain.
pub fn domain(uid: u32) -> String {
    format!("gui/{uid}")
}

/// `gui/UID/popsync`, the job in it.
pub fn service_target(uid: u32) -> String {
    format!("gui/{uid}/{LABEL}")
}

pub fn launchctl(args: &[&str]) -> Cmd {
    Cmd::new("launchctl", args.iter().copied())
}

/// `path` as XML character data.
fn xml_text(path: &Path) -> Result<String, ServiceError> {
    let text = utf8(path)?;
    if text.chars().any(char::is_control) {
        return Err(ServiceError::Unrepresentable {
            path: path.to_owned(),
            why: "it holds a control character, which a property list cannot",
        });
    }
    Ok(text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_escaped_as_xml() {
        let p = plist(
            Path::new("/Users/a&b/bin/<popsync>"),
            Path::new("/Users/a&b/Library/Application Support/popsync/config.toml"),
            Path::new("/Users/a&b"),
        )
        .unwrap();
        assert!(p.contains("<string>/Users/a&amp;b/bin/&lt;popsync&gt;</string>"));
        assert!(p.contains("<string>/Users/a&amp;b/Library/Logs/popsync/popsync.log</string>"));
        assert!(plist(Path::new("/a\u{1}"), Path::new("/c"), Path::new("/h")).is_err());
    }
}
