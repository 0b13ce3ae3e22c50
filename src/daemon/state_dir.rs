//! Where the agent keeps its state under systemd.

use std::path::PathBuf;

use tracing::info;

use crate::config::Config;

/// Under systemd, `$STATE_DIRECTORY` (the first of its directories) takes the place of the
/// platform's default state directory: it is used when neither `$POPSYNC_STATE_DIR`
/// (`state_override`) nor the file's `state-dir` chose one.
pub(super) fn with_systemd_state_dir(
    config: Config,
    state_override: Option<&std::path::Path>,
) -> Config {
    let default = crate::config::default_state_dir();
    match systemd_state_dir(
        std::env::var_os("STATE_DIRECTORY").as_deref(),
        state_override.is_some(),
        &config.state_dir,
        default.as_deref(),
    ) {
        Some(dir) => {
            info!(
                "state directory {} (systemd's $STATE_DIRECTORY); popsync commands run outside the service look in {} unless state-dir says otherwise",
                dir.display(),
                config.state_dir.display()
            );
            Config {
                state_dir: dir,
                ..config
            }
        }
        None => config,
    }
}

/// The directory `$STATE_DIRECTORY` (`var`) names, if it is to be used instead of
/// `state_dir`: only when nothing but the platform's default (`default`) chose that.
fn systemd_state_dir(
    var: Option<&std::ffi::OsStr>,
    overridden: bool,
    state_dir: &std::path::Path,
    default: Option<&std::path::Path>,
) -> Option<PathBuf> {
    if overridden || default != Some(state_dir) {
        return None;
    }
    // Several directories are separated by colons; popsync uses the first.
    let text = var?.to_str()?;
    let first = PathBuf::from(text.split(':').next()?);
    first.is_absolute().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::path::Path;

    #[test]
    fn state_directory_replaces_only_the_default_state_dir() {
        let default = Path::new("/home/me/.local/state/popsync");
        let var = Some(OsStr::new(
            "/home/me/.config/popsync:/home/me/.config/other",
        ));
        assert_eq!(
            systemd_state_dir(var, false, default, Some(default)),
            Some(PathBuf::from("/home/me/.config/popsync"))
        );
        // state-dir in the file, or $POPSYNC_STATE_DIR, win.
        assert_eq!(
            systemd_state_dir(var, false, Path::new("/srv/popsync"), Some(default)),
            None
        );
        assert_eq!(systemd_state_dir(var, true, default, Some(default)), None);
        // Not under systemd, or nonsense.
        assert_eq!(systemd_state_dir(None, false, default, Some(default)), None);
        assert_eq!(
            systemd_state_dir(Some(OsStr::new("relative")), false, default, Some(default)),
            None
        );
    }
}
