//! A small tmpfs mounted over a test directory (a full disk, a read-only file system). Needs
//! root: the tests that use it are marked ignored with that reason, so a run without root
//! counts them as skipped, and scripts/test runs them when it runs as root (as CI does).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Mount(PathBuf);

impl Mount {
    pub fn tmpfs(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("mount(8) is needed");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs here ({}); this test needs root",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self(at.to_owned())
    }

    pub fn resize(&self, size: &str) {
        self.remount(&format!("size={size}"));
    }

    /// Remounts with other options, e.g. "ro" or "rw".
    pub fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
