//! Files and directories that hold secrets or the control socket, checked before use.
//!
//! The local-attacker class of HA-daemon CVEs (keepalived's predictable files in /tmp, world-
//! readable keys, control sockets anyone can reach) comes down to trusting a path another user
//! can write or read. A secret file must be private to its owner, and its owner must be root or
//! the daemon's own user; a private directory must be a real directory (not a symlink) owned by
//! the daemon's user, and is made 0700.

use std::{
    io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// Why a secret file or a private directory was refused; `what` names it for the operator
/// ("key file", "mail outbox").
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("cannot {action} the {what} {path}: {source}")]
    Io {
        action: &'static str,
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the {what} {path} is accessible by group or others (mode {mode:04o}); run chmod 600 on it"
    )]
    OpenToOthers {
        what: String,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "the {what} {path} belongs to uid {owner}, neither root nor this daemon's user (uid \
         {euid}): that user could replace it"
    )]
    SecretOwner {
        what: String,
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("the {what} {path} is not a directory (a symlink?); refusing it")]
    NotADirectory { what: String, path: PathBuf },
    #[error(
        "the {what} {path} belongs to uid {owner}, not to this daemon's user (uid {euid}); \
         refusing it"
    )]
    DirectoryOwner {
        what: String,
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
}

fn io_error(
    action: &'static str,
    what: &str,
    path: &Path,
) -> impl FnOnce(io::Error) -> PrivateError {
    let (what, path) = (what.to_owned(), path.to_owned());
    move |source| PrivateError::Io {
        action,
        what,
        path,
        source,
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A secret (cluster key, SMTP password): mode without group/other bits, owned by root or us.
pub fn check_secret_file(path: &Path, what: &str) -> Result<(), PrivateError> {
    let meta = std::fs::metadata(path).map_err(io_error("read", what, path))?;
    if meta.mode() & 0o077 != 0 {
        return Err(PrivateError::OpenToOthers {
            what: what.to_owned(),
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.uid() != 0 && meta.uid() != euid() {
        return Err(PrivateError::SecretOwner {
            what: what.to_owned(),
            path: path.to_owned(),
            owner: meta.uid(),
            euid: euid(),
        });
    }
    Ok(())
}

/// Creates (when missing) a directory only this daemon's user may enter, and refuses one that is
/// a symlink or belongs to someone else (who could swap what is inside).
pub fn private_dir(path: &Path, what: &str) -> Result<(), PrivateError> {
    std::fs::create_dir_all(path).map_err(io_error("create", what, path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io_error("read", what, path))?;
    if !meta.is_dir() {
        return Err(PrivateError::NotADirectory {
            what: what.to_owned(),
            path: path.to_owned(),
        });
    }
    if meta.uid() != euid() {
        return Err(PrivateError::DirectoryOwner {
            what: what.to_owned(),
            path: path.to_owned(),
            owner: meta.uid(),
            euid: euid(),
        });
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io_error(
        "make private",
        what,
        path,
    ))
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
        let error = check_secret_file(&key, "cluster key")
            .unwrap_err()
            .to_string();
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
        let error = check_secret_file(&key, "cluster key")
            .unwrap_err()
            .to_string();
        assert!(error.contains("uid 65534"), "{error}");
        let error = private_dir(&other, "run directory")
            .unwrap_err()
            .to_string();
        assert!(error.contains("uid 65534"), "{error}");
    }

    #[test]
    fn a_symlinked_directory_is_refused_and_a_new_one_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = private_dir(&link, "outbox").unwrap_err().to_string();
        assert!(error.contains("not a directory"), "{error}");
        let fresh = dir.path().join("a/b");
        private_dir(&fresh, "outbox").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
