//! A loop device over an image file, for the tests of block-device grants: attached with
//! `losetup`, detached when dropped, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An attached loop device.
pub(crate) struct LoopDevice {
    /// The device, `/dev/loopN`.
    pub(crate) path: PathBuf,
}

impl LoopDevice {
    /// Attaches `image` read-only; the reason when this machine cannot (not root, no
    /// `losetup`, no free loop device), for the test to say it was skipped.
    pub(crate) fn attach(image: &Path) -> Result<LoopDevice, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        let output = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(LoopDevice { path: path.into() })
    }

    /// The device's file name, `loopN`.
    pub(crate) fn name(&self) -> &str {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 name")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}
