//! A small tmpfs mounted over a test directory (a full disk, a read-only file system). Needs
//! root, as in CI; without it the constructor says so loudly and returns None.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Mount(PathBuf);

impl Mount {
    pub fn tmpfs(at: &Path, size: &str) -> Option<Self> {
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
            .ok()?;
        out.status.success().then(|| Self(at.to_owned())).or_else(|| {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); run the tests as root to check disk-full handling",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        })
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
