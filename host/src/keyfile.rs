//! Secret key files: the node key (`<data-dir>/node.key`) and the author key that signs
//! plugin packages (`~/.config/apiary/author.key`) are kept the same way.
//!
//! A key file is the 32 secret bytes of an ed25519 key and nothing else, readable by its
//! owner only (mode 0600 on Unix). It is never written in place: the bytes go to a
//! temporary file beside it (created 0600, so the secret is never readable by others, not
//! even for a moment), which is flushed to disk and then linked to the final name. A crash
//! leaves either no key or the whole key, never a short file; and linking (rather than
//! renaming) fails if the name exists, so two processes creating the same key at once
//! cannot overwrite each other: the second one is told, and reads the first one's key.
//! Replacing a key on purpose (`apiary keys new --force`) renames over it instead.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes in a key file: an ed25519 secret.
pub const SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path} is not a key file (expected {SECRET_BYTES} bytes, found {found})")]
    Corrupt { path: PathBuf, found: usize },
    #[error("{path} exists already")]
    Exists { path: PathBuf },
}

fn io_error(path: &Path, e: std::io::Error) -> KeyFileError {
    KeyFileError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The secret in `path`, or `None` if there is no such file.
pub fn read(path: &Path) -> Result<Option<[u8; SECRET_BYTES]>, KeyFileError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let found = bytes.len();
            let secret = bytes.try_into().map_err(|_| KeyFileError::Corrupt {
                path: path.to_path_buf(),
                found,
            })?;
            Ok(Some(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Write `secret` to `path` as described in the module docs. Without `replace`, an
/// existing file is left alone and [`KeyFileError::Exists`] returned.
pub fn write(path: &Path, secret: &[u8; SECRET_BYTES], replace: bool) -> Result<(), KeyFileError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| io_error(&parent, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let temp = parent.join(format!(".{name}.tmp-{}", random_suffix()));
    let result = write_temp(&temp, secret).and_then(|()| publish(&temp, path, replace));
    // Linked or renamed, or failed: the temporary name is not needed any more.
    let _ = std::fs::remove_file(&temp);
    result?;
    sync_dir(&parent);
    Ok(())
}

fn write_temp(temp: &Path, secret: &[u8; SECRET_BYTES]) -> Result<(), KeyFileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(temp).map_err(|e| io_error(temp, e))?;
    file.write_all(secret)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(temp, e))
}

fn publish(temp: &Path, path: &Path, replace: bool) -> Result<(), KeyFileError> {
    if replace {
        return std::fs::rename(temp, path).map_err(|e| io_error(path, e));
    }
    match std::fs::hard_link(temp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Flush a folder's entries (the new name) to disk; best effort, as not every platform
/// can open a folder for that.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// 16 random hex digits, for names of temporary files and folders.
pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_written_whole_private_and_never_overwritten_by_accident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/author.key");
        assert!(read(&path).unwrap().is_none());
        write(&path, &[7; 32], false).unwrap();
        assert_eq!(read(&path).unwrap(), Some([7; 32]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let e = write(&path, &[8; 32], false).unwrap_err();
        assert!(matches!(e, KeyFileError::Exists { .. }), "{e}");
        assert_eq!(read(&path).unwrap(), Some([7; 32]), "left alone");
        write(&path, &[8; 32], true).unwrap();
        assert_eq!(read(&path).unwrap(), Some([8; 32]));
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("author.key")]);
        std::fs::write(&path, b"short").unwrap();
        let e = read(&path).unwrap_err();
        assert!(matches!(e, KeyFileError::Corrupt { found: 5, .. }), "{e}");
    }
}
