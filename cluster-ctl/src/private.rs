//! Files and directories that hold secrets or the control socket, checked before use.
//!
//! The local-attacker class of HA-daemon CVEs (keepalived's predictable files in /tmp, world-
//! readable keys, control sockets anyone can reach) comes down to trusting a path another user
//! can write or read. A secret file must be private to its owner, and its owner must be root or
//! the daemon's own user; a private directory must be a real directory (not a symlink) owned by
//! the daemon's user, and is made 0700.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
};

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A secret (cluster key, SMTP password): mode without group/other bits, owned by root or us.
pub fn check_secret_file(path: &Path, what: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the {what} {} is accessible by group or others (mode {:04o}); run chmod 600 on it",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    if meta.uid() != 0 && meta.uid() != euid() {
        return Err(format!(
            "the {what} {} belongs to uid {}, neither root nor this daemon's user (uid {}): \
             that user could replace it",
            path.display(),
            meta.uid(),
            euid()
        ));
    }
    Ok(())
}

/// Creates (when missing) a directory only this daemon's user may enter, and refuses one that is
/// a symlink or belongs to someone else (who could swap what is inside).
pub fn private_dir(path: &Path, what: &str) -> Result<(), String> {
    std::fs::create_dir_all(path)
        .map_err(|e| format!("cannot create the {what} {}: {e}", path.display()))?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "the {what} {} is not a directory (a symlink?); refusing it",
            path.display()
        ));
    }
    if meta.uid() != euid() {
        return Err(format!(
            "the {what} {} belongs to uid {}, not to this daemon's user (uid {}); refusing it",
            path.display(),
            meta.uid(),
            euid()
        ));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make the {what} {} private: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chown(path: &Path, uid: u32) -> bool {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), None).is_ok()
    }

    #[test]
    fn a_secret_readable_by_others_is_refused_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "00").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = check_secret_file(&key, "cluster key").unwrap_err();
        assert!(
            error.contains("mode 0644") && error.contains("chmod 600"),
            "{error}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_secret_file(&key, "cluster key").unwrap();
    }

    #[test]
    fn a_secret_or_directory_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "00").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let other = dir.path().join("run");
        std::fs::create_dir(&other).unwrap();
        // Giving files away needs root; without it there is nothing to test here.
        if euid() != 0 || !chown(&key, 65534) || !chown(&other, 65534) {
            return;
        }
        // Root owning the key is fine, but root running the daemon cannot be tricked by
        // another user's file.
        let error = check_secret_file(&key, "cluster key").unwrap_err();
        assert!(error.contains("uid 65534"), "{error}");
        let error = private_dir(&other, "run directory").unwrap_err();
        assert!(error.contains("uid 65534"), "{error}");
    }

    #[test]
    fn a_symlinked_directory_is_refused_and_a_new_one_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = private_dir(&link, "outbox").unwrap_err();
        assert!(error.contains("not a directory"), "{error}");
        let fresh = dir.path().join("a/b");
        private_dir(&fresh, "outbox").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
